"""The fused cell steps' forward C kernels, one per cell, for the frame in
`rnnlm.ops.recurrent_c` (`rnnlm.ops.recurrent.kernel_source` assembles them)."""

from __future__ import annotations

from rnnlm.ops.recurrent_c import ROWS, Kernel


def _rnn_forward(cell: str) -> Kernel:
    activation = "(v > 0 ? v : ($T)0)" if cell == "rnn-relu" else "$tanh(v)"
    body = f"""
    if (rnnlm_output(h_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(acts_out, 2, B, H, type, given, n_in + 1)) goto done;
    $T* acts = ($T*)PyArray_DATA(*acts_out);
    $T* ho_all = ($T*)PyArray_DATA(*h_out);
    if (B > 0) {{
        $T* t = ($T*)(scratch = malloc(B * H * sizeof($T)));
        if (!t) {{ PyErr_NoMemory(); goto done; }}
        /* pre = x + h W */
        rnnlm_product_$sfx(b_, h_, h_, RNNLM_ROW($T, 1, 0), ld[1], RNNLM_ROW($T, 2, 0), ld[2], t);
        rnnlm_add_transposed_$sfx(B, H, acts, H, RNNLM_ROW($T, 0, 0), ld[0], t);
    }}
    {ROWS} {{
        $T* a = acts + r * H;
        const $T* hp = RNNLM_ROW($T, 1, r);
        $T* ho = ho_all + r * H;
        const $T mr = m[r];
        #pragma omp simd
        for (npy_intp j = 0; j < H; ++j) {{
            const $T v = a[j];
            const $T y = {activation};
            a[j] = y;
            ho[j] = mr * y + (1 - mr) * hp[j];
        }}
    }}"""
    return Kernel(
        arguments=("x_arg", "m_arg", "h_arg", "Wt_arg"),
        outputs=("h_out", "acts_out"),
        matrices=("x_arg", "h_arg", "Wt_arg"),
        shapes=("x_arg 0 B", "x_arg 1 H", "m_arg 0 B", "Wt_arg 0 H", "Wt_arg 1 H"),
        body=body,
    )


def _lstm_forward() -> Kernel:
    body = f"""
    if (rnnlm_output(h_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(c_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(acts_out, 2, B, 5 * H, type, given, n_in + 1)) goto done;
    $T* acts = ($T*)PyArray_DATA(*acts_out);
    $T* ho_all = ($T*)PyArray_DATA(*h_out);
    $T* co_all = ($T*)PyArray_DATA(*c_out);
    if (B > 0) {{
        $T* t = ($T*)(scratch = malloc(B * 4 * H * sizeof($T)));
        if (!t) {{ PyErr_NoMemory(); goto done; }}
        /* pre = x + h W, where the gates go: acts[:, :4H] */
        rnnlm_product_$sfx(b_, 4 * h_, h_, RNNLM_ROW($T, 1, 0), ld[1], RNNLM_ROW($T, 3, 0),
                           ld[3], t);
        rnnlm_add_transposed_$sfx(B, 4 * H, acts, 5 * H, RNNLM_ROW($T, 0, 0), ld[0], t);
    }}
    {ROWS} {{
        $T* a = acts + r * 5 * H;
        const $T* hp = RNNLM_ROW($T, 1, r);
        const $T* cp = RNNLM_ROW($T, 2, r);
        $T* ho = ho_all + r * H;
        $T* co = co_all + r * H;
        const $T mr = m[r];
        #pragma omp simd
        for (npy_intp j = 0; j < H; ++j) {{
            $T v;
            v = a[j]; const $T i = $gate;
            v = a[H + j]; const $T f = $gate;
            v = a[2 * H + j]; const $T o = $gate;
            const $T g = $tanh(a[3 * H + j]);
            const $T c = f * cp[j] + i * g;  /* c = f c_prev + i g, h = o tanh(c) */
            const $T tc = $tanh(c);
            a[j] = i; a[H + j] = f; a[2 * H + j] = o; a[3 * H + j] = g; a[4 * H + j] = tc;
            ho[j] = mr * (o * tc) + (1 - mr) * hp[j];
            co[j] = mr * c + (1 - mr) * cp[j];
        }}
    }}"""
    return Kernel(
        arguments=("x_arg", "m_arg", "h_arg", "c_arg", "Wt_arg"),
        outputs=("h_out", "c_out", "acts_out"),
        matrices=("x_arg", "h_arg", "c_arg", "Wt_arg"),
        shapes=(
            "x_arg 0 B",
            "x_arg 1 4*H",
            "m_arg 0 B",
            "c_arg 0 B",
            "c_arg 1 H",
            "Wt_arg 0 4*H",
            "Wt_arg 1 H",
        ),
        body=body,
    )


def _gru_forward() -> Kernel:
    body = f"""
    if (rnnlm_output(h_out, 2, B, H, type, given, n_in + 1)
        || rnnlm_output(acts_out, 2, B, 4 * H, type, given, n_in + 1)) goto done;
    $T* acts = ($T*)PyArray_DATA(*acts_out);
    $T* ho_all = ($T*)PyArray_DATA(*h_out);
    $T* t = NULL;
    if (B > 0) {{
        t = ($T*)(scratch = malloc(B * 2 * H * sizeof($T)));
        if (!t) {{ PyErr_NoMemory(); goto done; }}
        /* [z r] pre-activations: x + h W_zr */
        rnnlm_product_$sfx(b_, 2 * h_, h_, RNNLM_ROW($T, 1, 0), ld[1], RNNLM_ROW($T, 2, 0),
                           ld[2], t);
        rnnlm_add_transposed_$sfx(B, 2 * H, acts, 4 * H, RNNLM_ROW($T, 0, 0), ld[0], t);
    }}
    {ROWS} {{
        $T* a = acts + r * 4 * H;
        const $T* hp = RNNLM_ROW($T, 1, r);
        #pragma omp simd
        for (npy_intp j = 0; j < H; ++j) {{
            $T v;
            v = a[j]; const $T z = $gate;
            v = a[H + j]; const $T rg = $gate;
            a[j] = z; a[H + j] = rg; a[3 * H + j] = rg * hp[j];
        }}
    }}
    if (B > 0) {{
        /* candidate pre-activation: x + (r*h) W_c */
        rnnlm_product_$sfx(b_, h_, h_, acts + 3 * H, 4 * h_, RNNLM_ROW($T, 3, 0), ld[3], t);
        rnnlm_add_transposed_$sfx(B, H, acts + 2 * H, 4 * H, RNNLM_ROW($T, 0, 0) + 2 * H,
                                  ld[0], t);
    }}
    {ROWS} {{
        $T* a = acts + r * 4 * H;
        const $T* hp = RNNLM_ROW($T, 1, r);
        $T* ho = ho_all + r * H;
        const $T mr = m[r];
        #pragma omp simd
        for (npy_intp j = 0; j < H; ++j) {{
            const $T z = a[j];
            const $T cand = $tanh(a[2 * H + j]);
            a[2 * H + j] = cand;
            ho[j] = mr * ((1 - z) * cand + z * hp[j]) + (1 - mr) * hp[j];
        }}
    }}"""
    return Kernel(
        arguments=("x_arg", "m_arg", "h_arg", "Wzrt_arg", "Wct_arg"),
        outputs=("h_out", "acts_out"),
        matrices=("x_arg", "h_arg", "Wzrt_arg", "Wct_arg"),
        shapes=(
            "x_arg 0 B",
            "x_arg 1 3*H",
            "m_arg 0 B",
            "Wzrt_arg 0 2*H",
            "Wzrt_arg 1 H",
            "Wct_arg 0 H",
            "Wct_arg 1 H",
        ),
        body=body,
    )
