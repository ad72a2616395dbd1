"""The fused cell steps' backward C kernels, one per cell, for the frame in
`rnnlm.ops.recurrent_c` (`rnnlm.ops.recurrent.kernel_source` assembles them)."""

from __future__ import annotations

from rnnlm.ops.recurrent_c import ROWS, Kernel


def _rnn_backward(cell: str) -> Kernel:
    slope = "(a[j] > 0 ? ($T)1 : ($T)0)" if cell == "rnn-relu" else "(1 - a[j] * a[j])"
    body = f"""
    if (rnnlm_output(d_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(dt_out, 2, H, B, type, given, n_in + 1)
        || rnnlm_output(gh_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(gm_out, 1, B, 0, type, given, n_in + 1)) goto done;
    $T* d_pre = ($T*)PyArray_DATA(*d_out);
    $T* ghp_all = ($T*)PyArray_DATA(*gh_out);
    $T* gm = ($T*)PyArray_DATA(*gm_out);
    {ROWS} {{
        const $T* gh = RNNLM_ROW($T, 0, r);
        const $T* hp = RNNLM_ROW($T, 1, r);
        const $T* a = RNNLM_ROW($T, 2, r);
        $T* d = d_pre + r * H;
        $T* ghp = ghp_all + r * H;
        const $T mr = m[r];
        $T sum = 0;
        #pragma omp simd reduction(+:sum)
        for (npy_intp j = 0; j < H; ++j) {{
            d[j] = mr * gh[j] * {slope};
            ghp[j] = (1 - mr) * gh[j];
            sum += gh[j] * (a[j] - hp[j]);
        }}
        gm[r] = sum;
    }}
    if (B > 0) {{
        $T* t = ($T*)(scratch = malloc(B * H * sizeof($T)));
        if (!t) {{ PyErr_NoMemory(); goto done; }}
        /* dh_prev += d_pre W' */
        rnnlm_product_$sfx(b_, h_, h_, d_pre, h_, RNNLM_ROW($T, 3, 0), ld[3], t);
        rnnlm_add_transposed_$sfx(B, H, ghp_all, H, NULL, 0, t);
    }}
    rnnlm_transpose_$sfx(B, H, d_pre, H, ($T*)PyArray_DATA(*dt_out));"""
    return Kernel(
        arguments=("gh_arg", "m_arg", "h_arg", "acts_arg", "W_arg"),
        outputs=("d_out", "dt_out", "gh_out", "gm_out"),
        matrices=("gh_arg", "h_arg", "acts_arg", "W_arg"),
        shapes=(
            "gh_arg 0 B",
            "gh_arg 1 H",
            "m_arg 0 B",
            "acts_arg 0 B",
            "acts_arg 1 H",
            "W_arg 0 H",
            "W_arg 1 H",
        ),
        body=body,
    )


def _lstm_backward() -> Kernel:
    body = f"""
    if (rnnlm_output(d_out, 2, B, 4 * H, type, given, n_in + 1)
        || rnnlm_output(dt_out, 2, 4 * H, B, type, given, n_in + 1)
        || rnnlm_output(gh_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(gc_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(gm_out, 1, B, 0, type, given, n_in + 1)) goto done;
    $T* d_pre = ($T*)PyArray_DATA(*d_out);
    $T* ghp_all = ($T*)PyArray_DATA(*gh_out);
    $T* gcp_all = ($T*)PyArray_DATA(*gc_out);
    $T* gm = ($T*)PyArray_DATA(*gm_out);
    {ROWS} {{
        const $T* gh = RNNLM_ROW($T, 0, r);
        const $T* gc = RNNLM_ROW($T, 1, r);
        const $T* hp = RNNLM_ROW($T, 2, r);
        const $T* cp = RNNLM_ROW($T, 3, r);
        const $T* s = RNNLM_ROW($T, 4, r);
        $T* d = d_pre + r * 4 * H;
        $T* ghp = ghp_all + r * H;
        $T* gcp = gcp_all + r * H;
        const $T mr = m[r];
        $T sum = 0;
        #pragma omp simd reduction(+:sum)
        for (npy_intp j = 0; j < H; ++j) {{
            const $T i = s[j], f = s[H + j], o = s[2 * H + j], g = s[3 * H + j];
            const $T tc = s[4 * H + j];
            const $T ghr = mr * gh[j];  /* what reaches the unmasked h and c */
            const $T gcr = mr * gc[j] + ghr * o * (1 - tc * tc);
            $T a;
            a = i; d[j] = gcr * g * $slope;
            a = f; d[H + j] = gcr * cp[j] * $slope;
            a = o; d[2 * H + j] = ghr * tc * $slope;
            d[3 * H + j] = gcr * i * (1 - g * g);
            gcp[j] = (1 - mr) * gc[j] + gcr * f;
            ghp[j] = (1 - mr) * gh[j];
            sum += gh[j] * (o * tc - hp[j]) + gc[j] * (f * cp[j] + i * g - cp[j]);
        }}
        gm[r] = sum;
    }}
    if (B > 0) {{
        $T* t = ($T*)(scratch = malloc(B * H * sizeof($T)));
        if (!t) {{ PyErr_NoMemory(); goto done; }}
        /* dh_prev += d_pre W' */
        rnnlm_product_$sfx(b_, h_, 4 * h_, d_pre, 4 * h_, RNNLM_ROW($T, 5, 0), ld[5], t);
        rnnlm_add_transposed_$sfx(B, H, ghp_all, H, NULL, 0, t);
    }}
    rnnlm_transpose_$sfx(B, 4 * H, d_pre, 4 * H, ($T*)PyArray_DATA(*dt_out));"""
    return Kernel(
        arguments=("gh_arg", "gc_arg", "m_arg", "h_arg", "c_arg", "acts_arg", "W_arg"),
        outputs=("d_out", "dt_out", "gh_out", "gc_out", "gm_out"),
        matrices=("gh_arg", "gc_arg", "h_arg", "c_arg", "acts_arg", "W_arg"),
        shapes=(
            "gh_arg 0 B",
            "gh_arg 1 H",
            "gc_arg 0 B",
            "gc_arg 1 H",
            "m_arg 0 B",
            "c_arg 0 B",
            "c_arg 1 H",
            "acts_arg 0 B",
            "acts_arg 1 5*H",
            "W_arg 0 H",
            "W_arg 1 4*H",
        ),
        body=body,
    )


def _gru_backward() -> Kernel:
    body = f"""
    if (rnnlm_output(d_out, 2, B, 3 * H, type, given, n_in + 1)
        || rnnlm_output(dt_out, 2, 3 * H, B, type, given, n_in + 1)
        || rnnlm_output(gh_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(gm_out, 1, B, 0, type, given, n_in + 1)) goto done;
    $T* d_pre = ($T*)PyArray_DATA(*d_out);
    $T* ghp_all = ($T*)PyArray_DATA(*gh_out);
    $T* gm = ($T*)PyArray_DATA(*gm_out);
    /* scratch: the product t, then the gradient reaching r*h */
    $T* t = ($T*)(scratch = malloc((2 * B * H > 0 ? 2 * B * H : 1) * sizeof($T)));
    if (!t) {{ PyErr_NoMemory(); goto done; }}
    $T* g_rh = t + B * H;
    {ROWS} {{
        const $T* gh = RNNLM_ROW($T, 0, r);
        const $T* hp = RNNLM_ROW($T, 1, r);
        const $T* s = RNNLM_ROW($T, 2, r);
        $T* d = d_pre + r * 3 * H;
        $T* ghp = ghp_all + r * H;
        const $T mr = m[r];
        $T sum = 0;
        #pragma omp simd reduction(+:sum)
        for (npy_intp j = 0; j < H; ++j) {{
            const $T z = s[j], cand = s[2 * H + j];
            const $T ghr = mr * gh[j];
            $T a = z;
            d[2 * H + j] = ghr * (1 - z) * (1 - cand * cand);
            d[j] = ghr * (hp[j] - cand) * $slope;
            ghp[j] = (1 - mr) * gh[j] + ghr * z;
            sum += gh[j] * ((1 - z) * cand + z * hp[j] - hp[j]);
        }}
        gm[r] = sum;
    }}
    if (B > 0) {{
        /* g_rh = d_cand W_c' */
        memset(g_rh, 0, B * H * sizeof($T));
        rnnlm_product_$sfx(b_, h_, h_, d_pre + 2 * H, 3 * h_, RNNLM_ROW($T, 4, 0), ld[4], t);
        rnnlm_add_transposed_$sfx(B, H, g_rh, H, NULL, 0, t);
    }}
    {ROWS} {{
        const $T* hp = RNNLM_ROW($T, 1, r);
        const $T* s = RNNLM_ROW($T, 2, r);
        const $T* grh = g_rh + r * H;
        $T* d = d_pre + r * 3 * H;
        $T* ghp = ghp_all + r * H;
        #pragma omp simd
        for (npy_intp j = 0; j < H; ++j) {{
            const $T a = s[H + j];
            d[H + j] = grh[j] * hp[j] * $slope;
            ghp[j] += grh[j] * a;
        }}
    }}
    if (B > 0) {{
        /* dh_prev += d_zr W_zr' */
        rnnlm_product_$sfx(b_, h_, 2 * h_, d_pre, 3 * h_, RNNLM_ROW($T, 3, 0), ld[3], t);
        rnnlm_add_transposed_$sfx(B, H, ghp_all, H, NULL, 0, t);
    }}
    rnnlm_transpose_$sfx(B, 3 * H, d_pre, 3 * H, ($T*)PyArray_DATA(*dt_out));"""
    return Kernel(
        arguments=("gh_arg", "m_arg", "h_arg", "acts_arg", "Wzr_arg", "Wc_arg"),
        outputs=("d_out", "dt_out", "gh_out", "gm_out"),
        matrices=("gh_arg", "h_arg", "acts_arg", "Wzr_arg", "Wc_arg"),
        shapes=(
            "gh_arg 0 B",
            "gh_arg 1 H",
            "m_arg 0 B",
            "acts_arg 0 B",
            "acts_arg 1 4*H",
            "Wzr_arg 0 H",
            "Wzr_arg 1 2*H",
            "Wc_arg 0 H",
            "Wc_arg 1 H",
        ),
        body=body,
    )
