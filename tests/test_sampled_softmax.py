"""The sampled softmax op against its plain graph, in both its numpy and C versions."""

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.backend import RandomStream
from rnnlm.backend import tensor as tt
from rnnlm.ops.sampled_softmax import (
    draw_samples,
    sampled_nll,
    sampled_nll_plain,
    sampled_softmax_nll,
)
from rnnlm.ops.softmax import softmax_nll

MODES = ["FAST_COMPILE", "FAST_RUN"]
N, S = 6, 5
Y = np.array([0, 1, 2, 3, 4, 5], np.int32)
SAMPLES = np.array([1, 1, 7, 3, 9], np.int32)  # 1 twice, 1 and 3 hit rows 1 and 3


def sampled_graph(oracle: bool, mode: str):
    """(true, true offset, sampled, sampled offset, y, samples, weights) -> the loss and the
    gradients of sum(weights * loss) by the four float inputs; by the op or the plain graph."""
    floats = [tt.dvector(), tt.dvector(), tt.dmatrix(), tt.dvector()]
    y, samples, weights = tt.ivector(), tt.ivector(), tt.dvector()
    loss = (sampled_nll_plain if oracle else sampled_nll)(*floats, y, samples)
    outputs = [loss, *backend.grad((loss * weights).sum(), floats)]
    return backend.function([*floats, y, samples, weights], outputs, mode=mode)


@pytest.fixture(scope="module", params=MODES)
def compiled(request):
    return sampled_graph(oracle=False, mode=request.param)


@pytest.fixture(scope="module")
def oracle():
    return sampled_graph(oracle=True, mode="FAST_COMPILE")  # Python linker: no C to compile


def example(rng):
    return [
        rng.normal(size=N),
        rng.normal(size=N),
        rng.normal(size=(N, S)) * 20,
        rng.normal(size=S),
    ]


def test_matches_the_plain_graph(compiled, oracle):
    rng = np.random.default_rng(0)
    values = [*example(rng), Y, SAMPLES, rng.random(N)]
    for fused, plain in zip(compiled(*values), oracle(*values), strict=True):
        np.testing.assert_allclose(fused, plain, rtol=1e-10, atol=1e-12)


def test_accidental_hits_neither_count_nor_learn(compiled):
    rng = np.random.default_rng(1)
    true, true_offset, sampled, sampled_offset = example(rng)
    out = compiled(true, true_offset, sampled, sampled_offset, Y, SAMPLES, np.ones(N))
    d_sampled = out[3]
    assert not d_sampled[1, :2].any() and not d_sampled[3, 3]  # the hits
    assert d_sampled[0].all()
    # A hit's logit does not matter at all.
    changed = sampled.copy()
    changed[1, :2] += 100
    again = compiled(true, true_offset, changed, sampled_offset, Y, SAMPLES, np.ones(N))
    np.testing.assert_array_equal(again[0][1], out[0][1])


@pytest.mark.parametrize("mode", MODES)
def test_every_word_once_under_a_uniform_proposal_is_the_full_softmax(mode):
    """S = V negatives, each word once, q = 1/V: log(S q) = 0, and with the target's own copy
    removed as a hit the loss is exactly the full softmax's NLL, gradients included."""
    V, K = 7, 3
    h, W, b, y = tt.dmatrix(), tt.dmatrix(), tt.dvector(), tt.ivector()
    everything = np.arange(V, dtype=np.int32)
    sampled = sampled_softmax_nll(h, W, b, y, everything, tt.zeros(V, dtype="float64")).sum()
    full = softmax_nll(tt.dot(h, W), y, b).sum()
    outputs = [sampled, full, *backend.grad(sampled, [h, W, b]), *backend.grad(full, [h, W, b])]
    f = backend.function([h, W, b, y], outputs, mode=mode)
    rng = np.random.default_rng(2)
    out = f(rng.normal(size=(4, K)), rng.normal(size=(K, V)), rng.normal(size=V),
            np.array([0, 6, 3, 3], np.int32))  # fmt: skip
    np.testing.assert_allclose(out[0], out[1], rtol=1e-12)
    for a, e in zip(out[2:5], out[5:8], strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    backend.verify_grad(
        lambda *floats: sampled_nll(*floats, Y, SAMPLES), example(rng), rng=rng, mode="FAST_RUN"
    )


def test_draws_follow_the_proposal_and_replay_after_reseeding():
    q = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
    random = RandomStream(7)
    f = backend.function([], draw_samples(random, q, 20_000))
    first = f()
    assert first.dtype == np.int32
    frequencies = np.bincount(first, minlength=len(q)) / len(first)
    np.testing.assert_allclose(frequencies, q, atol=0.015)
    random.seed(7)
    np.testing.assert_array_equal(f(), first)
    assert not np.array_equal(f(), first)  # the stream moves on between calls


@pytest.mark.parametrize("mode", MODES)
def test_shapes_that_do_not_match_are_an_error(mode):
    floats = [tt.dvector(), tt.dvector(), tt.dmatrix(), tt.dvector()]
    y, samples = tt.ivector(), tt.ivector()
    f = backend.function([*floats, y, samples], sampled_nll(*floats, y, samples), mode=mode)
    values = example(np.random.default_rng(4))
    with pytest.raises(ValueError, match="shapes"):
        f(*values, Y, SAMPLES[:-1])
    with pytest.raises(ValueError, match="shapes"):
        f(*values, Y[:-1], SAMPLES)


def test_rejects_wrong_types():
    with pytest.raises(TypeError):
        sampled_nll(tt.dmatrix(), tt.dvector(), tt.dmatrix(), tt.dvector(), Y, SAMPLES)
    with pytest.raises(TypeError):
        sampled_nll(tt.dvector(), tt.dvector(), tt.dvector(), tt.dvector(), Y, SAMPLES)
