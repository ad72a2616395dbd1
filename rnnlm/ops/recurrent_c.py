"""The C that every fused cell kernel shares (`rnnlm.ops.recurrent`): the helpers, the BLAS
product and transposes per dtype, the gate expressions, and the frame a kernel's body goes in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

# Rows of the element-wise passes go to OpenMP threads only from this many units (B * H) on:
# below it a parallel region costs more than it saves, and wakes threads that compete with
# OpenBLAS's own for the same cores.
PARALLEL_UNITS = 32768


# -- C: what every kernel shares ---------------------------------------------------------------


@cache
def _has_simd_tanh() -> bool:
    """glibc >= 2.35 has vector tanhf/tanh in libmvec; older ones only exp."""
    name = ctypes.util.find_library("mvec")
    try:
        return name is not None and hasattr(ctypes.CDLL(name), "_ZGVdN8v_tanhf")
    except OSError:
        return False


def _simd_math() -> str:
    simd = '__attribute__((simd("notinbranch")))'
    tanh = simd if _has_simd_tanh() else ""
    return f"""
extern float expf(float) {simd};
extern double exp(double) {simd};
extern float tanhf(float) {tanh};
extern double tanh(double) {tanh};
"""


HELPERS = r"""
#ifndef RNNLM_RECURRENT_HELPERS
#define RNNLM_RECURRENT_HELPERS
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Row r of kernel input k (rows ld[k] elements apart), as a T pointer. */
#define RNNLM_ROW(T, k, r) ((T*)PyArray_DATA(in[k]) + (npy_intp)(r) * ld[k])

/* Bytes [lo, hi) that an array can touch; an empty array touches none. */
static void rnnlm_extent(PyArrayObject* a, char** lo, char** hi) {
    char* p = PyArray_BYTES(a);
    *lo = *hi = p;
    if (PyArray_SIZE(a) == 0) return;
    for (int d = 0; d < PyArray_NDIM(a); ++d) {
        npy_intp span = PyArray_STRIDES(a)[d] * (PyArray_DIMS(a)[d] - 1);
        if (span < 0) *lo += span; else *hi += span;
    }
    *hi += PyArray_ITEMSIZE(a);
}

static int rnnlm_overlap(PyArrayObject* a, PyArrayObject* b) {
    char *a0, *a1, *b0, *b1;
    rnnlm_extent(a, &a0, &a1);
    rnnlm_extent(b, &b0, &b1);
    return a0 < b1 && b0 < a1;
}

/* A matrix as BLAS reads it: rows of unit stride, `ld` elements apart. A new reference:
   the array itself when it already is one, else a C-contiguous copy. */
static PyArrayObject* rnnlm_rows(PyArrayObject* a, int* ld) {
    npy_intp rows = PyArray_DIMS(a)[0], cols = PyArray_DIMS(a)[1];
    npy_intp size = PyArray_ITEMSIZE(a);
    npy_intp s0 = PyArray_STRIDES(a)[0], s1 = PyArray_STRIDES(a)[1];
    if (rows > INT_MAX / 8 || cols > INT_MAX / 8) {
        PyErr_SetString(PyExc_ValueError, "fused cell: a matrix too large for BLAS");
        return NULL;
    }
    int unit = cols <= 1 || s1 == size;
    int spaced = rows <= 1
                 || (s0 > 0 && s0 % size == 0 && s0 >= cols * size && s0 / size <= INT_MAX);
    if (PyArray_ISALIGNED(a) && unit && spaced) {
        Py_INCREF(a);
        *ld = rows <= 1 ? (cols > 0 ? (int)cols : 1) : (int)(s0 / size);
        return a;
    }
    *ld = cols > 0 ? (int)cols : 1;
    return (PyArrayObject*)PyArray_NewCopy(a, NPY_CORDER);
}

/* A buffer that starts on a cache line (free() frees it), a line at least: malloc's is only
   16-byte aligned, and a vector of 64 bytes from a buffer 16 bytes off a line spans two. */
static void* rnnlm_aligned(size_t bytes) {
    return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
}

/* The memory under the outputs that rnnlm_output makes: a capsule owns it. */
#define RNNLM_BLOCK "rnnlm.block"
typedef struct {
    void* data;
    size_t bytes;
} rnnlm_block;

static void rnnlm_free_block(PyObject* capsule) {
    rnnlm_block* b = (rnnlm_block*)PyCapsule_GetPointer(capsule, RNNLM_BLOCK);
    if (b) free(b->data);
    free(b);
}

/* A C-contiguous array over the start of `owner`'s block, which it takes `owner`'s
   reference to (a new reference), or NULL with a Python error set. */
static PyArrayObject* rnnlm_block_array(PyObject* owner, int nd, npy_intp* dims, int type) {
    rnnlm_block* b = (rnnlm_block*)PyCapsule_GetPointer(owner, RNNLM_BLOCK);
    PyObject* a = PyArray_New(&PyArray_Type, nd, dims, type, NULL, b->data, 0,
                              NPY_ARRAY_CARRAY, NULL);
    if (!a) {
        Py_DECREF(owner);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject*)a, owner)) {  /* takes owner even when it fails */
        Py_DECREF(a);
        return NULL;
    }
    return (PyArrayObject*)a;
}

static int rnnlm_touches(PyArrayObject* o, PyArrayObject** inputs, int n_inputs) {
    for (int k = 0; k < n_inputs; ++k)
        if (rnnlm_overlap(o, inputs[k])) return 1;
    return 0;
}

/* *out as a C-contiguous float32 or float64 output of shape (rows[, cols]) that starts on a
   cache line and shares no memory with the inputs (scan hands back earlier steps' buffers):
   the kept one when it fits; else an array over the kept one's memory when that is ours and
   big enough (sentence batches change shape every step, and fresh memory costs a page fault
   and a page of zeros every 4 KB: 19 % of the tutorial model's batched step); else new
   memory. 0, or -1 with a Python error set. */
static int rnnlm_output(PyArrayObject** out, int nd, npy_intp rows, npy_intp cols, int type,
                        PyArrayObject** inputs, int n_inputs) {
    npy_intp dims[2] = {rows, cols};
    const size_t bytes = (size_t)rows * (nd == 2 ? cols : 1) * (type == NPY_FLOAT64 ? 8 : 4);
    PyArrayObject* o = *out;
    if (o && PyArray_NDIM(o) == nd && PyArray_TYPE(o) == type && PyArray_IS_C_CONTIGUOUS(o)
        && PyArray_ISWRITEABLE(o) && (size_t)PyArray_DATA(o) % 64 == 0) {
        if (PyArray_DIMS(o)[0] == rows && (nd == 1 || PyArray_DIMS(o)[1] == cols)
            && !rnnlm_touches(o, inputs, n_inputs))
            return 0;
        PyObject* owner = PyArray_BASE(o);
        rnnlm_block* b = owner && PyCapsule_IsValid(owner, RNNLM_BLOCK)
                             ? (rnnlm_block*)PyCapsule_GetPointer(owner, RNNLM_BLOCK) : NULL;
        if (b && b->data == PyArray_DATA(o) && b->bytes >= bytes) {
            Py_INCREF(owner);
            PyArrayObject* again = rnnlm_block_array(owner, nd, dims, type);
            if (!again) return -1;
            if (!rnnlm_touches(again, inputs, n_inputs)) {
                Py_DECREF(o);
                *out = again;
                return 0;
            }
            Py_DECREF(again);
        }
    }
    rnnlm_block* b = (rnnlm_block*)malloc(sizeof(rnnlm_block));
    void* data = rnnlm_aligned(bytes);
    PyObject* owner = b && data ? PyCapsule_New(b, RNNLM_BLOCK, rnnlm_free_block) : NULL;
    if (!owner) {
        free(b);
        free(data);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->bytes = bytes;
#ifdef MADV_HUGEPAGE
    /* As numpy does for its own arrays of 4 MB and more: huge pages where the system gives
       them on request (fewer page faults and TLB misses). */
    if (bytes >= (1u << 22)) {
        const size_t skip = (4096 - (size_t)data % 4096) % 4096;
        madvise((char*)data + skip, bytes - skip, MADV_HUGEPAGE);
    }
#endif
    PyArrayObject* fresh = rnnlm_block_array(owner, nd, dims, type);
    if (!fresh) return -1;
    Py_XDECREF(o);
    *out = fresh;
    return 0;
}
#endif
"""

# Per dtype: $T the C type, $gemm the BLAS routine, $exp and $tanh the math, $sfx a suffix.
DTYPES = {
    "float32": dict(T="npy_float32", gemm="sgemm_", exp="expf", tanh="tanhf", sfx="f32"),
    "float64": dict(T="npy_float64", gemm="dgemm_", exp="exp", tanh="tanh", sfx="f64"),
}

# The two operations every kernel builds on, per dtype.
TYPED_HELPERS = r"""
#ifndef RNNLM_RECURRENT_HELPERS_$sfx
#define RNNLM_RECURRENT_HELPERS_$sfx
/* t (N, B) = (a w')' for a (B, K) with rows lda apart and w (N, K) with rows ldw apart: the
   product a w' written transposed, in the orientation in which OpenBLAS is fastest for a
   small batch B (the batch as the column-major row count). */
static void rnnlm_product_$sfx(int B, int N, int K, const $T* a, int lda, const $T* w, int ldw,
                               $T* t) {
#ifdef RNNLM_HAS_PRODUCT
    /* rnnlm's AVX-512 kernel (rnnlm.ops.product_c): t = w a', a' copied a chunk at a time */
    if (rnnlm_gemm_$sfx(N, B, K, 1, w, ldw, 1, a, 1, lda, t, B, 0) == 0) return;
#endif
    char trans = 'T', no = 'N';
    $T one = 1, zero = 0;
    $gemm(&trans, &no, &B, &N, &K, &one, a, &lda, w, &ldw, &zero, t, &B);
}

/* out[r, n] = x[r, n] + t[n, r] (or out[r, n] += t[n, r] when x is NULL), for r < B, n < N:
   adds a product that `rnnlm_product` wrote transposed, in tiles of 16 columns so that the
   strided reads of t stay in L1. */
static void rnnlm_add_transposed_$sfx(npy_intp B, npy_intp N, $T* out, npy_intp ldo,
                                      const $T* x, npy_intp ldx, const $T* t) {
    for (npy_intp n0 = 0; n0 < N; n0 += 16) {
        const npy_intp n1 = n0 + 16 < N ? n0 + 16 : N;
        for (npy_intp r = 0; r < B; ++r) {
            $T* o = out + r * ldo;
            const $T* xr = x ? x + r * ldx : o;
            #pragma omp simd
            for (npy_intp n = n0; n < n1; ++n) o[n] = xr[n] + t[n * B + r];
        }
    }
}

/* out[n, r] = d[r, n] for r < B, n < N (d's rows ldd apart): a gradient in the layout in
   which its weight-gradient product d' h is taken, in tiles of 16 columns. */
static void rnnlm_transpose_$sfx(npy_intp B, npy_intp N, const $T* d, npy_intp ldd, $T* out) {
    for (npy_intp n0 = 0; n0 < N; n0 += 16) {
        const npy_intp n1 = n0 + 16 < N ? n0 + 16 : N;
        for (npy_intp r = 0; r < B; ++r) {
            const $T* dr = d + r * ldd;
            for (npy_intp n = n0; n < n1; ++n) out[n * B + r] = dr[n];
        }
    }
}
#endif
"""

# A gate and its slope (from the gate's value), as C expressions of `v` and `a`.
GATE = {
    False: ("(($T)1 / (($T)1 + $exp(-(v))))", "((a) * (($T)1 - (a)))"),
    True: (
        "(($T)0.2 * (v) + ($T)0.5 < 0 ? ($T)0 : ($T)0.2 * (v) + ($T)0.5 > 1 ? ($T)1"
        " : ($T)0.2 * (v) + ($T)0.5)",
        "((a) > 0 && (a) < 1 ? ($T)0.2 : ($T)0)",
    ),
}

# A kernel: `int name(inputs..., outputs...)`, 0 or -1 with a Python error set. The prologue
# checks shapes, makes every matrix input BLAS-readable (in[k], ld[k]) and the mask m
# contiguous; the body allocates the outputs and computes; every exit frees what it took.
KERNEL = r"""
static int $name($signature) {
    int status = -1, ld[8] = {0};
    PyArrayObject* in[8] = {NULL};
    PyArrayObject* mask = NULL;
    void* scratch = NULL;
    const int n_in = $n_in;
    PyArrayObject* given[8] = {$matrices, m_arg};  /* the mask last, for the overlap checks */
    const npy_intp B = PyArray_DIMS(h_arg)[0], H = PyArray_DIMS(h_arg)[1];
    const int type = PyArray_TYPE(h_arg);
    if ($shapes_differ) {
        PyErr_SetString(PyExc_ValueError, "fused $cell step$what: shapes do not match");
        goto done;
    }
    if (B > INT_MAX / 8 || H > INT_MAX / 8) {
        PyErr_SetString(PyExc_ValueError, "fused $cell step$what: too large for BLAS");
        goto done;
    }
    for (int k = 0; k < n_in; ++k)
        if (!(in[k] = rnnlm_rows(given[k], &ld[k]))) goto done;
    if (!(mask = (PyArrayObject*)PyArray_GETCONTIGUOUS(m_arg))) goto done;
    {  /* a block, so that no goto above jumps past an initialisation (this is C++) */
    const $T* m = (const $T*)PyArray_DATA(mask);
    const int b_ = (int)B, h_ = (int)H;
    (void)m; (void)b_; (void)h_;
$body
    }
    status = 0;
done:
    for (int k = 0; k < n_in; ++k) Py_XDECREF(in[k]);
    Py_XDECREF(mask);
    free(scratch);
    return status;
}
"""

# Loops over rows r of the batch; threads only when the step is big enough (PARALLEL_UNITS).
ROWS = (
    "#pragma omp parallel for schedule(static) if (B * H >= $parallel)\n"
    "    for (npy_intp r = 0; r < B; ++r)"
)


@dataclass(frozen=True)
class Kernel:
    arguments: tuple[str, ...]  # input arrays, in op order; m_arg is the mask, h_arg is h
    outputs: tuple[str, ...]
    matrices: tuple[str, ...]  # the matrix inputs, as in[0], in[1], ... in the body
    shapes: tuple[str, ...]  # (array, dim, size) conditions that must hold
    body: str


def _conditions(shapes: tuple[str, ...]) -> str:
    checks = []
    for spec in shapes:
        array, dim, size = spec.split()
        checks.append(f"PyArray_DIMS({array})[{dim}] != {size}")
    return " || ".join(checks)
