"""Fused recurrent cell steps in C: one op per time step, and one for its gradient.

A plain cell step (`rnnlm.cells`, wrapped by `model.masked`) is a dozen small ops per time
step: the recurrent product, slices, a sigmoid and a tanh per gate block, the state update,
the mask blend, each a pass over memory; and Aesara's gradient of that scan recomputes them
all. `FusedStep` does one step as one BLAS gemm and one vectorised pass over the batch for
every gate, non-linearity, state update and the mask, and keeps the activations as an extra
output, which the gradient scan then reads instead of recomputing the step. `FusedStepGrad`
is the step's backward: one element-wise pass, then the gemm for dh_prev; it also writes
d_pre transposed, and the weight gradient is left to the graph as `dot(d_pre', h_prev)`,
which Aesara's scan_pushout_add takes out of the backward scan as one product over all time
steps.

Row-vector convention, as in `rnnlm.cells`; m_t (B,) is the mask, 1 on real tokens:

    rnn-tanh/relu (x_t (B, H),  m_t, h (B, H),    W' (H, H))                 -> h', acts (B, H)
    gru           (x_t (B, 3H), m_t, h,           W_zr' (2H, H), W_c' (H, H)) -> h', acts (B, 4H)
    lstm          (x_t (B, 4H), m_t, h, c (B, H), W' (4H, H))                -> h', c', acts (B, 5H)

    acts: rnn [a = f(pre)], gru [z | r | candidate | r*h], lstm [i | f | o | g | tanh(c)]

The weights come transposed and contiguous (`recurrent_weights` makes them once per call,
outside the scan) because of how OpenBLAS is fastest with a small batch: h W for h (20, 200)
and W (200, 800) takes 74 us when BLAS sees the batch as its column-major row count (writing
(h W)' into a scratch buffer) and 96 us as the natural row-major call, which makes 4H the
row count; 876 against 1,042 us at 650 units (1 thread, thread CPU time of scipy's `sgemm`
called both ways on its OpenBLAS with OPENBLAS_CORETYPE=Haswell, a shared machine). The
transposed product is then added to x_t in row order in 16-column tiles (3 us at PTB
sizes). The backward product d_pre W' wants W itself in that orientation: the gradient
transposes W' back, which depends on the weights only, so Aesara hoists it out of the
backward scan.

A padded position (m_t = 0) carries the previous states: every state is m*new + (1-m)*old.
Gates are the logistic sigmoid, or Theano's hard sigmoid clip(0.2 x + 0.5, 0, 1), whose
slope is taken as 0 where the gate is exactly 0 or 1 (Aesara's clip gives 0.2 at the two
boundary points themselves: a set of measure zero). The numpy `perform` of each op is the
same arithmetic, for the py linker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache
from string import Template

import numpy as np

from rnnlm.backend import (
    Apply,
    DisconnectedType,
    blas_header_text,
    blas_header_version,
    blas_ldflags,
)
from rnnlm.backend import tensor as tt
from rnnlm.ops.common import COMPILE_ARGS, LIBRARIES, OpenMPOp


@dataclass(frozen=True)
class CellSpec:
    gates: int  # G: blocks stacked in x_t and W_rec
    states: int  # h, or h and c
    saved: int  # width of `acts`, in units of H
    weights: int  # weight matrices the op reads


SPECS = {
    "rnn-tanh": CellSpec(gates=1, states=1, saved=1, weights=1),
    "rnn-relu": CellSpec(gates=1, states=1, saved=1, weights=1),
    "gru": CellSpec(gates=3, states=1, saved=4, weights=2),
    "lstm": CellSpec(gates=4, states=2, saved=5, weights=1),
}

# Rows of the element-wise passes go to OpenMP threads only from this many units (B * H) on:
# below it a parallel region costs more than it saves, and wakes threads that compete with
# OpenBLAS's own for the same cores.
PARALLEL_UNITS = 32768


def recurrent_weights(cell: str, W_rec, hidden_size: int) -> list:
    """The op's weight inputs from a layer's W_rec (H, G*H): transposed, contiguous copies,
    made once per call outside the scan. The GRU's two products read different left operands
    (h and r*h), so its weights are two matrices, each with its own pushed-out gradient."""
    if cell == "gru":
        return [transposed(W_rec[:, : 2 * hidden_size]), transposed(W_rec[:, 2 * hidden_size :])]
    return [transposed(W_rec)]


# -- numpy: the `perform` of the ops --------------------------------------------------------


def _gate(x, hard: bool):
    if hard:
        return np.clip(0.2 * x + 0.5, 0, 1)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _slope(a, hard: bool):
    """d gate / d pre-activation, from the gate's value a."""
    if hard:
        return np.where((a > 0) & (a < 1), 0.2, 0.0).astype(a.dtype)
    return a * (1 - a)


def _check_shapes(cell: str, what: str, x, m, states, weights, transpose: bool) -> None:
    """The C kernels' shape checks, for `perform`: x or d (B, G*H), m (B,), states (B, H),
    weights as the forward op (transposed) or the gradient op reads them."""
    spec = SPECS[cell]
    batch, n = states[0].shape
    widths = [2 * n, n] if cell == "gru" else [spec.gates * n]
    expected = [(w, n) if transpose else (n, w) for w in widths]
    if (
        x.shape[0] != batch
        or (x.shape[1] != spec.gates * n and x.shape[1] != spec.saved * n)
        or m.shape != (batch,)
        or any(s.shape != (batch, n) for s in states)
        or [w.shape for w in weights] != expected
    ):
        raise ValueError(f"fused {cell} step{what}: shapes do not match")


def numpy_forward(cell: str, hard: bool, x, m, *args) -> list[np.ndarray]:
    """The fused step: (x, m, *states, *transposed weights) -> new states, then acts."""
    spec = SPECS[cell]
    states, weights_t = args[: spec.states], args[spec.states :]
    _check_shapes(cell, "", x, m, states, weights_t, transpose=True)
    h = states[0]
    n = h.shape[1]
    m = m[:, None]
    if cell == "lstm":
        c = states[1]
        pre = x + h @ weights_t[0].T
        i, f, o = np.split(_gate(pre[:, : 3 * n], hard), 3, axis=1)
        g = np.tanh(pre[:, 3 * n :])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        return [m * (o * tc) + (1 - m) * h, m * c_new + (1 - m) * c, np.hstack([i, f, o, g, tc])]
    if cell == "gru":
        W_zr_t, W_c_t = weights_t
        zr = _gate(x[:, : 2 * n] + h @ W_zr_t.T, hard)
        z, r = zr[:, :n], zr[:, n:]
        rh = r * h
        cand = np.tanh(x[:, 2 * n :] + rh @ W_c_t.T)
        h_new = (1 - z) * cand + z * h
        return [m * h_new + (1 - m) * h, np.hstack([z, r, cand, rh])]
    pre = x + h @ weights_t[0].T
    a = np.tanh(pre) if cell == "rnn-tanh" else np.maximum(pre, 0)
    return [m * a + (1 - m) * h, a]


def numpy_backward(cell: str, hard: bool, *args) -> list[np.ndarray]:
    """The step's backward: (*g_states, m, *states, acts, *weights) -> d_pre (B, G*H), d_pre'
    (G*H, B), the gradients of the previous states, and of the mask (B,)."""
    spec = SPECS[cell]
    g_states, (m, *rest) = args[: spec.states], args[spec.states :]
    states, acts, weights = rest[: spec.states], rest[spec.states], rest[spec.states + 1 :]
    _check_shapes(cell, " gradient", acts, m, [*g_states, *states], weights, transpose=False)
    g_h, h = g_states[0], states[0]
    m = m[:, None]
    g_hr = m * g_h  # what reaches the unmasked new h
    if cell == "lstm":
        g_c, c = g_states[1], states[1]
        i, f, o, g, tc = np.split(acts, 5, axis=1)
        g_cr = m * g_c + g_hr * o * (1 - tc * tc)
        d_pre = np.hstack(
            [
                g_cr * g * _slope(i, hard),
                g_cr * c * _slope(f, hard),
                g_hr * tc * _slope(o, hard),
                g_cr * i * (1 - g * g),
            ]
        )
        g_h_prev = (1 - m) * g_h + d_pre @ weights[0].T
        g_c_prev = (1 - m) * g_c + g_cr * f
        g_m = (g_h * (o * tc - h) + g_c * (f * c + i * g - c)).sum(axis=1)
        return [d_pre, d_pre.T.copy(), g_h_prev, g_c_prev, g_m]
    if cell == "gru":
        W_zr, W_c = weights
        z, r, cand, _rh = np.split(acts, 4, axis=1)
        d_c = g_hr * (1 - z) * (1 - cand * cand)
        g_rh = d_c @ W_c.T
        d_zr = np.hstack([g_hr * (h - cand) * _slope(z, hard), g_rh * h * _slope(r, hard)])
        g_h_prev = (1 - m) * g_h + g_hr * z + g_rh * r + d_zr @ W_zr.T
        g_m = (g_h * ((1 - z) * cand + z * h - h)).sum(axis=1)
        d_pre = np.hstack([d_zr, d_c])
        return [d_pre, d_pre.T.copy(), g_h_prev, g_m]
    a = acts
    d_pre = g_hr * ((1 - a * a) if cell == "rnn-tanh" else (a > 0))
    g_h_prev = (1 - m) * g_h + d_pre @ weights[0].T
    return [d_pre, d_pre.T.copy(), g_h_prev, (g_h * (a - h)).sum(axis=1)]


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

/* A fresh or reused C-contiguous output of shape (rows[, cols]) that shares no memory with
   the inputs (scan hands back earlier steps' buffers). */
static int rnnlm_output(PyArrayObject** out, int nd, npy_intp rows, npy_intp cols, int type,
                        PyArrayObject** inputs, int n_inputs) {
    PyArrayObject* o = *out;
    int ok = o && PyArray_NDIM(o) == nd && PyArray_TYPE(o) == type
             && PyArray_IS_C_CONTIGUOUS(o) && PyArray_ISWRITEABLE(o)
             && PyArray_DIMS(o)[0] == rows && (nd == 1 || PyArray_DIMS(o)[1] == cols);
    for (int k = 0; ok && k < n_inputs; ++k) ok = !rnnlm_overlap(o, inputs[k]);
    if (ok) return 0;
    Py_XDECREF(o);
    npy_intp dims[2] = {rows, cols};
    *out = (PyArrayObject*)PyArray_EMPTY(nd, dims, type, 0);
    return *out ? 0 : -1;
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


KERNELS = {
    ("rnn-tanh", "forward"): lambda: _rnn_forward("rnn-tanh"),
    ("rnn-relu", "forward"): lambda: _rnn_forward("rnn-relu"),
    ("rnn-tanh", "backward"): lambda: _rnn_backward("rnn-tanh"),
    ("rnn-relu", "backward"): lambda: _rnn_backward("rnn-relu"),
    ("gru", "forward"): _gru_forward,
    ("gru", "backward"): _gru_backward,
    ("lstm", "forward"): _lstm_forward,
    ("lstm", "backward"): _lstm_backward,
}


def kernel_name(cell: str, hard: bool, direction: str, dtype: str) -> str:
    gate = "hard" if hard else "sigmoid"
    return f"rnnlm_{cell.replace('-', '_')}_{gate}_{direction}_{DTYPES[dtype]['sfx']}"


def kernel_source(cell: str, hard: bool, direction: str, dtype: str) -> str:
    """One kernel's C function, in an include guard, with the typed helpers it calls."""
    kernel = KERNELS[cell, direction]()
    name = kernel_name(cell, hard, direction, dtype)
    signature = ", ".join(
        [f"PyArrayObject* {a}" for a in kernel.arguments]
        + [f"PyArrayObject** {o}" for o in kernel.outputs]
    )
    gate, slope = GATE[hard]
    values = dict(
        DTYPES[dtype],
        name=name,
        signature=signature,
        n_in=str(len(kernel.matrices)),
        matrices=", ".join(kernel.matrices),
        shapes_differ=_conditions(kernel.shapes),
        cell=cell,
        what="" if direction == "forward" else " gradient",
        body=kernel.body,
        gate=gate,
        slope=slope,
        parallel=str(PARALLEL_UNITS),
    )
    source = TYPED_HELPERS + KERNEL
    # Three rounds: the body brings $gate, $slope and $parallel, which bring $T and $exp.
    for _ in range(3):
        source = Template(source).safe_substitute(values)
    guard = name.upper()
    return f"#ifndef {guard}\n#define {guard}\n{source}\n#endif\n"


# -- the ops ------------------------------------------------------------------------------------


def _float_matrix(x, dtype: str | None = None):
    x = tt.as_tensor_variable(x)
    if x.ndim != 2 or x.dtype not in DTYPES or (dtype is not None and x.dtype != dtype):
        raise TypeError(f"fused cell: needs {dtype or 'float'} matrices, got {x.type}")
    return x


class _CellOp(OpenMPOp):
    """What a step and its gradient share: props, BLAS, headers, compile flags, dispatch."""

    __props__ = ("cell", "hard_sigmoid")
    direction = ""

    def __init__(self, cell: str, hard_sigmoid: bool = False) -> None:
        if cell not in SPECS:
            raise ValueError(f"fused cell: unknown cell {cell!r}")
        self.cell = cell
        self.hard_sigmoid = bool(hard_sigmoid)
        super().__init__()

    @property
    def spec(self) -> CellSpec:
        return SPECS[self.cell]

    def c_headers(self, **kwargs):
        return ["<math.h>", "<string.h>", "<stdlib.h>", "<limits.h>"]

    def c_libraries(self, **kwargs):
        return blas_ldflags() + LIBRARIES

    def c_lib_dirs(self, **kwargs):
        return blas_ldflags(libs=False, libs_dir=True)

    def c_compile_args(self, **kwargs):
        return blas_ldflags(libs=False, flags=True) + COMPILE_ARGS

    def c_support_code(self, **kwargs):
        kernels = "".join(
            kernel_source(self.cell, self.hard_sigmoid, self.direction, dtype) for dtype in DTYPES
        )
        return blas_header_text() + _simd_math() + HELPERS + kernels

    def c_code_cache_version(self):
        return (3, PARALLEL_UNITS, _has_simd_tanh(), blas_header_version())

    def c_code(self, node, name, inputs, outputs, sub):
        kernel = kernel_name(self.cell, self.hard_sigmoid, self.direction, node.inputs[0].dtype)
        arguments = ", ".join([*inputs, *(f"&{out}" for out in outputs)])
        return f"if ({kernel}({arguments})) {{ {sub['fail']}; }}"

    def _perform(self, function, node, inputs, outputs):
        results = function(self.cell, self.hard_sigmoid, *inputs)
        dtype = node.inputs[0].dtype
        for storage, value in zip(outputs, results, strict=True):
            storage[0] = np.asarray(value, dtype=dtype)


class FusedStep(_CellOp):
    """One masked step of a cell: (x_t, m_t, *states, *transposed weights) -> (*new states,
    acts); see the module's docstring for the shapes."""

    direction = "forward"

    def make_node(self, x, m, *args):
        spec = self.spec
        if len(args) != spec.states + spec.weights:
            expected = spec.states + spec.weights + 2
            raise TypeError(f"fused {self.cell} step: expected {expected} inputs")
        x = _float_matrix(x)
        args = [_float_matrix(a, x.dtype) for a in args]
        m = tt.as_tensor_variable(m)
        if m.ndim != 1:
            raise TypeError(f"fused cell: the mask must be a vector (B,), got {m.type}")
        outputs = [tt.matrix(dtype=x.dtype) for _ in range(spec.states + 1)]
        return Apply(self, [x, m.astype(x.dtype), *args], outputs)

    def perform(self, node, inputs, outputs):
        self._perform(numpy_forward, node, inputs, outputs)

    def infer_shape(self, fgraph, node, shapes):
        batch, hidden = shapes[2]
        return [shapes[2]] * self.spec.states + [(batch, hidden * self.spec.saved)]

    def pullback(self, inputs, outputs, output_grads):
        spec = self.spec
        if not isinstance(output_grads[-1].type, DisconnectedType):
            raise NotImplementedError(
                f"fused {self.cell} step: its saved activations are for its gradient only"
            )
        x, m, *args = inputs
        states, weights_t = args[: spec.states], args[spec.states :]
        g_states = [
            tt.zeros_like(state) if isinstance(g.type, DisconnectedType) else g
            for g, state in zip(output_grads[: spec.states], outputs[: spec.states], strict=True)
        ]
        acts = outputs[-1]
        # The backward product wants the weights untransposed; these depend on the weights
        # only, so inside a scan they are made once, outside the loop.
        weights = [transposed(w) for w in weights_t]
        d_pre, d_pre_t, *g_previous, g_m = FusedStepGrad(self.cell, self.hard_sigmoid)(
            *g_states, m, *states, acts, *weights
        )
        h = states[0]
        if self.cell == "gru":
            n = h.shape[1]
            g_weights_t = [
                tt.dot(d_pre_t[: 2 * n], h),
                tt.dot(d_pre_t[2 * n :], acts[:, 3 * n :]),  # d_cand' (r*h)
            ]
        else:
            g_weights_t = [tt.dot(d_pre_t, h)]
        return [d_pre, g_m, *g_previous, *g_weights_t]


class FusedStepGrad(_CellOp):
    """A step's backward: (*g_states, m_t, *states, acts, *weights) -> (d_pre (B, G*H),
    d_pre' (G*H, B), *gradients of the previous states, gradient of the mask (B,)).

    d_pre' is what the weight gradient d_pre' h is taken of: contiguous, so that the backward
    scan stores it in place for the product that Aesara pushes out of the loop."""

    direction = "backward"

    def make_node(self, *args):
        spec = self.spec
        if len(args) != 2 * spec.states + 2 + spec.weights:
            raise TypeError(f"fused {self.cell} step gradient: wrong number of inputs")
        g_states, m, rest = args[: spec.states], args[spec.states], args[spec.states + 1 :]
        dtype = _float_matrix(g_states[0]).dtype
        g_states = [_float_matrix(g, dtype) for g in g_states]
        rest = [_float_matrix(a, dtype) for a in rest]
        m = tt.as_tensor_variable(m).astype(dtype)
        outputs = [tt.matrix(dtype=dtype) for _ in range(spec.states + 2)]
        return Apply(self, [*g_states, m, *rest], [*outputs, tt.vector(dtype=dtype)])

    def perform(self, node, inputs, outputs):
        self._perform(numpy_backward, node, inputs, outputs)

    def infer_shape(self, fgraph, node, shapes):
        batch, hidden = shapes[0]
        width = hidden * self.spec.gates
        return [(batch, width), (width, batch)] + [shapes[0]] * self.spec.states + [(batch,)]


class Transposed(OpenMPOp):
    """x (M, N) -> x' (N, M), C-contiguous: a weight matrix in the layout a fused step reads."""

    def make_node(self, x):
        x = tt.as_tensor_variable(x)
        if x.ndim != 2:
            raise TypeError(f"transposed: needs a matrix, got {x.type}")
        return Apply(self, [x], [tt.matrix(dtype=x.dtype)])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = np.ascontiguousarray(inputs[0].T)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0][::-1]]

    def pullback(self, inputs, outputs, cotangents):
        return [cotangents[0].T]

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (out,), fail = inputs, outputs, sub["fail"]
        t = f"npy_{node.inputs[0].dtype}"
        return f"""
        {{
        npy_intp rows = PyArray_DIMS({x})[0], cols = PyArray_DIMS({x})[1];
        npy_intp dims[2] = {{cols, rows}};
        if (!{out} || PyArray_DIMS({out})[0] != cols || PyArray_DIMS({out})[1] != rows
            || !PyArray_IS_C_CONTIGUOUS({out})) {{
            Py_XDECREF({out});
            {out} = (PyArrayObject*)PyArray_EMPTY(2, dims, PyArray_TYPE({x}), 0);
            if (!{out}) {{ {fail}; }}
        }}
        const npy_intp size = sizeof({t});
        const npy_intp s0 = PyArray_STRIDES({x})[0], s1 = PyArray_STRIDES({x})[1];
        {t}* dst = ({t}*)PyArray_DATA({out});
        if (PyArray_ISALIGNED({x}) && s0 % size == 0 && s1 % size == 0) {{
            const {t}* src = (const {t}*)PyArray_DATA({x});
            const npy_intp e0 = s0 / size, e1 = s1 / size;
            /* 16 x 16 tiles: the strided side stays in L1 */
            for (npy_intp i0 = 0; i0 < rows; i0 += 16) {{
                const npy_intp i1 = i0 + 16 < rows ? i0 + 16 : rows;
                for (npy_intp j0 = 0; j0 < cols; j0 += 16) {{
                    const npy_intp j1 = j0 + 16 < cols ? j0 + 16 : cols;
                    for (npy_intp j = j0; j < j1; ++j)
                        for (npy_intp i = i0; i < i1; ++i) dst[j * rows + i] = src[i * e0 + j * e1];
                }}
            }}
        }} else {{
            const char* src = PyArray_BYTES({x});
            for (npy_intp i = 0; i < rows; ++i)
                for (npy_intp j = 0; j < cols; ++j)
                    dst[j * rows + i] = *(const {t}*)(src + i * s0 + j * s1);
        }}
        }}
        """

    def c_code_cache_version(self):
        return (2,)


transposed = Transposed()
