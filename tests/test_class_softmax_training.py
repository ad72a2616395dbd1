"""The class softmax inside a whole model: its gradients, through the recurrence, against the
plain graph of the class-factored loss; and a model trained with it learning context, not just
word frequencies, as the full softmax does."""

import numpy as np
import pytest

from rnnlm import backend, output
from rnnlm.config import ModelConfig, TrainConfig
from rnnlm.model import Model
from rnnlm.ops.class_softmax import class_nll_plain
from rnnlm.optim import updates_for
from rnnlm.output_tables import make_tables

V = 24


def plain_class_nll(h, W, b, y, word_class, members, starts):
    """`class_nll`'s signature over its plain-graph oracle."""
    return class_nll_plain(h, W, b, y, backend.tensor.as_tensor_variable(word_class))


def counts():
    return 1000.0 / np.arange(1, V + 1)  # Zipf: a few frequent words in classes of their own


def test_model_gradients_match_the_plain_class_factored_loss(monkeypatch):
    """Every parameter's gradient, the recurrent ones included (the part of d loss / d h
    that reaches the cells), by the op and by the plain graph, in float64."""
    config = ModelConfig(
        vocab_size=V, hidden_size=5, embedding_size=4, cell="lstm", layers=2, softmax="class",
        classes=5, bptt_truncate=-1, dtype="float64", init_scale=0.3,
    )  # fmt: skip
    tables = make_tables(config.output, counts())
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (6, 3)).astype(np.int32)
    y = rng.integers(0, V, (6, 3)).astype(np.int32)
    mask = np.ones(x.shape)
    mask[:2, 1] = 0  # padding too
    by_op = Model(config, seed=3, tables=tables).gradients(x, y, mask)
    monkeypatch.setattr(output, "class_nll", plain_class_nll)
    by_plain = Model(config, seed=3, tables=tables).gradients(x, y, mask)
    for name, grad in by_plain.items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(by_op[name], grad, rtol=1e-10, atol=1e-12, err_msg=name)


def successor_batches(steps: int, rng: np.random.Generator, time: int = 10, batch: int = 8):
    """Streams where each word fixes the next (w -> perm[w]), so a model that reads its
    context reaches a loss near 0, while word frequencies alone give about log V."""
    perm = np.random.default_rng(7).permutation(V)
    for _ in range(steps):
        ids = np.empty((time + 1, batch), dtype=np.int32)
        ids[0] = rng.integers(0, V, batch)
        for t in range(time):
            ids[t + 1] = perm[ids[t]]
        yield ids[:-1], ids[1:], np.ones((time, batch))


def trained_loss(softmax: str, steps: int = 120) -> float:
    """Mean loss per token over the last 20 of `steps` SGD steps (rate 1, clipped at 5)."""
    config = ModelConfig(
        vocab_size=V, hidden_size=16, embedding_size=16, cell="lstm", softmax=softmax,
        classes=5, bptt_truncate=-1, dtype="float64", init_scale=0.1,
    )  # fmt: skip
    model = Model(config, seed=0, tables=make_tables(config.output, counts()))
    train = TrainConfig(optimizer="sgd", learning_rate=1.0, clip_norm=5.0)
    lr = backend.shared(np.asarray(1.0))
    step = model.compile_train_step(lambda p, g: updates_for(train, p, g, lr)[0])
    states, losses = model.initial_states(8), []
    for x, y, mask in successor_batches(steps, np.random.default_rng(1)):
        nll, tokens, *states = step(x, y, mask, *states)
        losses.append(nll / tokens)
    return float(np.mean(losses[-20:]))


@pytest.fixture(scope="module")
def full_loss():
    return trained_loss("full")


def test_the_class_model_learns_context_as_the_full_one_does(full_loss):
    """A class model that learns only frequencies stays near log V (3.2 here)."""
    class_loss = trained_loss("class")
    assert full_loss < 0.5
    assert class_loss < 0.5
    assert class_loss < full_loss + 0.2
