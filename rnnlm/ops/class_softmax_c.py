"""The C of the class-factored softmax ops (`rnnlm.ops.class_softmax`): the class map's check
and grouping, the three kernels per dtype, the base op that carries them, and the snippets
that the ops' `c_code` is made of."""

from __future__ import annotations

import re

from rnnlm.ops.common import SIMD_MATH, OpenMPOp, math_functions

# The C side: one function per dtype, shared by every apply node (see `_support_code`).
_SUPPORT = """
/* An output array of these dims, C-contiguous: the one from the last call when it fits (its
   pages are mapped already: a fresh large buffer costs a page fault per 4 KB). 0: no memory. */
static int rnnlm_output(PyArrayObject** out, int nd, const npy_intp* dims, int typenum,
        int zero) {
    int fits = *out && PyArray_NDIM(*out) == nd && PyArray_TYPE(*out) == typenum
               && PyArray_IS_C_CONTIGUOUS(*out);
    for (int d = 0; fits && d < nd; ++d) fits = PyArray_DIMS(*out)[d] == dims[d];
    if (!fits) {
        Py_XDECREF(*out);
        *out = (PyArrayObject*)PyArray_EMPTY(nd, (npy_intp*)dims, typenum, 0);
        if (!*out) return 0;
    }
    if (zero) memset(PyArray_DATA(*out), 0, PyArray_NBYTES(*out));
    return 1;
}

/* A class map from a model file is checked once per call: O(V), nothing next to the rest. */
static const char* rnnlm_class_check(npy_intp v, npy_intp nc, const npy_int32* members,
        const npy_int32* starts) {
    if (nc < 1 || starts[0] != 0 || starts[nc] != v) return "the class map is inconsistent";
    for (npy_intp c = 0; c < nc; ++c)
        if (starts[c + 1] <= starts[c]) return "the class map is inconsistent";
    for (npy_intp j = 0; j < v; ++j)
        if (members[j] < 0 || members[j] >= v) return "the class map is inconsistent";
    return NULL;
}

/* Rows grouped by their target's class: rows[group[c] .. group[c + 1]) are those in class c. */
static const char* rnnlm_class_groups(npy_intp n, npy_intp v, npy_intp nc, const npy_int32* y,
        const npy_int32* word_class, const npy_int32* members, const npy_int32* starts,
        npy_intp* offsets, npy_intp* group, npy_intp* rows) {
    const char* err = rnnlm_class_check(v, nc, members, starts);
    if (err) return err;
    for (npy_intp c = 0; c <= nc; ++c) group[c] = 0;
    offsets[0] = 0;
    for (npy_intp i = 0; i < n; ++i) {
        if (y[i] < 0 || y[i] >= v) return "class_nll: targets out of range";
        npy_int32 c = word_class[y[i]];
        if (c < 0 || c >= nc) return "the class map is inconsistent";
        offsets[i + 1] = offsets[i] + (starts[c + 1] - starts[c]);
        ++group[c + 1];
    }
    for (npy_intp c = 0; c < nc; ++c) group[c + 1] += group[c];
    npy_intp* next = (npy_intp*)malloc((nc + 1) * sizeof(npy_intp));
    if (!next) return "class_nll: out of memory";
    for (npy_intp c = 0; c <= nc; ++c) next[c] = group[c];
    for (npy_intp i = 0; i < n; ++i) rows[next[word_class[y[i]]]++] = i;
    free(next);
    return NULL;
}
"""

_TEMPLATE = """
/* Forward: in-class probabilities of every row (flat, row i at offsets[i]) and the NLL. */
static npy_intp rnnlm_class_nll_T(npy_intp n, npy_intp k, npy_intp nc, const T* h, const T* W,
        const T* b, const npy_int32* y, const npy_int32* word_class, const npy_int32* members,
        const npy_int32* starts, const npy_intp* offsets, const npy_intp* group,
        const npy_intp* rows, T* nll, T* probs) {
    npy_intp missing = 0;
    /* Classes over threads; within a class, each word's row of W meets all the class's rows. */
    #pragma omp parallel for schedule(dynamic, 1)
    for (npy_intp c = 0; c < nc; ++c) {
        const npy_int32* words = members + starts[c];
        npy_intp size = starts[c + 1] - starts[c];
        for (npy_intp j = 0; j < size; ++j) {
            const T* w = W + (npy_intp)words[j] * k;
            for (npy_intp r = group[c]; r < group[c + 1]; ++r) {
                npy_intp i = rows[r];
                const T* hi = h + i * k;
                T z = b[words[j]];
                #pragma omp simd reduction(+:z)
                for (npy_intp d = 0; d < k; ++d) z += hi[d] * w[d];
                probs[offsets[i] + j] = z;
            }
        }
    }
    #pragma omp parallel for schedule(static) reduction(+:missing)
    for (npy_intp i = 0; i < n; ++i) {
        npy_int32 c = word_class[y[i]];
        const npy_int32* words = members + starts[c];
        npy_intp size = starts[c + 1] - starts[c];
        T* p = probs + offsets[i];
        T top = -INFINITY, picked = 0;
        int found = 0;
        for (npy_intp j = 0; j < size; ++j) {
            top = p[j] > top ? p[j] : top;
            if (words[j] == y[i]) { picked = p[j]; found = 1; }
        }
        if (!found) { ++missing; continue; }
        T sum = 0;
        #pragma omp simd reduction(+:sum)
        for (npy_intp j = 0; j < size; ++j) {
            T e = EXP(p[j] - top);
            p[j] = e;
            sum += e;
        }
        T scale = 1 / sum;
        #pragma omp simd
        for (npy_intp j = 0; j < size; ++j) p[j] *= scale;
        nll[i] = LOG(sum) + top - picked;
    }
    return missing;
}

/* Backward: d_ij = g_i (p_ij - [w_j = y_i]); dh_i = sum_j d_ij W[w_j]; dW[w_j] += d_ij h_i;
   db[w_j] += d_ij. A class's words belong to it alone, so threads never share a row of dW. */
static void rnnlm_class_nll_grad_T(npy_intp n, npy_intp k, npy_intp nc, const T* g,
        const T* probs, const T* h, const T* W, const npy_int32* y, const npy_int32* members,
        const npy_int32* starts, const npy_intp* offsets, const npy_intp* group,
        const npy_intp* rows, T* dh, T* dW, T* db) {
    #pragma omp parallel for schedule(dynamic, 1)
    for (npy_intp c = 0; c < nc; ++c) {
        if (group[c] == group[c + 1]) continue;
        const npy_int32* words = members + starts[c];
        npy_intp size = starts[c + 1] - starts[c];
        for (npy_intp r = group[c]; r < group[c + 1]; ++r) {
            T* dhi = dh + rows[r] * k;
            for (npy_intp d = 0; d < k; ++d) dhi[d] = 0;
        }
        for (npy_intp j = 0; j < size; ++j) {
            const T* w = W + (npy_intp)words[j] * k;
            T* dw = dW + (npy_intp)words[j] * k;
            T dbj = 0;
            for (npy_intp r = group[c]; r < group[c + 1]; ++r) {
                npy_intp i = rows[r];
                T dij = g[i] * (probs[offsets[i] + j] - (words[j] == y[i] ? 1 : 0));
                const T* hi = h + i * k;
                T* dhi = dh + i * k;
                #pragma omp simd
                for (npy_intp d = 0; d < k; ++d) {
                    dhi[d] += dij * w[d];
                    dw[d] += dij * hi[d];
                }
                dbj += dij;
            }
            db[words[j]] += dbj;
        }
    }
}

/* Every word's in-class log-softmax from full logits (N, V), rows over threads. */
static void rnnlm_class_log_softmax_T(npy_intp n, npy_intp v, npy_intp nc, const T* z,
        const npy_int32* members, const npy_int32* starts, T* out) {
    #pragma omp parallel for schedule(static)
    for (npy_intp i = 0; i < n; ++i) {
        const T* zi = z + i * v;
        T* oi = out + i * v;
        for (npy_intp c = 0; c < nc; ++c) {
            const npy_int32* words = members + starts[c];
            npy_intp size = starts[c + 1] - starts[c];
            T top = zi[words[0]], sum = 0;
            for (npy_intp j = 1; j < size; ++j) top = zi[words[j]] > top ? zi[words[j]] : top;
            for (npy_intp j = 0; j < size; ++j) sum += EXP(zi[words[j]] - top);
            T lse = top + LOG(sum);
            for (npy_intp j = 0; j < size; ++j) oi[words[j]] = zi[words[j]] - lse;
        }
    }
}
"""


def _support_code() -> str:
    code = [SIMD_MATH, _SUPPORT]
    for dtype in ("float32", "float64"):
        exp, log = math_functions(dtype)
        t = f"npy_{dtype}"
        code.append(
            re.sub(r"\bT\b", t, _TEMPLATE.replace("_T(", f"_{dtype}("))
            .replace("EXP(", f"{exp}(")
            .replace("LOG(", f"{log}(")
        )
    return "\n".join(code)


class _ClassOp(OpenMPOp):
    def c_headers(self, **kwargs):
        return ["<math.h>", "<stdlib.h>", "<string.h>"]

    def c_support_code(self, **kwargs):
        return _support_code()

    def c_code_cache_version(self):
        return (2,)


# C snippets shared by the ops' c_code: contiguous views of the inputs, released at the end.
def _contiguous(names: list[str]) -> tuple[str, str, str]:
    declare = "".join(f"PyArrayObject* c_{i} = PyArray_GETCONTIGUOUS({n});\n" for i, n in
                      enumerate(names))  # fmt: skip
    ok = " && ".join(f"c_{i}" for i in range(len(names)))
    release = "".join(f"Py_XDECREF(c_{i});\n" for i in range(len(names)))
    return declare, ok, release


def _data(i: int, t: str) -> str:
    return f"(const {t}*)PyArray_DATA(c_{i})"


def _alloc(out: str, ndim: int, dims: str, typenum: str, zero: bool = False) -> str:
    return f"""
        if (!rnnlm_output(&{out}, {ndim}, {dims}, {typenum}, {int(zero)})) err = "out of memory";
    """
