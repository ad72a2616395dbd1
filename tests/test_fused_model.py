"""The whole model with fused cell ops against the same model on the plain graph (the oracle).

Every cell, one and two layers, uni- and bidirectional, hard sigmoid, truncated and full
BPTT, a ragged left-padded batch and carried-in states: log-probabilities, final states and
`grad` gradients agree to rtol 1e-10 in float64. Every case runs on the py linker (the ops'
numpy `perform`); two run on the C linker too. The gradient-flow diagnostics (a probe added
to the fused op's output), the next-word distribution and generation steps agree too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rnnlm.batches import pad_batch
from rnnlm.config import ModelConfig
from rnnlm.model import Model
from rnnlm.ops.recurrent import FusedStep

VOCAB, HIDDEN = 11, 4
TOLERANCE = 1e-10

CASES = {
    "rnn-tanh-x2-truncated": dict(cell="rnn-tanh", layers=2, bptt_truncate=2),
    "rnn-relu-bi-embed": dict(cell="rnn-relu", bidirectional=True, embedding_size=3),
    "gru-bi-hard-truncated": dict(
        cell="gru", bidirectional=True, hard_sigmoid=True, bptt_truncate=2
    ),
    "lstm-x2-embed": dict(cell="lstm", layers=2, embedding_size=HIDDEN),
}
# The fused model on the C linker too: full BPTT (weight gradients pushed out of the backward
# scan) and truncated (kept inside it). The oracle is the plain graph on the py linker.
C_LINKER = ("lstm-x2-embed", "gru-bi-hard-truncated")
PARAMS = [(name, "FAST_COMPILE") for name in CASES] + [(name, "FAST_RUN") for name in C_LINKER]


@pytest.fixture(scope="module")
def batch():
    """A left-padded batch of three sentences, T = 5: lengths 6, 4, 2 ids."""
    rng = np.random.default_rng(11)
    return pad_batch([rng.integers(0, VOCAB, n).astype(np.int32) for n in (6, 4, 2)], "float64")


def make_model(name: str, fused: bool, mode: str) -> Model:
    defaults = dict(vocab_size=VOCAB, hidden_size=HIDDEN, bptt_truncate=-1, dtype="float64")
    config = ModelConfig(**(defaults | CASES[name] | dict(fused=fused)))
    model = Model(config, seed=3, compile_mode=mode)
    rng = np.random.default_rng(7)  # large weights, so that every non-linearity bites
    model.params.assign(
        {k: rng.normal(0, 0.6, v.shape) for k, v in model.params.values_dict().items()}
    )
    return model


@pytest.fixture(scope="module")
def plain_models():
    """The oracles, compiled once per case: the plain graph on the py linker."""
    return {}


@pytest.fixture(scope="module", params=PARAMS, ids=[f"{n}-{m}" for n, m in PARAMS])
def pair(request, plain_models):
    """A fused model of one case on one linker, and its plain oracle, with the same weights."""
    name, mode = request.param
    if name not in plain_models:
        plain_models[name] = make_model(name, False, "FAST_COMPILE")
    return make_model(name, True, mode), plain_models[name]


def test_the_fused_model_uses_the_fused_op(pair):
    fused, plain = pair

    def uses_fused_op(model) -> bool:
        nodes = model._log_probs_fn.maker.fgraph.apply_nodes
        inner = [getattr(node.op, "fgraph", None) for node in nodes]
        return any(isinstance(n.op, FusedStep) for g in inner if g for n in g.apply_nodes)

    assert uses_fused_op(fused) and not uses_fused_op(plain)


def test_log_probs_and_final_states_match(pair, batch):
    x, y, mask = batch
    rng = np.random.default_rng(1)
    states = [rng.normal(0, 0.5, s.shape) for s in pair[0].initial_states(x.shape[1])]
    fused, plain = (model.log_probs_and_states(x, y, mask, states) for model in pair)
    np.testing.assert_allclose(fused[0], plain[0], rtol=TOLERANCE, atol=TOLERANCE)
    assert (fused[0] != 0).sum() == mask.sum()
    for got, want in zip(fused[1], plain[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE)


def test_gradients_match(pair, batch):
    fused, plain = (model.gradients(*batch) for model in pair)
    assert list(fused) == list(plain)
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], rtol=TOLERANCE, atol=TOLERANCE)
        if name.endswith("W_rec"):
            assert np.abs(plain[name]).max() > 1e-3, name  # the recurrence is exercised


def test_gradient_flow_diagnostics_match():
    """The probe that `diagnose` differentiates by is added to the fused op's output."""
    config = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, cell="lstm", bptt_truncate=3)
    config = dataclasses.replace(config, dtype="float64")
    ids = np.random.default_rng(2).integers(0, VOCAB, 7).astype(np.int32)
    (f_norms, f_top), (p_norms, p_top) = (
        Model(dataclasses.replace(config, fused=fused), seed=4).gradient_flow(ids)
        for fused in (True, False)
    )
    np.testing.assert_allclose(f_norms, p_norms, rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(f_top, p_top, rtol=TOLERANCE, atol=TOLERANCE)
    assert np.abs(p_norms).max() > 1e-3


@pytest.fixture(scope="module")
def left_to_right():
    """A two-layer LSTM with large weights, fused and plain (the py linker)."""
    return [make_model("lstm-x2-embed", fused, "FAST_COMPILE") for fused in (True, False)]


def test_next_word_distributions_match(left_to_right, batch):
    """`rnnlm next` and the service read the last step of a left-padded batch."""
    x, _, mask = batch
    fused, plain = (model.next_log_probs(x, mask) for model in left_to_right)
    np.testing.assert_allclose(fused, plain, rtol=TOLERANCE, atol=TOLERANCE)


def test_generation_steps_match(left_to_right):
    """Sampling runs a length-1 sequence through the same stack, states carried."""
    ids = np.array([3, 0, 10], dtype=np.int32)
    outputs = []
    for model in left_to_right:
        states = model.initial_states(len(ids))
        for _ in range(3):
            logits, states = model.step(ids, states)
        outputs.append([logits, *states])
    for got, want in zip(*outputs, strict=True):
        np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE)
