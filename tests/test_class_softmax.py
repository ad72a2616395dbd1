"""The class softmax ops against their plain graphs, in both the numpy and the C versions."""

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.backend import tensor as tt
from rnnlm.ops.class_softmax import (
    class_log_softmax,
    class_log_softmax_plain,
    class_nll,
    class_nll_plain,
)
from rnnlm.output_tables import class_tables

# FAST_COMPILE (the suite's mode) runs the ops' `perform`; FAST_RUN their C code.
MODES = ["FAST_COMPILE", "FAST_RUN"]
V, K, C = 11, 4, 3
WORD_CLASS = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 2, 2])  # not contiguous id ranges


def tables(word_class=WORD_CLASS, n_classes=C):
    return class_tables(word_class, n_classes)


def class_graph(oracle: bool, mode: str):
    """(h, W, b, y, weights, *tables) -> nll, then the gradients of sum(weights * nll) by h, W
    and b; by the op, or by the plain graph. The tables are inputs, so bad ones can be tried."""
    h, W, b, y, weights = tt.dmatrix(), tt.dmatrix(), tt.dvector(), tt.ivector(), tt.dvector()
    word_class, members, starts = tt.ivector(), tt.ivector(), tt.ivector()
    if oracle:
        nll = class_nll_plain(h, W, b, y, word_class)
    else:
        nll = class_nll(h, W, b, y, word_class, members, starts)
    outputs = [nll, *backend.grad((nll * weights).sum(), [h, W, b])]
    inputs = [h, W, b, y, weights, word_class, members, starts]
    return backend.function(inputs, outputs, mode=mode, on_unused_input="ignore")


@pytest.fixture(scope="module", params=MODES)
def compiled(request):
    return class_graph(oracle=False, mode=request.param)


@pytest.fixture(scope="module")
def oracle():
    # The plain graph runs on the Python linker only: compiling its C code would cost more
    # than every other test here.
    return class_graph(oracle=True, mode="FAST_COMPILE")


def example(rng, n=9):
    h, W, b = rng.normal(size=(n, K)) * 3, rng.normal(size=(V, K)), rng.normal(size=V)
    return h, W, b, rng.integers(0, V, n).astype(np.int32), rng.random(n)


def test_matches_the_plain_graph(compiled, oracle):
    values = [*example(np.random.default_rng(0)), *tables()]
    for fused, plain in zip(compiled(*values), oracle(*values), strict=True):
        np.testing.assert_allclose(fused, plain, rtol=1e-10, atol=1e-12)


def test_strided_inputs(compiled):
    h, W, b, y, weights = example(np.random.default_rng(1))
    wide = np.repeat(W, 2, axis=1)[:, ::2]  # not contiguous
    out = compiled(h[::-1], wide, b, y, weights, *tables())
    want = compiled(h[::-1].copy(), W, b, y, weights, *tables())
    for a, e in zip(out, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_batch(mode):
    h, W, b, y = tt.dmatrix(), tt.dmatrix(), tt.dvector(), tt.ivector()
    nll = class_nll(h, W, b, y, *tables())
    f = backend.function([h, W, b, y], [nll, *backend.grad(nll.sum(), [h, W, b])], mode=mode)
    empty = f(np.zeros((0, K)), np.ones((V, K)), np.ones(V), np.zeros(0, np.int32))
    assert [a.shape for a in empty] == [(0,), (0, K), (V, K), (V,)]
    assert not empty[2].any() and not empty[3].any()


@pytest.mark.parametrize("bad", [-1, V])
def test_targets_out_of_range_are_an_error(compiled, bad):
    h, W, b, y, weights = example(np.random.default_rng(2), n=2)
    with pytest.raises(ValueError, match="out of range"):
        compiled(h, W, b, np.array([0, bad], np.int32), weights, *tables())


def test_an_inconsistent_class_map_is_an_error(compiled):
    h, W, b, y, weights = example(np.random.default_rng(3), n=2)
    word_class, members, starts = tables()
    bad_members = members.copy()
    bad_members[3] = V  # a word id out of range
    bad_starts = starts.copy()
    bad_starts[1] = bad_starts[2]  # an empty class
    for bad in [(word_class, bad_members, starts), (word_class, members, bad_starts)]:
        with pytest.raises(ValueError, match="inconsistent"):
            compiled(h, W, b, y, weights, *bad)


def test_every_word_is_scored_with_its_own_class():
    """A target whose class map lists it in the wrong class is caught, not silently scored."""
    word_class, members, starts = tables()
    moved = word_class.copy()
    moved[0] = 1  # word 0 said to be in class 1, but class 1's members do not list it
    h, W, b, y = tt.dmatrix(), tt.dmatrix(), tt.dvector(), tt.ivector()
    for mode in MODES:
        f = backend.function([h, W, b, y], class_nll(h, W, b, y, moved, members, starts), mode=mode)
        with pytest.raises(ValueError, match="not among its class"):
            f(np.zeros((1, K)), np.zeros((V, K)), np.zeros(V), np.array([0], np.int32))


@pytest.mark.parametrize("mode", MODES)
def test_in_class_log_softmax_matches_the_plain_graph_and_normalises(mode):
    word_class, members, starts = tables()
    logits = tt.dmatrix()
    f = backend.function([logits], class_log_softmax(logits, members, starts), mode=mode)
    plain = backend.function([logits], class_log_softmax_plain(logits, word_class, C))
    z = np.random.default_rng(4).normal(size=(5, V)) * 40  # large: needs the per-class shift
    fused = f(z)
    np.testing.assert_allclose(fused, plain(z), rtol=1e-10, atol=1e-12)
    for c in range(C):
        np.testing.assert_allclose(np.exp(fused[:, WORD_CLASS == c]).sum(axis=1), 1, rtol=1e-12)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    y = rng.integers(0, V, 6).astype(np.int32)
    backend.verify_grad(
        lambda h, W, b: class_nll(h, W, b, y, *tables()),
        [rng.normal(size=(6, K)), rng.normal(size=(V, K)), rng.normal(size=V)],
        rng=rng,
        mode="FAST_RUN",
    )


def test_float32_agrees_with_float64():
    h, W, b, y, weights = example(np.random.default_rng(6))
    h32, W32, b32, y32 = tt.fmatrix(), tt.fmatrix(), tt.fvector(), tt.ivector()
    f = backend.function([h32, W32, b32, y32], class_nll(h32, W32, b32, y32, *tables()))
    got = f(h.astype("float32"), W.astype("float32"), b.astype("float32"), y)
    assert got.dtype == np.float32
    want = backend.function([], class_nll(h, W, b, y, *tables()))()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_class_tables():
    word_class, members, starts = tables()
    assert starts.tolist() == [0, 3, 6, 11]
    for c in range(C):
        assert (WORD_CLASS[members[starts[c] : starts[c + 1]]] == c).all()
    with pytest.raises(ValueError, match="no words"):
        class_tables(np.array([0, 0, 2]), 3)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        class_tables(np.array([0, 1, 2]), 2)


def test_rejects_wrong_types():
    word_class, members, starts = tables()
    with pytest.raises(TypeError):
        class_nll(tt.dvector(), tt.dmatrix(), tt.dvector(), tt.ivector(), *tables())
    with pytest.raises(TypeError):
        class_nll(tt.dmatrix(), tt.dmatrix(), tt.dmatrix(), tt.ivector(), *tables())
    with pytest.raises(TypeError):
        class_nll(tt.dmatrix(), tt.dmatrix(), tt.dvector(), tt.ivector(), word_class * 1.0,
                  members, starts)  # fmt: skip
