"""The Aesara model's gradients against the numpy reference and finite differences (float64).

Weights map as W_in = U^T, W_rec = W^T, out/W = V^T (the model multiplies row vectors).
"""

import numpy as np
import pytest

from rnnlm.config import ModelConfig
from rnnlm.model import Model
from rnnlm.reference import NumpyRNN, numerical_gradient, relative_error

VOCAB, HIDDEN, T = 7, 4, 6
TOLERANCE = 1e-7
NAMES = {"layer0/W_in": "U", "layer0/W_rec": "W", "out/W": "V"}  # model param -> tutorial


@pytest.fixture(scope="module")
def weights():
    """Tutorial-convention weights, larger than the default init so truncation shows."""
    rng = np.random.default_rng(0)
    return {
        "U": rng.normal(0.0, 0.8, (HIDDEN, VOCAB)),
        "V": rng.normal(0.0, 0.8, (VOCAB, HIDDEN)),
        "W": rng.normal(0.0, 0.8, (HIDDEN, HIDDEN)),
    }


@pytest.fixture(scope="module")
def batch():
    """One sentence, time-major (T, 1), every position real."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, VOCAB, (T, 1)).astype(np.int32)
    y = rng.integers(0, VOCAB, (T, 1)).astype(np.int32)
    return x, y, np.ones((T, 1))


@pytest.fixture(scope="module", params=[-1, 1, 2, 4], ids=lambda k: f"truncate={k}")
def model(request, weights):
    """One model per truncation, compiled once and shared by the tests that use it."""
    config = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        bptt_truncate=request.param,
        bias=False,  # the tutorial's RNN
        dtype="float64",
    )
    model = Model(config, seed=0, compile_mode="FAST_COMPILE")
    for name, tutorial_name in NAMES.items():
        model.params[name].set_value(weights[tutorial_name].T.copy())
    return model


def test_gradients_match_numpy_bptt(model, weights, batch):
    x, y, mask = batch
    reference = NumpyRNN(**weights)
    truncate = model.config.bptt_truncate
    want = dict(zip("UVW", reference.bptt(x[:, 0], y[:, 0], truncate), strict=True))
    got = model.gradients(x, y, mask)
    for name, tutorial_name in NAMES.items():
        assert relative_error(got[name].T, want[tutorial_name]) < TOLERANCE, name


def test_log_probs_sum_to_minus_numpy_loss(model, weights, batch):
    x, y, mask = batch
    log_probs = model.log_probs(x, y, mask)
    assert log_probs.shape == (T, 1)
    loss = NumpyRNN(**weights).loss(x[:, 0], y[:, 0])
    np.testing.assert_allclose(log_probs.sum(), -loss, rtol=1e-12)


@pytest.mark.parametrize("model", [-1], indirect=True, ids=["full"])
def test_full_bptt_gradients_match_finite_differences(model, batch):
    x, y, mask = batch
    got = model.gradients(x, y, mask)
    for name, shared in model.params.items():
        value = shared.get_value()

        def loss(shared=shared, value=value):
            shared.set_value(value)  # numerical_gradient perturbs `value` in place
            return -float(model.log_probs(x, y, mask).sum())

        numeric = numerical_gradient(loss, value)
        shared.set_value(value)
        assert relative_error(got[name], numeric) < TOLERANCE, name
