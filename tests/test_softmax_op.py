"""The fused softmax + NLL op against numpy, in both its numpy (py linker) and C versions."""

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.backend import log_softmax, softmax
from rnnlm.backend import tensor as tt
from rnnlm.ops.softmax import SoftmaxNLL, SoftmaxNLLGrad, _softmax_nll, softmax_nll

# FAST_COMPILE (the suite's mode) runs the ops' `perform`; FAST_RUN their C code.
MODES = ["FAST_COMPILE", "FAST_RUN"]


def log_softmax_rows(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def reference(logits, b, y, w):
    """nll, and the gradients of sum(w * nll) with respect to the logits and the bias."""
    log_p = log_softmax_rows(logits + b)
    nll = -log_p[np.arange(len(y)), y]
    grad = np.exp(log_p)
    grad[np.arange(len(y)), y] -= 1
    grad *= w[:, None]
    return nll, grad, grad.sum(axis=0)


@pytest.fixture(scope="module", params=[(m, d) for m in MODES for d in ("float32", "float64")])
def compiled(request):
    """(logits, y, w, b) -> nll and the gradients of sum(w * nll) by logits and b."""
    mode, dtype = request.param
    logits, y = tt.matrix(dtype=dtype), tt.ivector()
    w, b = tt.vector(dtype=dtype), tt.vector(dtype=dtype)
    nll = softmax_nll(logits, y, b)
    grads = backend.grad((nll * w).sum(), [logits, b])
    return backend.function([logits, y, w, b], [nll, *grads], mode=mode), dtype


def test_matches_numpy(compiled):
    f, dtype = compiled
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(9, 13)) * 30).astype(dtype)  # large: needs the max shift
    b = rng.normal(size=13).astype(dtype)
    y = rng.integers(0, 13, 9).astype(np.int32)
    w = rng.random(9).astype(dtype)
    got = f(logits, y, w, b)
    want = reference(logits.astype(np.float64), b.astype(np.float64), y, w.astype(np.float64))
    tol = 1e-5 if dtype == "float32" else 1e-12
    for a, e in zip(got, want, strict=True):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


def test_strided_inputs_and_empty_batch(compiled):
    f, dtype = compiled
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 20)).astype(dtype)[:, ::2]  # not contiguous
    b = rng.normal(size=20).astype(dtype)[::2]
    y = np.array([0, 9, 3, 3, 1, 5], dtype=np.int32)
    w = np.ones(6, dtype=dtype)
    got = f(logits, y, w, b)
    want = reference(logits.astype(np.float64), b.astype(np.float64), y, w)
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    empty = f(np.zeros((0, 4), dtype), np.zeros(0, np.int32), np.ones(0, dtype), np.ones(4, dtype))
    assert [a.shape for a in empty] == [(0,), (0, 4), (4,)]
    assert not empty[2].any()


@pytest.mark.parametrize("bad", [-1, 13])
def test_targets_out_of_range_are_an_error(compiled, bad):
    f, dtype = compiled
    with pytest.raises(ValueError, match="out of range"):
        f(
            np.zeros((2, 13), dtype),
            np.array([0, bad], np.int32),
            np.ones(2, dtype),
            np.zeros(13, dtype),
        )


def test_bias_of_the_wrong_length_is_an_error(compiled):
    f, dtype = compiled
    with pytest.raises(ValueError, match="shapes"):
        f(np.zeros((2, 13), dtype), np.zeros(2, np.int32), np.ones(2, dtype), np.zeros(12, dtype))


@pytest.mark.parametrize("mode", MODES)
def test_drop_in_for_log_softmax_indexing(mode):
    """Without a bias the op is -log_softmax(logits)[arange, y], gradient included."""
    logits, y = tt.dmatrix(), tt.ivector()
    fused = softmax_nll(logits, y).sum()
    plain = -log_softmax(logits, axis=1)[tt.arange(logits.shape[0]), y].sum()
    outputs = [fused, plain, backend.grad(fused, logits), backend.grad(plain, logits)]
    f = backend.function([logits, y], outputs, mode=mode)
    rng = np.random.default_rng(2)
    a, b, ga, gb = f(rng.normal(size=(5, 7)), rng.integers(0, 7, 5).astype(np.int32))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(ga, gb, rtol=1e-10, atol=1e-12)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 4).astype(np.int32)
    backend.verify_grad(
        lambda logits, b: softmax_nll(logits, y, b),
        [rng.normal(size=(4, 6)), rng.normal(size=6)],
        rng=rng,
        mode="FAST_RUN",
    )


def test_gradient_through_the_probabilities_output():
    """The op's second output, softmax(logits + b), has the softmax's own gradient."""
    logits, b, y, g = tt.dmatrix(), tt.dvector(), tt.ivector(), tt.dmatrix()
    nll, probs = _softmax_nll(logits, b, y)
    fused = backend.grad((probs * g).sum() + nll.sum(), [logits, b])
    plain = backend.grad(
        (softmax(logits + b, axis=1) * g).sum()
        - log_softmax(logits + b, axis=1)[tt.arange(logits.shape[0]), y].sum(),
        [logits, b],
    )
    f = backend.function([logits, b, y, g], fused + plain, mode="FAST_RUN")
    rng = np.random.default_rng(4)
    got = f(rng.normal(size=(3, 5)), rng.normal(size=5), np.array([0, 4, 2], np.int32),
            rng.normal(size=(3, 5)))  # fmt: skip
    np.testing.assert_allclose(got[0], got[2], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], got[3], rtol=1e-10, atol=1e-12)


def test_rejects_wrong_types():
    with pytest.raises(TypeError):
        softmax_nll(tt.dvector(), tt.ivector())
    with pytest.raises(TypeError):
        softmax_nll(tt.dmatrix(), tt.dvector())
    with pytest.raises(TypeError):
        softmax_nll(tt.dmatrix(), tt.ivector(), tt.dmatrix())


IN_PLACE = "rnnlm_softmax_inplace"


def output_layer(mode, *extra_outputs):
    """The output layer of a training step, logits = h W: the NLL of sum(w * nll) and its
    gradients by h, W and b, compiled in `mode` (plus `extra_outputs` of (logits, probs))."""
    h, W, b = tt.dmatrix(), tt.dmatrix(), tt.dvector()
    y, w = tt.ivector(), tt.dvector()
    logits = tt.dot(h, W)
    nll, probs = _softmax_nll(logits, b, y)
    grads = backend.grad((nll * w).sum(), [h, W, b])
    extra = [{"logits": logits, "probs": probs}[name] for name in extra_outputs]
    return backend.function([h, W, b, y, w], [nll, *grads, *extra], mode=mode)


def output_layer_data():
    rng = np.random.default_rng(5)
    h, W, b = rng.normal(size=(7, 4)), rng.normal(size=(4, 11)), rng.normal(size=11)
    return h, W, b, rng.integers(0, 11, 7).astype(np.int32), rng.uniform(0.5, 2, 7)


def in_place_ops(f) -> list[str]:
    return sorted(
        type(node.op).__name__
        for node in f.maker.fgraph.apply_nodes
        if isinstance(node.op, SoftmaxNLL | SoftmaxNLLGrad) and node.op.inplace
    )


def test_in_place_where_nothing_else_reads_the_logits_and_probabilities():
    """The training graph's softmax writes over the logits and its gradient over the
    probabilities; the results are numpy's and those of the graph without the rewrite."""
    f = output_layer("FAST_RUN")
    assert in_place_ops(f) == ["SoftmaxNLL", "SoftmaxNLLGrad"]
    h, W, b, y, w = data = output_layer_data()
    nll, grad, grad_b = reference(h @ W, b, y, w)
    want = [nll, grad @ W.T, h.T @ grad, grad_b]
    without = output_layer(backend.get_mode("FAST_RUN").excluding(IN_PLACE))
    assert in_place_ops(without) == []
    for got in (f(*data), f(*data), without(*data)):  # twice: kept outputs are reused
        for g, r in zip(got, want, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("read_again", ["logits", "probs"])
def test_not_in_place_where_another_output_reads_the_array(read_again):
    f = output_layer("FAST_RUN", read_again)
    overwritten = {"logits": "SoftmaxNLL", "probs": "SoftmaxNLLGrad"}[read_again]
    assert overwritten not in in_place_ops(f)
    h, W, b, y, w = data = output_layer_data()
    *_, kept = f(*data)
    want = h @ W if read_again == "logits" else np.exp(log_softmax_rows(h @ W + b))
    np.testing.assert_allclose(kept, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_the_in_place_ops_compute_the_same(mode):
    """The in-place ops built by hand, in both linkers (the py linker's `perform` may leave
    its input alone, as a destroy_map allows)."""
    h, W, b, y, g = tt.dmatrix(), tt.dmatrix(), tt.dvector(), tt.ivector(), tt.dvector()
    nll, probs = SoftmaxNLL(inplace=True)(tt.dot(h, W), b, y)
    d, db = SoftmaxNLLGrad(inplace=True)(g, probs + 0, y)
    f = backend.function([h, W, b, y, g], [nll, d, db], mode=mode, accept_inplace=True)
    h_, W_, b_, y_, w_ = output_layer_data()
    want = reference(h_ @ W_, b_, y_, w_)
    for got, r in zip(f(h_, W_, b_, y_, w_), want, strict=True):
        np.testing.assert_allclose(got, r, rtol=1e-10, atol=1e-12)
