"""The sum of squares of a tensor in one pass, for global-norm gradient clipping.

    sum_of_squares(x) = sum(x ** 2), accumulated in float64, returned in x's dtype   ()

`tt.sum(tt.square(g))` squares into a new array the size of g, then reads it again: for the
PTB model's output-layer and embedding gradients (2M entries each) the temporary's page
faults and the second pass were 6 % of a training step. This reads g once. Deterministic:
fixed chunks, each summed in float64, added in order, whatever the thread count.
"""

from __future__ import annotations

import numpy as np

from rnnlm.backend import Apply, shape_rule
from rnnlm.backend import tensor as tt
from rnnlm.ops.common import OpenMPOp

CHUNKS = 64  # the parallel grain; fixed, so that the result does not depend on threads
PARALLEL_SIZE = 1 << 18  # entries from which the chunks go to OpenMP threads


class SumOfSquares(OpenMPOp):
    """x (any shape) -> sum(x ** 2) (), float64 accumulation."""

    def make_node(self, x):
        x = tt.as_tensor_variable(x)
        if x.dtype not in ("float32", "float64"):
            raise TypeError(f"sum_of_squares needs a float tensor, got {x.type}")
        return Apply(self, [x], [tt.scalar(dtype=x.dtype)])

    def perform(self, node, inputs, outputs):
        (x,) = inputs
        wide = np.asarray(x, dtype=np.float64).ravel()
        outputs[0][0] = np.asarray(np.dot(wide, wide), dtype=x.dtype)

    def pullback(self, inputs, outputs, cotangents):
        (x,), (g,) = inputs, cotangents
        return [2 * x * g]

    @shape_rule
    def infer_shape(self, node, shapes):
        return [()]

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (out,), fail = inputs, outputs, sub["fail"]
        t = f"npy_{node.inputs[0].dtype}"
        return f"""
        {{
        PyArrayObject* flat = (PyArrayObject*)PyArray_GETCONTIGUOUS({x});
        if (!flat) {{ {fail}; }}
        if (!{out}) {{
            {out} = (PyArrayObject*)PyArray_EMPTY(0, NULL, PyArray_TYPE({x}), 0);
            if (!{out}) {{ Py_DECREF(flat); {fail}; }}
        }}
        const {t}* p = (const {t}*)PyArray_DATA(flat);
        const npy_intp n = PyArray_SIZE(flat), chunk = (n + {CHUNKS} - 1) / {CHUNKS};
        double partial[{CHUNKS}];
        #pragma omp parallel for schedule(static) if (n >= {PARALLEL_SIZE})
        for (int k = 0; k < {CHUNKS}; ++k) {{
            const npy_intp lo = k * chunk, hi = lo + chunk < n ? lo + chunk : n;
            double s = 0;
            #pragma omp simd reduction(+:s)
            for (npy_intp i = lo; i < hi; ++i) s += (double)p[i] * (double)p[i];
            partial[k] = s;
        }}
        double total = 0;
        for (int k = 0; k < {CHUNKS}; ++k) total += partial[k];
        *({t}*)PyArray_DATA({out}) = ({t})total;
        Py_DECREF(flat);
        }}
        """

    def c_code_cache_version(self):
        return (1, CHUNKS, PARALLEL_SIZE)


sum_of_squares = SumOfSquares()
