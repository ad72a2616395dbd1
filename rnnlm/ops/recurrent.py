"""Fused recurrent cell steps in C: one op per time step, and one for its gradient.

A plain cell step (`rnnlm.cells`, wrapped by `scan_steps.masked`) is a dozen small ops per time
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
sizes). Where the compiler targets AVX-512 the product is rnnlm's own kernel
(`rnnlm.ops.product_c`) in the same orientation, w a' with a' copied a chunk at a time:
138 GFLOP/s against that OpenBLAS's 80 at (2600 x 650) x (650 x 20), 1 thread. The backward
product d_pre W' wants W itself in that orientation: the gradient transposes W' back, which
depends on the weights only, so Aesara hoists it out of the backward scan.

A padded position (m_t = 0) carries the previous states: every state is m*new + (1-m)*old.
Gates are the logistic sigmoid, or Theano's hard sigmoid clip(0.2 x + 0.5, 0, 1), whose
slope is taken as 0 where the gate is exactly 0 or 1 (Aesara's clip gives 0.2 at the two
boundary points themselves: a set of measure zero). The numpy `perform` of each op is the
same arithmetic, for the py linker.
"""

from __future__ import annotations

from string import Template

import numpy as np

from rnnlm.backend import (
    Apply,
    DisconnectedType,
    blas_header_text,
    blas_header_version,
    blas_ldflags,
    shape_rule,
)
from rnnlm.backend import tensor as tt
from rnnlm.ops.common import COMPILE_ARGS, LIBRARIES, OpenMPOp
from rnnlm.ops.product_c import VERSION as PRODUCT_VERSION
from rnnlm.ops.product_c import c_support as product_support
from rnnlm.ops.recurrent_c import (
    DTYPES,
    GATE,
    HELPERS,
    KERNEL,
    PARALLEL_UNITS,
    TYPED_HELPERS,
    _conditions,
    _has_simd_tanh,
    _simd_math,
)
from rnnlm.ops.recurrent_c_backward import _gru_backward, _lstm_backward, _rnn_backward
from rnnlm.ops.recurrent_c_forward import _gru_forward, _lstm_forward, _rnn_forward
from rnnlm.ops.recurrent_numpy import SPECS, CellSpec, numpy_backward, numpy_forward


def recurrent_weights(cell: str, W_rec, hidden_size: int) -> list:
    """The op's weight inputs from a layer's W_rec (H, G*H): transposed, contiguous copies,
    made once per call outside the scan. The GRU's two products read different left operands
    (h and r*h), so its weights are two matrices, each with its own pushed-out gradient."""
    if cell == "gru":
        return [transposed(W_rec[:, : 2 * hidden_size]), transposed(W_rec[:, 2 * hidden_size :])]
    return [transposed(W_rec)]


# -- C: one kernel per cell, direction and dtype ----------------------------------------------


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
        products = "".join(product_support(dtype) for dtype in DTYPES)
        return blas_header_text() + _simd_math() + HELPERS + products + kernels

    def c_code_cache_version(self):
        return (4, PARALLEL_UNITS, _has_simd_tanh(), blas_header_version(), PRODUCT_VERSION)

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

    @shape_rule
    def infer_shape(self, node, shapes):
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

    @shape_rule
    def infer_shape(self, node, shapes):
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

    @shape_rule
    def infer_shape(self, node, shapes):
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
