"""The C of `rnnlm.ops.product`: a matrix product in AVX-512, per dtype.

out (M, N) = alpha * x (M, K) y (K, N) [+ beta * z]. The tile is the classic outer-product
form: up to MR rows of out by two vectors of columns, held in registers while k runs; each
step broadcasts one x[i, k] per row and multiplies it into two vectors of y's row k. The
columns are cut into panels of two vectors, spread over OpenMP threads; k is cut into chunks
so that a panel's chunk of y stays in L1 while every row block of x passes over it. That
chunk is copied into a contiguous buffer (packed) unless y's rows are contiguous and x has
few rows; y transposed (a gradient's x y', the fused cells' w a') is always copied. Column
tails are masked loads and stores, so any N works.
"""

from __future__ import annotations

from string import Template

from rnnlm.ops.recurrent_c import HELPERS

# Per dtype: the C type, the vector type and its lanes, the intrinsics' suffix, the mask type.
VECTORS = {
    "float32": dict(T="npy_float32", V="__m512", L="16", s="ps", M="__mmask16", sfx="f32"),
    "float64": dict(T="npy_float64", V="__m512d", L="8", s="pd", M="__mmask8", sfx="f64"),
}
MR = 12  # rows of a tile: 2 * MR accumulators + 2 vectors of y + 1 broadcast <= 32 registers
KC = 384  # k chunk: a float32 panel chunk (KC x 32) is 48 KB
# Panels go to OpenMP threads only from this many multiply-adds (M N K) on: below it the
# parallel region costs more than it saves.
PARALLEL_WORK = 1 << 23
# The C's version, for the compiled-module caches of every op that includes it: bump it with
# any change to the C below.
VERSION = (16, MR, KC, PARALLEL_WORK)

_TYPED = Template(r"""
#ifndef RNNLM_PRODUCT_$sfx
#define RNNLM_PRODUCT_$sfx
#define RNNLM_NR_$sfx (2 * $L)

/* out[r, 0:2L] (masked by m0, m1) = alpha * sum_k a[r*ars + k*acs] b[k*ldb + 0:2L]
   (+ out[r, ...] when `add`), for r < mr_: one tile, accumulators in registers. */
static inline __attribute__((always_inline)) void rnnlm_tile_$sfx(
        const int mr_, npy_intp K, const $T* a, npy_intp ars, npy_intp acs,
        const $T* b, npy_intp ldb, $T* out, npy_intp ldo, $M m0, $M m1, $T alpha, int add) {
    $V c0[$MR], c1[$MR];
    #pragma GCC unroll $MR
    for (int r = 0; r < mr_; ++r) {
        c0[r] = _mm512_setzero_$s();
        c1[r] = _mm512_setzero_$s();
    }
    for (npy_intp k = 0; k < K; ++k) {
        const $V b0 = _mm512_maskz_loadu_$s(m0, b + k * ldb);
        const $V b1 = _mm512_maskz_loadu_$s(m1, b + k * ldb + $L);
        const $T* ak = a + k * acs;
        #pragma GCC unroll $MR
        for (int r = 0; r < mr_; ++r) {
            const $V ar = _mm512_set1_$s(ak[r * ars]);
            c0[r] = _mm512_fmadd_$s(ar, b0, c0[r]);
            c1[r] = _mm512_fmadd_$s(ar, b1, c1[r]);
        }
    }
    const $V scale = _mm512_set1_$s(alpha);
    #pragma GCC unroll $MR
    for (int r = 0; r < mr_; ++r) {
        $T* o = out + r * ldo;
        $V v0 = _mm512_mul_$s(c0[r], scale), v1 = _mm512_mul_$s(c1[r], scale);
        if (add) {
            v0 = _mm512_add_$s(v0, _mm512_maskz_loadu_$s(m0, o));
            v1 = _mm512_add_$s(v1, _mm512_maskz_loadu_$s(m1, o + $L));
        }
        _mm512_mask_storeu_$s(o, m0, v0);
        _mm512_mask_storeu_$s(o + $L, m1, v1);
    }
}

/* The tile for mr_ rows, mr_ a compile-time constant in each case (registers, unrolling). */
static void rnnlm_rows_$sfx(int mr_, npy_intp K, const $T* a, npy_intp ars, npy_intp acs,
                            const $T* b, npy_intp ldb, $T* out, npy_intp ldo, $M m0, $M m1,
                            $T alpha, int add) {
    switch (mr_) {
#define RNNLM_TILE_CASE(n) \
    case n: rnnlm_tile_$sfx(n, K, a, ars, acs, b, ldb, out, ldo, m0, m1, alpha, add); break;
    RNNLM_TILE_CASE(1) RNNLM_TILE_CASE(2) RNNLM_TILE_CASE(3) RNNLM_TILE_CASE(4)
    RNNLM_TILE_CASE(5) RNNLM_TILE_CASE(6) RNNLM_TILE_CASE(7) RNNLM_TILE_CASE(8)
    RNNLM_TILE_CASE(9) RNNLM_TILE_CASE(10) RNNLM_TILE_CASE(11) RNNLM_TILE_CASE(12)
#undef RNNLM_TILE_CASE
    }
}

/* The lanes of a vector that the first n of its columns fill (n may be <= 0 or > L). */
static inline $M rnnlm_mask_$sfx(npy_intp n) {
    return n >= $L ? ($M)~0 : n <= 0 ? ($M)0 : ($M)((1ull << n) - 1);
}

/* dst[k * NR + c] = y[k, c] for k < kc, c < w (zeros for w <= c < NR): a panel chunk of y
   in the layout the tile reads, walking y along whichever of its strides is 1. */
static void rnnlm_pack_$sfx(npy_intp kc, npy_intp w, const $T* y, npy_intp ys0, npy_intp ys1,
                            $T* dst) {
    const npy_intp NR = RNNLM_NR_$sfx;
    if (ys1 == 1) {  /* rows of y: two (masked) vectors each */
        const $M m0 = rnnlm_mask_$sfx(w), m1 = rnnlm_mask_$sfx(w - $L);
        for (npy_intp k = 0; k < kc; ++k) {
            _mm512_storeu_$s(dst + k * NR, _mm512_maskz_loadu_$s(m0, y + k * ys0));
            _mm512_storeu_$s(dst + k * NR + $L, _mm512_maskz_loadu_$s(m1, y + k * ys0 + $L));
        }
    } else if (ys0 == 1) {  /* y = a' (the fused cells' product): a's rows are contiguous */
        for (npy_intp c = 0; c < NR; ++c)
            for (npy_intp k = 0; k < kc; ++k) dst[k * NR + c] = c < w ? y[k + c * ys1] : ($T)0;
    } else {
        for (npy_intp k = 0; k < kc; ++k)
            for (npy_intp c = 0; c < NR; ++c)
                dst[k * NR + c] = c < w ? y[k * ys0 + c * ys1] : ($T)0;
    }
}

/* out (M, N, rows ldo apart, C order) = alpha * x y (+ out when `add`), where x[i, k] is at
   x + i*xs0 + k*xs1 and y[k, j] at y + k*ys0 + j*ys1 (strides in elements, any sign). */
static int rnnlm_gemm_$sfx(npy_intp M, npy_intp N, npy_intp K, $T alpha,
                           const $T* x, npy_intp xs0, npy_intp xs1,
                           const $T* y, npy_intp ys0, npy_intp ys1,
                           $T* out, npy_intp ldo, int add) {
    const npy_intp NR = RNNLM_NR_$sfx, panels = (N + NR - 1) / NR;
    const npy_intp blocks = (M + $MR - 1) / $MR;
    /* y is read in place only when its rows are contiguous and few rows of x read each
       chunk; else copied (packed): a copied chunk is contiguous, in L1, one TLB page or two,
       where y's own rows may be a page apart (the output layer's are 40 KB): 1.15x on a
       2000^2 product, 1 thread. */
    const int direct = ys1 == 1 && M < 4 * $MR;
    const int parallel = (double)M * N * K >= $parallel;
    /* Work items are panels, or (panel, row group) pairs when there are too few panels to
       keep every thread busy (a small batch's transposed product has one). */
    const npy_intp want = parallel ? 4 * (npy_intp)omp_get_max_threads() : 1;
    npy_intp groups = panels >= want ? 1 : (want + panels - 1) / panels;
    if (groups > blocks) groups = blocks;
    const npy_intp rows = ((blocks + groups - 1) / groups) * $MR;
    /* A y that is copied is copied once: whole, up front, when row groups share its panels;
       else a chunk at a time by the item that reads it. */
    $T* whole = NULL;
    const npy_intp chunks = (K + $KC - 1) / $KC;
    if (!direct && groups > 1 && !(whole = ($T*)rnnlm_aligned(sizeof($T) * K * panels * NR)))
        return -1;
    int failed = 0;
    #pragma omp parallel if (parallel) reduction(|:failed)
    {
        if (whole) {  /* every thread packs some chunks; the loop's end waits for all */
            #pragma omp for schedule(static)
            for (npy_intp q = 0; q < panels * chunks; ++q) {
                const npy_intp p = q / chunks, j = p * NR, w = N - j < NR ? N - j : NR;
                const npy_intp k0 = (q % chunks) * $KC, kc = K - k0 < $KC ? K - k0 : $KC;
                rnnlm_pack_$sfx(kc, w, y + k0 * ys0 + j * ys1, ys0, ys1, whole + (p * K + k0) * NR);
            }
        }
        $T* chunk = direct || whole ? NULL : ($T*)rnnlm_aligned(sizeof($T) * $KC * NR);
        if (!direct && !whole && !chunk) failed = 1;
        #pragma omp for schedule(static)
        for (npy_intp item = 0; item < panels * groups; ++item) {
            if (failed) continue;
            const npy_intp p = item / groups, j = p * NR, w = N - j < NR ? N - j : NR;
            const npy_intp i0 = (item % groups) * rows, i1 = i0 + rows < M ? i0 + rows : M;
            const $M m0 = rnnlm_mask_$sfx(w), m1 = rnnlm_mask_$sfx(w - $L);
            for (npy_intp k0 = 0; k0 < K; k0 += $KC) {
                const npy_intp kc = K - k0 < $KC ? K - k0 : $KC;
                const $T* b = y + k0 * ys0 + j * ys1;
                npy_intp ldb = ys0;
                if (whole) {
                    b = whole + (p * K + k0) * NR;
                    ldb = NR;
                } else if (!direct) {
                    rnnlm_pack_$sfx(kc, w, b, ys0, ys1, chunk);
                    b = chunk;
                    ldb = NR;
                }
                const int more = add || k0 > 0;
                for (npy_intp i = i0; i < i1; i += $MR) {
                    const int mr_ = i1 - i < $MR ? (int)(i1 - i) : $MR;
                    rnnlm_rows_$sfx(mr_, kc, x + i * xs0 + k0 * xs1, xs0, xs1, b, ldb,
                                    out + i * ldo + j, ldo, m0, m1, alpha, more);
                }
            }
        }
        free(chunk);
    }
    free(whole);
    return failed ? -1 : 0;
}

/* *out = alpha x y (+ beta z when z is not NULL), (M, N) C-contiguous, on a cache line, the
   kept *out or its memory when they fit (rnnlm_output). 0, or -1 with a Python error set. */
static int rnnlm_product_op_$sfx(PyArrayObject* x, PyArrayObject* y, PyArrayObject* z,
                              $T alpha, $T beta, PyArrayObject** out) {
    int status = -1;
    PyArrayObject *xr = rnnlm_readable(x), *yr = rnnlm_readable(y);
    const npy_intp M = PyArray_DIMS(x)[0], K = PyArray_DIMS(x)[1], N = PyArray_DIMS(y)[1];
    npy_intp xs0 = 0, xs1 = 0, ys0 = 0, ys1 = 0;
    PyArrayObject* read[3] = {x, y, z};
    $T* p = NULL;
    if (!xr || !yr) goto done;
    if (PyArray_DIMS(y)[0] != K
        || (z && (PyArray_DIMS(z)[0] != M || PyArray_DIMS(z)[1] != N))) {
        PyErr_SetString(PyExc_ValueError, "product: shapes do not match");
        goto done;
    }
    rnnlm_elements(xr, 0, &xs0); rnnlm_elements(xr, 1, &xs1);
    rnnlm_elements(yr, 0, &ys0); rnnlm_elements(yr, 1, &ys1);
    if (rnnlm_output(out, 2, M, N, PyArray_TYPE(x), read, z ? 3 : 2)) goto done;
    p = ($T*)PyArray_DATA(*out);
    if (z && beta != 0) {  /* BLAS's rule: with beta 0, z is not read (it may hold NaN) */
        const npy_intp zs0 = PyArray_STRIDES(z)[0], zs1 = PyArray_STRIDES(z)[1];
        const char* zp = PyArray_BYTES(z);
        for (npy_intp i = 0; i < M; ++i)
            for (npy_intp j = 0; j < N; ++j)
                p[i * N + j] = beta * *(const $T*)(zp + i * zs0 + j * zs1);
    } else if ((z || K == 0) && M * N > 0) {
        memset(p, 0, sizeof($T) * M * N);
    }
    /* BLAS's rule again: with alpha 0, x and y are not read (an inf there gives no NaN) */
    if (M > 0 && N > 0 && K > 0 && alpha != 0
        && rnnlm_gemm_$sfx(M, N, K, alpha, ($T*)PyArray_DATA(xr), xs0, xs1,
                           ($T*)PyArray_DATA(yr), ys0, ys1, p, N, z != NULL)) {
        PyErr_NoMemory();
        goto done;
    }
    status = 0;
done:
    Py_XDECREF(xr);
    Py_XDECREF(yr);
    return status;
}
#endif
""")

_SHARED = r"""
#ifndef RNNLM_PRODUCT_SHARED
#define RNNLM_PRODUCT_SHARED
#include <stdlib.h>
#include <string.h>
#include <omp.h>

/* A stride of `a` along dimension d in elements, or 0 when it is not a whole number of them
   (the caller then copies). */
static int rnnlm_elements(PyArrayObject* a, int d, npy_intp* s) {
    npy_intp bytes = PyArray_STRIDES(a)[d], size = PyArray_ITEMSIZE(a);
    if (bytes % size) return 0;
    *s = bytes / size;
    return 1;
}

/* `a` itself (a new reference) when its strides are whole elements and it is aligned, else
   a C-contiguous copy. */
static PyArrayObject* rnnlm_readable(PyArrayObject* a) {
    npy_intp s;
    if (PyArray_ISALIGNED(a) && rnnlm_elements(a, 0, &s) && rnnlm_elements(a, 1, &s)) {
        Py_INCREF(a);
        return a;
    }
    return (PyArrayObject*)PyArray_NewCopy(a, NPY_CORDER);
}
#endif
"""


def c_support(dtype: str) -> str:
    """The C every product of `dtype` needs: the helpers (`rnnlm_overlap` among them), then
    the typed kernels, `rnnlm_gemm_<sfx>` and the op's `rnnlm_product_op_<sfx>` (sfx f32 or f64)."""
    typed = _TYPED.substitute(VECTORS[dtype], MR=MR, KC=KC, parallel=PARALLEL_WORK)
    # Where the compiler does not target AVX-512 there is no kernel: the rewrite does not put
    # `Product` in a graph there, and the fused cells call BLAS (`RNNLM_HAS_PRODUCT` unset).
    return (
        HELPERS
        + _SHARED
        + "#ifdef __AVX512F__\n#include <immintrin.h>\n#define RNNLM_HAS_PRODUCT 1\n"
        + typed
        + "#endif\n"
    )


def c_call(
    dtype: str, x: str, y: str, z: str | None, alpha: str, beta: str, out: str, fail: str
) -> str:
    """C that sets `out` to alpha x y (+ beta z), C-contiguous, or fails with a Python error.
    `alpha` and `beta` are C expressions; `z` is None for a plain product."""
    sfx = VECTORS[dtype]["sfx"]
    z_arg = "NULL" if z is None else z
    return f"if (rnnlm_product_op_{sfx}({x}, {y}, {z_arg}, {alpha}, {beta}, &{out})) {{ {fail}; }}"
