"""The numpy reference RNN against finite differences, and its two truncation rules. No Aesara."""

import numpy as np
import pytest

from rnnlm.reference import NumpyRNN, numerical_gradient, relative_error

VOCAB, HIDDEN, T = 7, 4, 5
TOLERANCE = 1e-7


@pytest.fixture
def rnn():
    rng = np.random.default_rng(0)
    return NumpyRNN(
        U=rng.normal(0.0, 0.8, (HIDDEN, VOCAB)),
        V=rng.normal(0.0, 0.8, (VOCAB, HIDDEN)),
        W=rng.normal(0.0, 0.8, (HIDDEN, HIDDEN)),
    )


@pytest.fixture
def sentence():
    rng = np.random.default_rng(1)
    return rng.integers(0, VOCAB, T), rng.integers(0, VOCAB, T)


def test_forward_shapes_and_softmax(rnn, sentence):
    x, _ = sentence
    o, s = rnn.forward(x)
    assert o.shape == (T, VOCAB) and s.shape == (T, HIDDEN)
    np.testing.assert_allclose(o.sum(axis=1), 1.0)


def test_full_bptt_matches_finite_differences(rnn, sentence):
    x, y = sentence
    analytic = rnn.bptt(x, y)
    for name, grad in zip("UVW", analytic, strict=True):
        numeric = numerical_gradient(lambda: rnn.loss(x, y), getattr(rnn, name))
        assert relative_error(grad, numeric) < TOLERANCE, name


@pytest.mark.parametrize("truncate", [-1, T, T + 3])
def test_both_rules_are_full_bptt_when_untruncated(rnn, sentence, truncate):
    x, y = sentence
    full = rnn.bptt(x, y)
    for aesara_rule, tutorial_rule, want in zip(
        rnn.bptt(x, y, truncate), rnn.bptt_tutorial(x, y, truncate), full, strict=True
    ):
        assert relative_error(aesara_rule, want) < 1e-12
        assert relative_error(tutorial_rule, want) < 1e-12


def test_rules_differ_when_truncated(rnn, sentence):
    # truncate=1: Aesara backpropagates through the last step only; the tutorial sends every
    # output's error back one step. Neither is full BPTT.
    x, y = sentence
    full_U, _, full_W = rnn.bptt(x, y)
    aesara_U, _, aesara_W = rnn.bptt(x, y, truncate=1)
    tutorial_U, _, tutorial_W = rnn.bptt_tutorial(x, y, truncate=1)
    assert relative_error(aesara_W, tutorial_W) > 0.1
    assert relative_error(aesara_U, tutorial_U) > 0.1
    assert relative_error(aesara_W, full_W) > 0.1
    assert relative_error(tutorial_W, full_W) > 0.01


@pytest.mark.parametrize("truncate", [1, 2, 4])
def test_truncated_bptt_only_touches_the_last_steps(rnn, sentence, truncate):
    x, y = sentence
    d_U, _, _ = rnn.bptt(x, y, truncate)
    untouched = sorted(set(x[: T - truncate]) - set(x[T - truncate :]))
    np.testing.assert_array_equal(d_U[:, untouched], 0.0)


@pytest.mark.parametrize("truncate", [1, 2, 4])
def test_truncated_bptt_is_the_gradient_of_the_tail_loss(rnn, sentence, truncate):
    # Aesara's rule == d/dU, d/dW of the loss of the last k outputs, run from the state
    # s_{T-k-1} frozen at its current value (no gradient flows into it).
    x, y = sentence
    _, s = rnn.forward(x)
    frozen = s[T - truncate - 1].copy() if truncate < T else None
    tail_x, tail_y = x[T - truncate :], y[T - truncate :]
    d_U, _, d_W = rnn.bptt(x, y, truncate)
    for name, grad in (("U", d_U), ("W", d_W)):
        numeric = numerical_gradient(
            lambda: rnn.loss(tail_x, tail_y, s_init=frozen), getattr(rnn, name)
        )
        assert relative_error(grad, numeric) < TOLERANCE, name


@pytest.mark.parametrize("truncate", [1, 2, 4, T])
def test_dV_ignores_truncation(rnn, sentence, truncate):
    x, y = sentence
    _, full_V, _ = rnn.bptt(x, y)
    np.testing.assert_array_equal(rnn.bptt(x, y, truncate)[1], full_V)
    np.testing.assert_array_equal(rnn.bptt_tutorial(x, y, truncate)[1], full_V)


def test_numerical_gradient_restores_the_parameter():
    param = np.arange(6.0).reshape(2, 3)
    grad = numerical_gradient(lambda: float((param**2).sum()), param)
    np.testing.assert_array_equal(param, np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(grad, 2 * param, rtol=1e-8)
