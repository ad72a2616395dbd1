"""The fused softmax + NLL op against numpy, in both its numpy (py linker) and C versions."""

import aesara
import aesara.tensor as at
import numpy as np
import pytest
from aesara.tensor.special import log_softmax

from rnnlm.ops import softmax_nll

# FAST_COMPILE (the suite's mode) runs the ops' `perform`; FAST_RUN their C code.
MODES = ["FAST_COMPILE", "FAST_RUN"]


def reference(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    nll = -log_p[np.arange(len(y)), y]
    grad = np.exp(log_p)
    grad[np.arange(len(y)), y] -= 1
    return nll, grad  # d sum(nll) / d logits


@pytest.fixture(scope="module", params=[(m, d) for m in MODES for d in ("float32", "float64")])
def compiled(request):
    mode, dtype = request.param
    logits, y, w = at.matrix(dtype=dtype), at.ivector(), at.vector(dtype=dtype)
    nll = softmax_nll(logits, y)
    loss = (nll * w).sum()
    f = aesara.function([logits, y, w], [nll, aesara.grad(loss, logits)], mode=mode)
    return f, dtype


def test_matches_numpy_and_log_softmax(compiled):
    f, dtype = compiled
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(9, 13)) * 30).astype(dtype)  # large: needs the max shift
    y = rng.integers(0, 13, 9).astype(np.int32)
    w = rng.random(9).astype(dtype)
    nll, grad = f(logits, y, w)
    want_nll, want_grad = reference(logits.astype(np.float64), y)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert nll.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(nll, want_nll, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, want_grad * w[:, None], rtol=tol, atol=tol)
    assert np.all(np.isfinite(nll))


def test_strided_logits_and_empty_batch(compiled):
    f, dtype = compiled
    rng = np.random.default_rng(1)
    wide = rng.normal(size=(6, 20)).astype(dtype)
    logits = wide[:, ::2]  # not contiguous
    y = np.array([0, 9, 3, 3, 1, 5], dtype=np.int32)
    nll, grad = f(logits, y, np.ones(6, dtype=dtype))
    want_nll, want_grad = reference(np.ascontiguousarray(logits, dtype=np.float64), y)
    np.testing.assert_allclose(nll, want_nll, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
    nll, grad = f(np.zeros((0, 4), dtype=dtype), np.zeros(0, dtype=np.int32), np.ones(0, dtype))
    assert nll.shape == (0,) and grad.shape == (0, 4)


@pytest.mark.parametrize("bad", [-1, 13])
def test_targets_out_of_range_are_an_error(compiled, bad):
    f, dtype = compiled
    logits = np.zeros((2, 13), dtype=dtype)
    with pytest.raises(ValueError, match="out of range"):
        f(logits, np.array([0, bad], dtype=np.int32), np.ones(2, dtype=dtype))


@pytest.mark.parametrize("mode", MODES)
def test_same_graph_value_as_log_softmax_indexing(mode):
    """The op is a drop-in for -log_softmax(logits)[arange, y], gradient included."""
    logits, y = at.dmatrix(), at.ivector()
    fused = softmax_nll(logits, y).sum()
    plain = -log_softmax(logits, axis=1)[at.arange(logits.shape[0]), y].sum()
    f = aesara.function(
        [logits, y],
        [fused, plain, aesara.grad(fused, logits), aesara.grad(plain, logits)],
        mode=mode,
    )
    rng = np.random.default_rng(2)
    a, b, ga, gb = f(rng.normal(size=(5, 7)), rng.integers(0, 7, 5).astype(np.int32))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(ga, gb, rtol=1e-10, atol=1e-12)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 4).astype(np.int32)
    aesara.gradient.verify_grad(
        lambda logits: softmax_nll(logits, y), [rng.normal(size=(4, 6))], rng=rng, mode="FAST_RUN"
    )


def test_rejects_wrong_types():
    with pytest.raises(TypeError):
        softmax_nll(at.dvector(), at.ivector())
    with pytest.raises(TypeError):
        softmax_nll(at.dmatrix(), at.dvector())


def test_gradient_through_the_probabilities_output():
    """The op's second output (the softmax) has the softmax's own gradient."""
    from rnnlm.ops import _softmax_nll

    logits, y, g = at.dmatrix(), at.ivector(), at.dmatrix()
    nll, probs = _softmax_nll(logits, y)
    rng = np.random.default_rng(4)
    values = rng.normal(size=(3, 5))
    targets = rng.integers(0, 5, 3).astype(np.int32)
    weights = rng.normal(size=(3, 5))
    fused = aesara.grad((probs * g).sum() + nll.sum(), logits)
    plain_sm = at.special.softmax(logits, axis=1)
    plain = aesara.grad((plain_sm * g).sum(), logits) + aesara.grad(
        softmax_nll(logits, y).sum(), logits
    )
    f = aesara.function([logits, y, g], [fused, plain], mode="FAST_RUN")
    a, b = f(values, targets, weights)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
