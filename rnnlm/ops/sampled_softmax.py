"""Sampled softmax (Jean et al. 2015; TensorFlow's `sampled_softmax_loss`) for training, as a C op.

Each row scores its target against S negatives drawn once for the whole batch from a
proposal q, with replacement (TensorFlow's `unique=False`):

    z_i0 = h_i . W[:, y_i] + b[y_i] - log(S q(y_i))        the target, log-Q corrected
    z_ij = h_i . W[:, s_j] + b[s_j] - log(S q(s_j))        negative j; -inf where s_j = y_i
    loss_i = logsumexp_j(z_i) - z_i0

The -inf removes "accidental hits", a negative that is the row's own target. The products
are two gathers and a (N, K) x (K, S) product in the graph; `SampledNLL` does the rest in
one pass — the corrections and biases added as offsets, the hits masked, the probabilities
kept — and `SampledNLLGrad` reads the gradient from them, as `rnnlm.ops.softmax` does.
Evaluation, scoring and sampling use the exact full softmax of the same weights.
"""

from __future__ import annotations

import numpy as np

from rnnlm.backend import Apply, DisconnectedType, disconnected_type
from rnnlm.backend import tensor as tt
from rnnlm.ops.common import SIMD_MATH, OpenMPOp, float_tensor, int32_vector, math_functions


class SampledNLL(OpenMPOp):
    """(true (N,), true_offset (N,), sampled (N, S), sampled_offset (S,), y (N,), samples (S,))
    -> (loss (N,), probabilities (N, 1 + S): the target's in column 0, 0 on accidental hits)."""

    def make_node(self, true, true_offset, sampled, sampled_offset, y, samples):
        sampled = float_tensor(sampled, 2, "sampled_nll's sampled logits")
        dtype = sampled.dtype
        true = float_tensor(true, 1, "sampled_nll's true logits").astype(dtype)
        true_offset = float_tensor(true_offset, 1, "sampled_nll's true offsets").astype(dtype)
        sampled_offset = float_tensor(sampled_offset, 1, "sampled_nll's sampled offsets").astype(
            dtype
        )
        y, samples = (
            int32_vector(y, "sampled_nll's targets"),
            int32_vector(samples, "sampled_nll's samples"),
        )
        inputs = [true, true_offset, sampled, sampled_offset, y, samples]
        return Apply(self, inputs, [tt.vector(dtype=dtype), tt.matrix(dtype=dtype)])

    def perform(self, node, inputs, outputs):
        true, true_offset, sampled, sampled_offset, y, samples = inputs
        n, s = sampled.shape
        rows = {n, len(true), len(true_offset), len(y)}
        if len(rows) != 1 or len({s, len(sampled_offset), len(samples)}) != 1:
            raise ValueError("sampled_nll: shapes do not match")
        z = np.empty((n, s + 1), dtype=np.float64)
        z[:, 0] = true + true_offset
        z[:, 1:] = sampled + sampled_offset
        z[:, 1:][samples[None, :] == y[:, None]] = -np.inf
        top = z.max(axis=1, keepdims=True)
        e = np.exp(z - top)
        total = e.sum(axis=1)
        outputs[0][0] = (np.log(total) + top[:, 0] - z[:, 0]).astype(sampled.dtype)
        outputs[1][0] = (e / total[:, None]).astype(sampled.dtype)

    def pullback(self, inputs, outputs, output_grads):
        g_loss, g_probs = output_grads
        if not isinstance(g_probs.type, DisconnectedType):
            raise NotImplementedError("sampled_nll: no gradient through the probabilities")
        _, probs = self(*inputs)
        d_true, d_sampled, d_offset = sampled_nll_grad(g_loss, probs)
        return [d_true, d_true, d_sampled, d_offset, disconnected_type(), disconnected_type()]

    def connection_pattern(self, node):
        return [[True, True]] * 4 + [[False, False]] * 2

    def c_headers(self, **kwargs):
        return ["<math.h>"]

    def c_support_code(self, **kwargs):
        return SIMD_MATH

    def c_code(self, node, name, inputs, outputs, sub):
        true, true_offset, sampled, sampled_offset, y, samples = inputs
        loss, probs = outputs
        dtype = node.inputs[2].dtype
        exp, log = math_functions(dtype)
        t, fail = f"npy_{dtype}", sub["fail"]

        def at(array, index):  # element of a vector, whatever its stride
            return f"*({t}*)(PyArray_BYTES({array}) + ({index}) * PyArray_STRIDES({array})[0])"

        def at_int(array, index):
            return (
                f"*(npy_int32*)(PyArray_BYTES({array}) + ({index}) * PyArray_STRIDES({array})[0])"
            )

        return f"""
        {{
        npy_intp n = PyArray_DIMS({sampled})[0], s = PyArray_DIMS({sampled})[1];
        if (PyArray_DIMS({true})[0] != n || PyArray_DIMS({true_offset})[0] != n
            || PyArray_DIMS({y})[0] != n || PyArray_DIMS({sampled_offset})[0] != s
            || PyArray_DIMS({samples})[0] != s) {{
            PyErr_SetString(PyExc_ValueError, "sampled_nll: shapes do not match");
            {fail};
        }}
        npy_intp dims[2] = {{n, s + 1}};
        if (!{loss} || PyArray_DIMS({loss})[0] != n) {{
            Py_XDECREF({loss});
            {loss} = (PyArrayObject*)PyArray_EMPTY(1, dims, PyArray_TYPE({sampled}), 0);
        }}
        if (!{probs} || PyArray_DIMS({probs})[0] != n || PyArray_DIMS({probs})[1] != s + 1
            || !PyArray_IS_C_CONTIGUOUS({probs})) {{
            Py_XDECREF({probs});
            {probs} = (PyArrayObject*)PyArray_EMPTY(2, dims, PyArray_TYPE({sampled}), 0);
        }}
        if (!{loss} || !{probs}) {{ {fail}; }}
        #pragma omp parallel for schedule(static)
        for (npy_intp i = 0; i < n; ++i) {{
            const char* row = PyArray_BYTES({sampled}) + i * PyArray_STRIDES({sampled})[0];
            npy_intp col = PyArray_STRIDES({sampled})[1];
            {t}* p = ({t}*)(PyArray_BYTES({probs}) + i * PyArray_STRIDES({probs})[0]);
            npy_int32 target = {at_int(y, "i")};
            {t} z0 = {at(true, "i")} + {at(true_offset, "i")};
            {t} top = z0;
            p[0] = z0;
            for (npy_intp j = 0; j < s; ++j) {{
                {t} z = *({t}*)(row + j * col) + {at(sampled_offset, "j")};
                if ({at_int(samples, "j")} == target) z = -INFINITY;  /* an accidental hit */
                p[j + 1] = z;
                top = z > top ? z : top;
            }}
            {t} sum = 0;
            #pragma omp simd reduction(+:sum)
            for (npy_intp j = 0; j <= s; ++j) {{
                {t} e = {exp}(p[j] - top);
                p[j] = e;
                sum += e;
            }}
            {t} scale = 1 / sum;
            #pragma omp simd
            for (npy_intp j = 0; j <= s; ++j) p[j] *= scale;
            {at(loss, "i")} = {log}(sum) + top - z0;
        }}
        }}
        """

    def c_code_cache_version(self):
        return (1,)


class SampledNLLGrad(OpenMPOp):
    """(g (N,), probabilities (N, 1 + S)) -> the gradients of sum(g * loss) by the true logits
    g (p_0 - 1) (N,), by the sampled logits g p_j (N, S), and by the sampled offsets: their
    column sums (S,), in float64 per thread."""

    def make_node(self, g, probs):
        probs = float_tensor(probs, 2, "sampled_nll's probabilities")
        g = float_tensor(g, 1, "sampled_nll's gradient").astype(probs.dtype)
        outputs = [g.type(), probs.type(), g.type()]
        return Apply(self, [g, probs], outputs)

    def perform(self, node, inputs, outputs):
        g, probs = inputs
        d = probs * g[:, None]
        outputs[0][0] = (d[:, 0] - g).astype(probs.dtype)
        outputs[1][0] = np.ascontiguousarray(d[:, 1:]).astype(probs.dtype)
        outputs[2][0] = d[:, 1:].sum(axis=0, dtype=np.float64).astype(probs.dtype)

    def c_headers(self, **kwargs):
        return ["<omp.h>", "<stdlib.h>"]

    def c_code(self, node, name, inputs, outputs, sub):
        g, probs = inputs
        d_true, d_sampled, d_offset = outputs
        t, fail = f"npy_{node.inputs[1].dtype}", sub["fail"]
        return f"""
        {{
        npy_intp n = PyArray_DIMS({probs})[0], s = PyArray_DIMS({probs})[1] - 1;
        if (PyArray_DIMS({g})[0] != n || s < 0) {{
            PyErr_SetString(PyExc_ValueError, "sampled_nll_grad: shapes do not match");
            {fail};
        }}
        npy_intp dims[2] = {{n, s}};
        Py_XDECREF({d_true}); Py_XDECREF({d_sampled}); Py_XDECREF({d_offset});
        {d_true} = (PyArrayObject*)PyArray_EMPTY(1, dims, PyArray_TYPE({probs}), 0);
        {d_sampled} = (PyArrayObject*)PyArray_EMPTY(2, dims, PyArray_TYPE({probs}), 0);
        {d_offset} = (PyArrayObject*)PyArray_EMPTY(1, dims + 1, PyArray_TYPE({probs}), 0);
        int threads = omp_get_max_threads();
        /* One float64 accumulator per thread, added up in thread order: deterministic. */
        double* partial = (double*)calloc((size_t)threads * s + 1, sizeof(double));
        if (!{d_true} || !{d_sampled} || !{d_offset} || !partial) {{
            free(partial);
            if (!PyErr_Occurred()) PyErr_NoMemory();
            {fail};
        }}
        #pragma omp parallel num_threads(threads)
        {{
            double* mine = partial + (size_t)omp_get_thread_num() * s;
            #pragma omp for schedule(static)
            for (npy_intp i = 0; i < n; ++i) {{
                const char* row = PyArray_BYTES({probs}) + i * PyArray_STRIDES({probs})[0];
                npy_intp col = PyArray_STRIDES({probs})[1];
                {t} gi = *({t}*)(PyArray_BYTES({g}) + i * PyArray_STRIDES({g})[0]);
                {t}* d = ({t}*)PyArray_DATA({d_sampled}) + i * s;
                ((({t}*)PyArray_DATA({d_true})))[i] = gi * (*({t}*)row - 1);
                for (npy_intp j = 0; j < s; ++j) {{
                    d[j] = gi * *({t}*)(row + (j + 1) * col);
                    mine[j] += d[j];
                }}
            }}
        }}
        {t}* sums = ({t}*)PyArray_DATA({d_offset});
        for (npy_intp j = 0; j < s; ++j) {{
            double total = 0;
            for (int k = 0; k < threads; ++k) total += partial[(size_t)k * s + j];
            sums[j] = ({t})total;
        }}
        free(partial);
        }}
        """

    def c_code_cache_version(self):
        return (1,)


_sampled_nll = SampledNLL()
sampled_nll_grad = SampledNLLGrad()


def sampled_nll(true, true_offset, sampled, sampled_offset, y, samples):
    """The sampled-softmax loss of each row (N,) from the raw logits and their offsets
    (bias minus log(S q)); see the module docstring."""
    y, samples = tt.cast(y, "int32"), tt.cast(samples, "int32")
    return _sampled_nll(true, true_offset, sampled, sampled_offset, y, samples)[0]


def sampled_nll_plain(true, true_offset, sampled, sampled_offset, y, samples):
    """The same as a plain graph: the oracle."""
    z0 = true + true_offset  # (N,)
    z = sampled + sampled_offset  # (N, S)
    z = tt.switch(tt.eq(samples[None, :], y[:, None]), -np.inf, z)
    top = tt.maximum(z.max(axis=1), z0)
    lse = top + tt.log(tt.exp(z0 - top) + tt.exp(z - top[:, None]).sum(axis=1))
    return lse - z0


def sampled_logits(h, W, b, y, samples):
    """The raw logits of the targets (N,) and of the shared negatives (N, S), and the biases
    of each, from h (N, K) and the full softmax's weights W (K, V), b (V,) or None."""
    n = y.shape[0]
    # One gather of the columns needed, targets then samples, and one scatter back: indexing
    # W's own layout is several times faster than gathering rows of W.T, a strided view.
    words = tt.concatenate([y, samples])  # (N + S,)
    columns = W[:, words]  # (K, N + S)
    true = (h * columns[:, :n].T).sum(axis=1)  # (N,)
    sampled = tt.dot(h, columns[:, n:])  # (N, S)
    if b is None:
        return true, tt.zeros_like(true), sampled, tt.zeros_like(samples, dtype=h.dtype)
    return true, b[y], sampled, b[samples]


def sampled_softmax_nll(h, W, b, y, samples, log_expected):
    """The training loss (N,) of rows h (N, K) with targets y (N,) against `samples` (S,):
    W (K, V), b (V,) or None, log_expected (V,) = log(S q) of every word."""
    true, true_b, sampled, sampled_b = sampled_logits(h, W, b, y, samples)
    log_expected = tt.as_tensor_variable(log_expected)
    return sampled_nll(
        true, true_b - log_expected[y], sampled, sampled_b - log_expected[samples], y, samples
    )


def draw_samples(random, proposal: np.ndarray, count: int):
    """`count` word ids drawn with replacement from `proposal` (V,), by a `RandomStream`:
    reseeding the stream replays the same draws (exact resume)."""
    return tt.cast(random.choice(len(proposal), size=(count,), replace=True, p=proposal), "int32")
