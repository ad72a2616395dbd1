"""The fused cell-step ops against the plain graph they replace, and by finite differences.

Each op's numpy `perform` (FAST_COMPILE, the py linker) and its C code (FAST_RUN) are held to
the plain composite step of `rnnlm.cells` wrapped by `scan_steps.masked`: outputs and gradients
in float64 to rtol 1e-10, with a ragged and a fractional mask; `verify_grad` checks the op
alone; float32 C kernels are held to numpy. The whole model, fused against plain, is in
tests/test_fused_model.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.backend import tensor as tt
from rnnlm.cells import CELLS
from rnnlm.config import ModelConfig
from rnnlm.model import masked
from rnnlm.ops.recurrent import FusedStep, FusedStepGrad, recurrent_weights, transposed
from rnnlm.ops.recurrent_numpy import SPECS, numpy_forward

MODES = ["FAST_COMPILE", "FAST_RUN"]
VARIANTS = [("rnn-tanh", False), ("rnn-relu", False), ("gru", False), ("gru", True)]
VARIANTS += [("lstm", False), ("lstm", True)]
B, H = 4, 5
TOLERANCE = 1e-10


def variant_id(variant) -> str:
    cell, hard = variant
    return cell + ("-hard" if hard else "")


def inputs(cell: str, rng: np.random.Generator, dtype: str = "float64") -> list[np.ndarray]:
    """x_t, m_t (a padded row, a fractional one), the states and W_rec (H, G*H)."""
    spec = SPECS[cell]
    x = rng.normal(0, 1.0, (B, spec.gates * H))
    m = np.array([1.0, 0.0, 0.3, 1.0])
    states = [rng.normal(0, 0.8, (B, H)) for _ in range(spec.states)]
    W = rng.normal(0, 0.6, (H, spec.gates * H))
    return [a.astype(dtype) for a in (x, m, *states, W)]


def symbols(cell: str, dtype: str = "float64"):
    spec = SPECS[cell]
    x, W = tt.matrix(dtype=dtype), tt.matrix(dtype=dtype)
    m = tt.vector(dtype=dtype)
    states = [tt.matrix(dtype=dtype) for _ in range(spec.states)]
    return x, m, states, W


def fused_states(cell: str, hard: bool, x, m, states, W) -> list:
    op = FusedStep(cell, hard)
    return op(x, m, *states, *recurrent_weights(cell, W, H))[: SPECS[cell].states]


def plain_states(cell: str, hard: bool, x, m, states, W) -> list:
    config = ModelConfig(cell=cell, hidden_size=H, hard_sigmoid=hard, dtype="float64")
    return masked(CELLS[cell].make_step(config), len(states))(x, m, *states, W)


def graph(cell: str, hard: bool, fused: bool):
    """Inputs, the new states, and the gradients of a cost that weighs every state entry
    differently (so each output's gradient is checked) with respect to every input."""
    x, m, states, W = symbols(cell)
    new = (fused_states if fused else plain_states)(cell, hard, x, m, states, W)
    rng = np.random.default_rng(5)
    cost = sum((s * rng.normal(size=(B, H))).sum() + (s**2).sum() for s in new)
    grads = backend.grad(cost, [x, m, *states, W])
    return [x, m, *states, W], [*new, *grads]


@pytest.fixture(scope="module", params=MODES)
def compiled(request):
    """Per mode, one function: every variant's fused and plain states and gradients."""
    mode = request.param
    inputs_, outputs, counts = [], [], []
    for cell, hard in VARIANTS:
        for fused in (True, False):
            ins, outs = graph(cell, hard, fused)
            inputs_ += ins
            outputs += outs
            counts.append((len(ins), len(outs)))
    return backend.function(inputs_, outputs, mode=mode), counts


@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=[variant_id(v) for v in VARIANTS])
def test_fused_step_matches_the_plain_graph(compiled, index):
    f, counts = compiled
    rng = np.random.default_rng(index)
    values = []
    for cell, _ in VARIANTS:
        values += inputs(cell, rng) * 2  # the fused graph, then the plain one, same values
    results = f(*values)
    start = sum(n_out for _, n_out in counts[: 2 * index])
    n_out = counts[2 * index][1]
    fused, plain = results[start : start + n_out], results[start + n_out : start + 2 * n_out]
    for got, want in zip(fused, plain, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE)
    assert any(np.abs(g).max() > 1e-3 for g in plain)  # a test that could fail


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_fused_step_gradient_by_finite_differences(variant, mode):
    cell, hard = variant
    n_states = SPECS[cell].states

    def step(x, m, *rest):
        states, W = rest[:n_states], rest[n_states]
        new = fused_states(cell, hard, x, m, states, W)
        return tt.concatenate(new, axis=1)

    values = inputs(cell, np.random.default_rng(1))
    backend.verify_grad(step, values, rng=np.random.default_rng(2), mode=mode)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_float32_kernels_match_numpy(variant):
    cell, hard = variant
    x, m, states, W = symbols(cell, "float32")
    op = FusedStep(cell, hard)
    weights = recurrent_weights(cell, W, H)
    f = backend.function([x, m, *states, W], op(x, m, *states, *weights), mode="FAST_RUN")
    values = inputs(cell, np.random.default_rng(3), "float32")
    wide = [v.astype(np.float64) for v in values]
    w64 = wide[-1]
    weights_t = [w64[:, : 2 * H].T, w64[:, 2 * H :].T] if cell == "gru" else [w64.T]
    want = numpy_forward(cell, hard, *wide[:-1], *weights_t)
    for got, expected in zip(f(*values), want, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_strided_inputs_and_an_empty_batch(mode):
    """Views that BLAS cannot read are copied; a batch of 0 rows gives empty outputs."""
    x, m, (h, c), W = symbols("lstm")
    op = FusedStep("lstm")
    f = backend.function([x, m, h, c, W], op(x, m, h, c, transposed(W)), mode=mode)
    rng = np.random.default_rng(4)
    values = inputs("lstm", rng)
    strided = [np.repeat(v, 2, axis=-1)[..., ::2] for v in values]  # same values, stride 2
    for got, want in zip(f(*strided), f(*values), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    empty = [v[:0] if i < 4 else v for i, v in enumerate(values)]
    assert [a.shape for a in f(*empty)] == [(0, H), (0, H), (0, 5 * H)]


@pytest.mark.parametrize("mode", MODES)
def test_mismatched_shapes_are_an_error(mode):
    x, m, (h, c), W = symbols("lstm")
    f = backend.function([x, m, h, c, W], FusedStep("lstm")(x, m, h, c, W), mode=mode)
    values = inputs("lstm", np.random.default_rng(6))
    values[-1] = values[-1][:, :H]  # (H, H): not (4H, H)
    with pytest.raises(ValueError, match="shapes do not match"):
        f(*values)


@pytest.mark.parametrize("mode", MODES)
def test_transposed_value_and_gradient(mode):
    a = tt.matrix(dtype="float64")
    weights = np.arange(12.0).reshape(3, 4)
    out = transposed(a)
    f = backend.function([a], [out, backend.grad((out * weights.T).sum(), a)], mode=mode)
    value = np.random.default_rng(0).normal(size=(3, 8))[:, ::2]  # not contiguous
    got, grad = f(value)
    np.testing.assert_array_equal(got, value.T)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(grad, weights)


def test_saved_activations_have_no_gradient():
    x, m, states, W = symbols("rnn-tanh")
    *_, acts = FusedStep("rnn-tanh")(x, m, *states, W)
    with pytest.raises(NotImplementedError, match="for its gradient only"):
        backend.grad(acts.sum(), x)


def test_the_gradient_op_is_what_the_step_differentiates_to():
    x, m, states, W = symbols("gru")
    new = fused_states("gru", False, x, m, states, W)
    f = backend.function([x, m, *states, W], backend.grad(new[0].sum(), x))
    assert FusedStepGrad in {type(node.op) for node in f.maker.fgraph.apply_nodes}
