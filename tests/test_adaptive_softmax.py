"""The adaptive softmax: the row-selected training graph against the dense one, both against
PyTorch's `AdaptiveLogSoftmaxWithLoss` with the same weights, number for number."""

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.architecture import tail_shapes
from rnnlm.backend import tensor as tt
from rnnlm.ops.adaptive_softmax import adaptive_log_probs, adaptive_log_softmax

MODES = ["FAST_COMPILE", "FAST_RUN"]
K, V, CUTOFFS, DIV = 8, 20, (4, 10), 2.0  # head 4 words + 2 clusters; tails of 6 and 10 words


def random_weights(rng, head_bias=True):
    head_W = rng.normal(size=(CUTOFFS[0] + len(CUTOFFS), K))
    head_b = rng.normal(size=CUTOFFS[0] + len(CUTOFFS)) if head_bias else None
    tails = [
        (rng.normal(size=(width, K)), rng.normal(size=(words, width)))
        for width, words in tail_shapes(K, V, CUTOFFS, DIV)
    ]
    return head_W, head_b, tails


def adaptive_graph(dense: bool, mode: str):
    """(h, y, head_W, head_b, P0, W0, P1, W1) -> log p(y) (N,), then the gradients of its sum by
    h and every weight; with `dense`, the distribution (N, V) too, from the plain graph."""
    h, y, head_W, head_b = tt.dmatrix(), tt.ivector(), tt.dmatrix(), tt.dvector()
    tails = [(tt.dmatrix(), tt.dmatrix()) for _ in CUTOFFS]
    flat = [m for pair in tails for m in pair]
    if dense:
        distribution = adaptive_log_softmax(h, head_W, head_b, tails, CUTOFFS)
        log_p, extra = distribution[tt.arange(h.shape[0]), y], [distribution]
    else:
        log_p, extra = adaptive_log_probs(h, head_W, head_b, tails, y, CUTOFFS, V), []
    outputs = [log_p, *backend.grad(log_p.sum(), [h, head_W, head_b, *flat]), *extra]
    return backend.function([h, y, head_W, head_b, *flat], outputs, mode=mode)


@pytest.fixture(scope="module", params=MODES)
def compiled(request):
    return adaptive_graph(dense=False, mode=request.param)


@pytest.fixture(scope="module")
def oracle():
    return adaptive_graph(dense=True, mode="FAST_COMPILE")  # Python linker: no C to compile


def call(compiled, h, y, head_W, head_b, tails):
    return compiled(h, y, head_W, head_b, *[m for pair in tails for m in pair])


def test_row_selection_matches_the_dense_graph(compiled, oracle):
    rng = np.random.default_rng(0)
    weights = random_weights(rng)
    h = rng.normal(size=(9, K))
    y = np.array([0, 3, 4, 9, 10, 19, 5, 12, 1], np.int32)  # head, both tails, their edges
    selected, dense = call(compiled, h, y, *weights), call(oracle, h, y, *weights)[:-1]
    for a, e in zip(selected, dense, strict=True):  # log p(y), then every gradient
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def test_a_tail_without_targets_and_normalisation(compiled, oracle):
    rng = np.random.default_rng(1)
    weights = random_weights(rng)
    h, y = rng.normal(size=(4, K)), np.array([0, 1, 2, 3], np.int32)  # the head alone
    out = call(compiled, h, y, *weights)
    np.testing.assert_allclose(out[0], call(oracle, h, y, *weights)[0], rtol=1e-10)
    np.testing.assert_allclose(np.exp(call(oracle, h, y, *weights)[-1]).sum(axis=1), 1, rtol=1e-12)
    assert not out[4].any()  # tail 0's projection learns nothing


@pytest.mark.parametrize("bad", [-1, V, V + 7])
def test_targets_out_of_range_are_an_error(compiled, bad):
    weights = random_weights(np.random.default_rng(4))
    with pytest.raises(ValueError, match="out of range"):
        call(compiled, np.zeros((2, K)), np.array([0, bad], np.int32), *weights)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    head_W, head_b, tails = random_weights(rng)
    y = np.array([0, 5, 11, 19], np.int32)

    def log_p(h, head_W, head_b, P0, W0, P1, W1):
        return adaptive_log_probs(h, head_W, head_b, [(P0, W0), (P1, W1)], y, CUTOFFS, V)

    flat = [m for pair in tails for m in pair]
    backend.verify_grad(log_p, [rng.normal(size=(4, K)), head_W, head_b, *flat], rng=rng,
                        mode="FAST_RUN")  # fmt: skip


@pytest.mark.parametrize("head_bias", [True, False])
def test_same_numbers_as_pytorch(compiled, oracle, head_bias):
    torch = pytest.importorskip("torch", reason="PyTorch (pip install torch) is the reference")
    torch.manual_seed(0)
    module = torch.nn.AdaptiveLogSoftmaxWithLoss(
        K, V, list(CUTOFFS), div_value=DIV, head_bias=head_bias
    ).double()
    tails = [(t[0].weight.detach().numpy(), t[1].weight.detach().numpy()) for t in module.tail]
    head_W = module.head.weight.detach().numpy()
    head_b = module.head.bias.detach().numpy() if head_bias else np.zeros(len(head_W))
    rng = np.random.default_rng(3)
    h = rng.normal(size=(12, K))
    y = rng.integers(0, V, 12).astype(np.int32)
    out = call(compiled, h, y, head_W, head_b, tails)

    th = torch.tensor(h, requires_grad=True)
    result = module(th, torch.tensor(y, dtype=torch.long))
    np.testing.assert_allclose(out[0], result.output.detach().numpy(), rtol=1e-10)
    dense = call(oracle, h, y, head_W, head_b, tails)[-1]
    np.testing.assert_allclose(dense, module.log_prob(th).detach().numpy(), rtol=1e-10)
    result.output.sum().backward()
    theirs = [th.grad, module.head.weight.grad] + [p.weight.grad for t in module.tail for p in t]
    ours = [out[1], out[2]] + out[4:8]
    for a, e in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, e.numpy(), rtol=1e-10, atol=1e-12)
    if head_bias:
        np.testing.assert_allclose(out[3], module.head.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_tail_shapes_are_pytorchs():
    assert tail_shapes(200, 50_000, (2000, 10_000), 4.0) == [(50, 8000), (12, 40_000)]
    assert tail_shapes(8, 20, (4, 10), 2.0) == [(4, 6), (2, 10)]
