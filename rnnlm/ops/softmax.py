"""A fused softmax + cross-entropy Op with its own gradient, in C (and numpy for the py linker).

    softmax_nll(logits (N, V), b (V,), y (N,)) = -log softmax(logits + b)[i, y_i]   (N,)

Written as `-log_softmax(logits)[arange, y]`, Aesara's gradient recomputes the softmax and
builds a dense one-hot: three passes of `exp` over the logits per training step, which was
30 % of a PTB step. Here the forward pass computes the probabilities once (one vectorised
`exp` per logit, rows in parallel with OpenMP) and keeps them as a second output, and the
gradient is g_i * (p_i - onehot(y_i)) read from them: no `exp` in the backward pass at all.
The output bias is added while the logits are copied, and its gradient (the column sums of
the logits' gradient) is summed while that is written: two fewer passes over (N, V) than
Aesara's own add and float64 `Sum`. This is what Theano's
`CrossentropySoftmaxArgmax1HotWithBias` did, as a small Op of our own.

A rewrite (`rnnlm_softmax_inplace`, among the library's in-place rewrites) makes both ops
write over their (N, V) input where nothing else reads it: the probabilities over the logits,
the gradient over the probabilities. A new output's cache lines are read from memory before
they are written; these are 28 MB each at PTB-small's sizes. The PTB-small training step on
2 threads went 51.4, 50.9, 50.1 -> 48.8, 49.6, 49.8 ms (`scripts/bench_commits.py`, three
rounds), the tutorial model's batched step (row 2 of the bench) about 6 % faster.
"""

from __future__ import annotations

import numpy as np

from rnnlm.backend import Apply, DisconnectedType, disconnected_type, in2out, node_rewriter, optdb
from rnnlm.backend import tensor as tt
from rnnlm.ops.common import SIMD_MATH, OpenMPOp, math_functions
from rnnlm.ops.recurrent_c import HELPERS

IN_PLACE = r"""
#ifndef RNNLM_SOFTMAX_IN_PLACE
#define RNNLM_SOFTMAX_IN_PLACE
/* *out = `source` itself when `in_place` and it is a C-contiguous array we may write (the
   loops walk rows as contiguous), else an output of its shape (rnnlm_output). */
static int rnnlm_in_place_or_output(PyArrayObject** out, int in_place, PyArrayObject* source,
                                    PyArrayObject** inputs, int n_inputs) {
    if (in_place && PyArray_IS_C_CONTIGUOUS(source) && PyArray_ISWRITEABLE(source)) {
        Py_INCREF(source);
        Py_XDECREF(*out);
        *out = source;
        return 0;
    }
    return rnnlm_output(out, 2, PyArray_DIMS(source)[0], PyArray_DIMS(source)[1],
                        PyArray_TYPE(source), inputs, n_inputs);
}
#endif
"""


def _check(logits, y):
    logits, y = tt.as_tensor_variable(logits), tt.as_tensor_variable(y)
    if logits.ndim != 2 or logits.dtype not in ("float32", "float64"):
        raise TypeError(f"softmax_nll needs float logits (N, V), got {logits.type}")
    if y.ndim != 1 or not y.dtype.startswith(("int", "uint")):
        raise TypeError(f"softmax_nll needs integer targets (N,), got {y.type}")
    return logits, y


def _check_shapes(logits, b, y):
    if len(y) != len(logits) or len(b) != logits.shape[1]:
        raise ValueError("softmax_nll: shapes do not match")
    if len(y) and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise ValueError("softmax_nll: targets out of range")


class SoftmaxNLL(OpenMPOp):
    """(logits (N, V), b (V,), y (N,)) -> (nll (N,), softmax(logits + b) (N, V)); `inplace`
    (made by the rewrite at the end of this module) writes the probabilities over the logits."""

    __props__ = ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = inplace
        if inplace:
            self.destroy_map = {1: [0]}

    def make_node(self, logits, b, y):
        logits, y = _check(logits, y)
        b = tt.as_tensor_variable(b).astype(logits.dtype)
        if b.ndim != 1:
            raise TypeError(f"softmax_nll needs a bias vector (V,), got {b.type}")
        nll = tt.vector(dtype=logits.dtype)
        probs = tt.matrix(dtype=logits.dtype)
        return Apply(self, [logits, b, y], [nll, probs])

    def perform(self, node, inputs, outputs):
        logits, b, y = inputs
        _check_shapes(logits, b, y)
        logits = logits + b
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=1)
        outputs[0][0] = (np.log(total) - shifted[np.arange(len(y)), y]).astype(logits.dtype)
        outputs[1][0] = (e / total[:, None]).astype(logits.dtype)

    def pullback(self, inputs, outputs, cotangents):
        logits, b, y = inputs
        _, probs = outputs
        g_nll, g_probs = cotangents
        g_logits, g_b = tt.zeros_like(logits), tt.zeros_like(b)
        if not isinstance(g_nll.type, DisconnectedType):
            g_logits, g_b = softmax_nll_grad(g_nll, probs, y)
        if not isinstance(g_probs.type, DisconnectedType):
            # The probabilities are an output too: the usual softmax vector-Jacobian product.
            vjp = probs * (g_probs - (g_probs * probs).sum(axis=1, keepdims=True))
            g_logits, g_b = g_logits + vjp, g_b + vjp.sum(axis=0)
        return [g_logits, g_b, disconnected_type()]

    def connection_pattern(self, node):
        return [[True, True], [True, True], [False, False]]

    def c_headers(self, **kwargs):
        return ["<math.h>", "<string.h>"]

    def c_support_code(self, **kwargs):
        return SIMD_MATH + HELPERS + IN_PLACE

    def c_code_cache_version(self):
        return (6,)

    def c_code(self, node, name, inputs, outputs, sub):
        logits, b, y = inputs
        nll, probs = outputs
        dtype = node.inputs[0].dtype
        exp, log = math_functions(dtype)
        t, ty, fail = f"npy_{dtype}", f"dtype_{y}", sub["fail"]
        return f"""
        {{
        npy_intp n = PyArray_DIMS({logits})[0], v = PyArray_DIMS({logits})[1];
        if (PyArray_DIMS({y})[0] != n || PyArray_DIMS({b})[0] != v) {{
            PyErr_SetString(PyExc_ValueError, "softmax_nll: shapes do not match");
            {fail};
        }}
        PyArrayObject* read[3] = {{{logits}, {b}, {y}}};
        int type = PyArray_TYPE({logits});
        if (rnnlm_output(&{nll}, 1, n, 0, type, read, 3)
            || rnnlm_in_place_or_output(&{probs}, {int(self.inplace)}, {logits}, read, 3)) {{
            {fail};
        }}
        npy_intp bad = 0;
        #pragma omp parallel for schedule(static) reduction(+:bad)
        for (npy_intp i = 0; i < n; ++i) {{
            const char* row = PyArray_BYTES({logits}) + i * PyArray_STRIDES({logits})[0];
            npy_intp col = PyArray_STRIDES({logits})[1];
            {t}* p = ({t}*)(PyArray_BYTES({probs}) + i * PyArray_STRIDES({probs})[0]);
            npy_intp target = *({ty}*)(PyArray_BYTES({y}) + i * PyArray_STRIDES({y})[0]);
            if (target < 0 || target >= v) {{ ++bad; continue; }}
            const char* bias = PyArray_BYTES({b});
            npy_intp bcol = PyArray_STRIDES({b})[0];
            /* read before the row is written: in place, p is the row */
            {t} picked = *({t}*)(row + target * col) + *({t}*)(bias + target * bcol);
            if (col == sizeof({t}) && bcol == sizeof({t})) {{
                const {t}* x = (const {t}*)row;
                const {t}* c = (const {t}*)bias;
                #pragma omp simd
                for (npy_intp j = 0; j < v; ++j) p[j] = x[j] + c[j];
            }} else {{
                for (npy_intp j = 0; j < v; ++j)
                    p[j] = *({t}*)(row + j * col) + *({t}*)(bias + j * bcol);
            }}
            {t} top = p[0];
            #pragma omp simd reduction(max:top)
            for (npy_intp j = 0; j < v; ++j) top = p[j] > top ? p[j] : top;
            {t} sum = 0;
            #pragma omp simd reduction(+:sum)
            for (npy_intp j = 0; j < v; ++j) {{
                {t} e = {exp}(p[j] - top);
                p[j] = e;
                sum += e;
            }}
            {t} scale = 1 / sum;
            #pragma omp simd
            for (npy_intp j = 0; j < v; ++j) p[j] *= scale;
            *({t}*)(PyArray_BYTES({nll}) + i * PyArray_STRIDES({nll})[0]) =
                {log}(sum) + top - picked;
        }}
        if (bad) {{
            PyErr_SetString(PyExc_ValueError, "softmax_nll: targets out of range");
            {fail};
        }}
        }}
        """


class SoftmaxNLLGrad(OpenMPOp):
    """(g (N,), probs (N, V), y (N,)) -> d = g_i * (probs_i - onehot(y_i)) (N, V), and the
    column sums of d (V,): the bias gradient, summed in float64 per thread; `inplace` writes d
    over the probabilities."""

    __props__ = ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = inplace
        if inplace:
            self.destroy_map = {0: [1]}

    def make_node(self, g, probs, y):
        probs, y = _check(probs, y)
        g = tt.as_tensor_variable(g).astype(probs.dtype)
        return Apply(self, [g, probs, y], [probs.type(), tt.vector(dtype=probs.dtype)])

    def perform(self, node, inputs, outputs):
        g, probs, y = inputs
        out = probs * g[:, None]
        out[np.arange(len(y)), y] -= g
        outputs[0][0] = out.astype(probs.dtype)
        outputs[1][0] = out.sum(axis=0, dtype=np.float64).astype(probs.dtype)

    def c_headers(self, **kwargs):
        return ["<omp.h>", "<stdlib.h>"]

    def c_support_code(self, **kwargs):
        return HELPERS + IN_PLACE

    def c_code_cache_version(self):
        return (6,)

    def c_code(self, node, name, inputs, outputs, sub):
        g, probs, y = inputs
        out, db = outputs
        t, ty, fail = f"npy_{node.inputs[1].dtype}", f"dtype_{y}", sub["fail"]
        return f"""
        {{
        npy_intp n = PyArray_DIMS({probs})[0], v = PyArray_DIMS({probs})[1];
        if (PyArray_DIMS({g})[0] != n || PyArray_DIMS({y})[0] != n) {{
            PyErr_SetString(PyExc_ValueError, "softmax_nll_grad: shapes do not match");
            {fail};
        }}
        PyArrayObject* read[3] = {{{g}, {probs}, {y}}};
        int type = PyArray_TYPE({probs});
        if (rnnlm_in_place_or_output(&{out}, {int(self.inplace)}, {probs}, read, 3)
            || rnnlm_output(&{db}, 1, v, 0, type, read, 3)) {{ {fail}; }}
        int threads = omp_get_max_threads();
        /* One float64 accumulator per thread, added up in thread order: deterministic. */
        double* partial = (double*)calloc((size_t)threads * v + 1, sizeof(double));
        if (!partial) {{
            PyErr_NoMemory();
            {fail};
        }}
        #pragma omp parallel num_threads(threads)
        {{
            double* mine = partial + (size_t)omp_get_thread_num() * v;
            #pragma omp for schedule(static)
            for (npy_intp i = 0; i < n; ++i) {{
                const char* row = PyArray_BYTES({probs}) + i * PyArray_STRIDES({probs})[0];
                npy_intp col = PyArray_STRIDES({probs})[1];
                {t}* d = ({t}*)(PyArray_BYTES({out}) + i * PyArray_STRIDES({out})[0]);
                {t} gi = *({t}*)(PyArray_BYTES({g}) + i * PyArray_STRIDES({g})[0]);
                if (col == sizeof({t})) {{
                    const {t}* p = (const {t}*)row;
                    #pragma omp simd
                    for (npy_intp j = 0; j < v; ++j) d[j] = gi * p[j];
                }} else {{
                    for (npy_intp j = 0; j < v; ++j) d[j] = gi * *({t}*)(row + j * col);
                }}
                npy_intp target = *({ty}*)(PyArray_BYTES({y}) + i * PyArray_STRIDES({y})[0]);
                d[target] -= gi;  /* in range: the forward pass checked the same targets */
                #pragma omp simd
                for (npy_intp j = 0; j < v; ++j) mine[j] += d[j];
            }}
        }}
        {t}* sums = ({t}*)PyArray_DATA({db});
        for (npy_intp j = 0; j < v; ++j) {{
            double total = 0;
            for (int k = 0; k < threads; ++k) total += partial[(size_t)k * v + j];
            sums[j] = ({t})total;
        }}
        free(partial);
        }}
        """


_softmax_nll = SoftmaxNLL()
softmax_nll_grad = SoftmaxNLLGrad()


def softmax_nll(logits, y, b=None):
    """-log softmax(logits + b)[i, y_i] for each row i: (N, V), (N,), (V,) -> (N,)."""
    if b is None:
        b = tt.zeros((tt.as_tensor_variable(logits).shape[1],), dtype=logits.dtype)
    return _softmax_nll(logits, b, y)[0]


@node_rewriter([SoftmaxNLL, SoftmaxNLLGrad])
def _in_place(fgraph, node):
    """The probabilities over the logits, and the gradient over the probabilities, where the
    destroy handler finds no other reader: each is (N, V), 28 MB at PTB-small's sizes, read by
    the next op at once, and a new output's lines are read from memory before being written."""
    if node.op.inplace:
        return None
    return type(node.op)(inplace=True).make_node(*node.inputs).outputs


# Among the library's in-place rewrites (its BLAS ones at 70, elementwise ones at 75), after
# the destroy handler (49.5) that checks them.
optdb.register("rnnlm_softmax_inplace", in2out(_in_place), "fast_run", "inplace", position=70.5)
