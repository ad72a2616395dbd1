"""The compiled model against an independent numpy oracle, finite differences and its invariants.

Every cell, single and stacked, uni- and bidirectional, one-hot and embedded input, tied once:
forward pass = numpy loop, symbolic gradients = central differences, loss at init ~ ln V,
causality (and its absence when bidirectional), padding invariance, a tiny corpus overfit,
and dropout that follows the seed in training and is off in evaluation. All float64.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.batches import pad_batch
from rnnlm.config import ModelConfig, TrainConfig
from rnnlm.model import Model
from rnnlm.optim import updates_for

VOCAB, HIDDEN = 11, 4
FORWARD_TOLERANCE = 1e-10
GRADIENT_TOLERANCE = 1e-6
FD_STEP = 1e-4  # fourth-order central differences: truncation ~1e-16, rounding ~1e-10
FD_FLOOR = 1e-3  # relative error's denominator floor, for entries whose gradient is ~0
ENTRIES_PER_PARAM = 5
# Four scans make a gradient graph that takes ~30 s to compile; its forward pass is still
# checked, and its gradients take the same code paths as the stacked and the bidirectional ones.
NO_GRADIENT_CHECK = {"rnn-tanh-x2-bi-embed-nobias"}

# One model per entry, compiled once (log_probs and gradients) and shared by tests 1, 2, 3, 5, 6.
# Every cell single and stacked; bidirectional for every cell, stacked once; tied weights once.
CONFIGS = {
    "rnn-tanh": dict(cell="rnn-tanh"),
    "rnn-tanh-x2-bi-embed-nobias": dict(
        cell="rnn-tanh", layers=2, bidirectional=True, embedding_size=3, bias=False
    ),
    "rnn-relu-x2": dict(cell="rnn-relu", layers=2),
    "rnn-relu-bi-embed": dict(cell="rnn-relu", bidirectional=True, embedding_size=3),
    "gru-x2-embed": dict(cell="gru", layers=2, embedding_size=3),
    "gru-bi": dict(cell="gru", bidirectional=True),
    "lstm-x2-embed-tied": dict(cell="lstm", layers=2, embedding_size=HIDDEN, tie_weights=True),
    "lstm-bi": dict(cell="lstm", bidirectional=True),
}


def make_config(**overrides) -> ModelConfig:
    values = dict(vocab_size=VOCAB, hidden_size=HIDDEN, bptt_truncate=-1, dtype="float64")
    return ModelConfig(**{**values, **overrides})


def random_sentences(rng: np.random.Generator, lengths, vocab: int = VOCAB) -> list[np.ndarray]:
    """Sentences of random ids (markers included, as pad_batch expects)."""
    return [rng.integers(0, vocab, n).astype(np.int32) for n in lengths]


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def built(request):
    """(model, its default-init values, larger random values that make every nonlinearity bite)."""
    model = Model(make_config(**CONFIGS[request.param]), seed=3)
    init = model.params.values_dict()
    rng = np.random.default_rng(7)
    test_values = {name: rng.normal(0.0, 0.6, value.shape) for name, value in init.items()}
    return model, init, test_values


@pytest.fixture(scope="module")
def batch():
    """A left-padded batch of three sentences, T = 5: lengths 6, 4, 2 ids."""
    sentences = random_sentences(np.random.default_rng(11), [6, 4, 2])
    return pad_batch(sentences, dtype="float64")


def built_id(request) -> str:
    return request.node.callspec.params["built"]


# -- the numpy oracle ----------------------------------------------------------------------------


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def cell_step(cell: str, n: int, x_t, states, W_rec):
    """One step of `cell` on projected input x_t (B, G*H) and states [(B, H), ...]."""
    h_prev = states[0]
    if cell == "rnn-tanh":
        return [np.tanh(x_t + h_prev @ W_rec)]
    if cell == "rnn-relu":
        return [np.maximum(x_t + h_prev @ W_rec, 0.0)]
    if cell == "gru":
        z = sigmoid(x_t[:, :n] + h_prev @ W_rec[:, :n])
        r = sigmoid(x_t[:, n : 2 * n] + h_prev @ W_rec[:, n : 2 * n])
        c = np.tanh(x_t[:, 2 * n :] + (r * h_prev) @ W_rec[:, 2 * n :])
        return [(1 - z) * c + z * h_prev]
    if cell == "lstm":
        c_prev = states[1]
        pre = x_t + h_prev @ W_rec
        i, f, o = (sigmoid(pre[:, k * n : (k + 1) * n]) for k in range(3))
        c = f * c_prev + i * np.tanh(pre[:, 3 * n :])
        return [o * np.tanh(c), c]
    raise AssertionError(cell)


def numpy_stack(config: ModelConfig, values, stack: str, ids, mask) -> np.ndarray:
    """Top-layer outputs (T, B, H) of one recurrent stack, step by step."""
    steps, batch_size = ids.shape
    n = config.hidden_size
    if config.embedding_size:
        below = values["embed/W"][ids]  # (T, B, E)
    else:
        below = np.eye(config.vocab_size)[ids]  # one-hot (T, B, V)
    for layer in range(config.layers):
        name = f"{stack}{layer}/"
        projected = below @ values[name + "W_in"]
        if config.bias:
            projected = projected + values[name + "b"]
        n_states = 2 if config.cell == "lstm" else 1
        states = [np.zeros((batch_size, n)) for _ in range(n_states)]
        outputs = []
        for t in range(steps):
            new = cell_step(config.cell, n, projected[t], states, values[name + "W_rec"])
            m = mask[t][:, None]
            states = [m * s_new + (1 - m) * s_old for s_new, s_old in zip(new, states, strict=True)]
            outputs.append(states[0])
        below = np.stack(outputs)
    return below


def numpy_log_probs(config: ModelConfig, values, x, y, mask) -> np.ndarray:
    """(T, B) log p(y_t | ...), 0 where masked, computed without Aesara."""
    top = numpy_stack(config, values, "layer", x, mask)
    if config.bidirectional:
        back = numpy_stack(config, values, "back", y[::-1], mask[::-1])[::-1]
        after = np.zeros_like(back)
        after[:-1] = back[1:]  # y_t from the backward state at t + 1; zeros after the end
        top = np.concatenate([top, after], axis=2)
    out_W = values["embed/W"].T if config.tie_weights else values["out/W"]
    logits = top @ out_W
    if config.bias:
        logits = logits + values["out/b"]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    steps, batch_size = y.shape
    picked = log_p[np.arange(steps)[:, None], np.arange(batch_size)[None, :], y]
    return picked * mask


# -- 1. forward pass -----------------------------------------------------------------------------


def test_log_probs_match_numpy_loop(built, batch):
    model, _, values = built
    model.params.assign(values)
    x, y, mask = batch
    got = model.log_probs(x, y, mask)
    want = numpy_log_probs(model.config, values, x, y, mask)
    assert got.shape == x.shape
    assert np.all(got[mask == 0] == 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=FORWARD_TOLERANCE)


# -- 2. gradients --------------------------------------------------------------------------------


def test_gradients_match_central_differences(built, batch, request):
    model, _, values = built
    if built_id(request) in NO_GRADIENT_CHECK:
        pytest.skip("compile time: covered by the stacked and the bidirectional configs")
    model.params.assign(values)
    x, y, mask = batch
    grads = model.gradients(x, y, mask)
    assert list(grads) == list(model.params)
    rng = np.random.default_rng(5)

    def nll_at(name: str, index: tuple, delta: float) -> float:
        moved = values[name].copy()
        moved[index] += delta
        model.params[name].set_value(moved)
        return -float(model.log_probs(x, y, mask).sum())

    errors = {}
    for name, shared in model.params.items():
        value = values[name]
        assert grads[name].shape == value.shape, name
        flat = rng.choice(value.size, size=min(ENTRIES_PER_PARAM, value.size), replace=False)
        for index in zip(*np.unravel_index(flat, value.shape), strict=True):
            h = FD_STEP
            # f'(p) = (f(p-2h) - 8 f(p-h) + 8 f(p+h) - f(p+2h)) / 12h + O(h^4)
            numeric = (
                nll_at(name, index, -2 * h)
                - 8 * nll_at(name, index, -h)
                + 8 * nll_at(name, index, h)
                - nll_at(name, index, 2 * h)
            ) / (12 * h)
            shared.set_value(value)
            symbolic = grads[name][index]
            scale = max(abs(numeric), abs(symbolic), FD_FLOOR)
            errors[f"{name}{list(index)}"] = abs(numeric - symbolic) / scale
    worst = max(errors, key=errors.get)
    assert errors[worst] < GRADIENT_TOLERANCE, (worst, errors[worst])


# -- 3. loss at initialisation -------------------------------------------------------------------


def test_loss_at_init_is_near_log_vocab(built):
    model, init, _ = built
    model.params.assign(init)
    x, y, mask = pad_batch(random_sentences(np.random.default_rng(2), [6] * 8), dtype="float64")
    per_token = -model.log_probs(x, y, mask).sum() / mask.sum()
    assert abs(per_token - np.log(VOCAB)) < 0.1


def test_loss_at_init_is_near_log_vocab_for_a_larger_vocabulary():
    vocab = 50
    model = Model(make_config(vocab_size=vocab, hidden_size=5, cell="lstm", embedding_size=4))
    sentences = random_sentences(np.random.default_rng(4), [6] * 10, vocab)
    x, y, mask = pad_batch(sentences, dtype="float64")
    per_token = -model.log_probs(x, y, mask).sum() / mask.sum()
    assert abs(per_token - np.log(vocab)) < 0.1


# -- 4. overfitting a tiny corpus ----------------------------------------------------------------

TINY_CORPUS = [  # 0 = start, 1 = end; each sentence is determined by its first word
    [0, 2, 3, 4, 5, 6, 7, 8, 9, 1],
    [0, 8, 5, 4, 3, 9, 2, 2, 1],
    [0, 10, 11, 9, 7, 6, 5, 4, 3, 1],
]
TRAIN_STEPS = 80  # all three cells sit within 0.01 of the floor after about 50


def entropy_floor(sentences) -> float:
    """The least per-token NLL any model can reach: the corpus's prefix-tree conditional entropy."""
    prefixes = Counter(tuple(s[:k]) for s in sentences for k in range(1, len(s)))
    extended = Counter(tuple(s[: k + 1]) for s in sentences for k in range(1, len(s)))
    total = sum(len(s) - 1 for s in sentences)
    nll = sum(
        -np.log(extended[tuple(s[: k + 1])] / prefixes[tuple(s[:k])])
        for s in sentences
        for k in range(1, len(s))
    )
    return nll / total


@pytest.mark.parametrize("cell", ["rnn-tanh", "gru", "lstm"])
def test_tiny_model_overfits_tiny_corpus(cell):
    floor = entropy_floor(TINY_CORPUS)  # ln 3 on each first word: 0.13 per token
    config = make_config(vocab_size=12, hidden_size=16, cell=cell, embedding_size=8)
    model = Model(config, seed=0)
    train = TrainConfig(optimizer="adam", learning_rate=0.05)
    lr = backend.shared(np.asarray(train.learning_rate, dtype=config.dtype), name="lr")
    step = model.compile_train_step(lambda params, grads: updates_for(train, params, grads, lr)[0])
    x, y, mask = pad_batch([np.asarray(s, np.int32) for s in TINY_CORPUS], dtype="float64")
    states = model.initial_states(x.shape[1])
    first, _, *_ = step(x, y, mask, *states)
    for _ in range(TRAIN_STEPS):
        nll, tokens, *_ = step(x, y, mask, *states)
    per_token = float(nll / tokens)
    assert per_token < float(first / tokens) / 5
    assert per_token < floor + 0.05 < 0.3, (per_token, floor)


# -- 5. causality --------------------------------------------------------------------------------


def test_later_words_do_not_change_earlier_log_probs_unless_bidirectional(built):
    model, _, values = built
    model.params.assign(values)
    ids = random_sentences(np.random.default_rng(8), [7])[0]
    k = 3  # change target y_k (= ids[k + 1], which is also the input x_{k+1})
    changed = ids.copy()
    changed[k + 1] = (ids[k + 1] + 1) % VOCAB
    before = model.log_probs(*pad_batch([ids], dtype="float64"))[:, 0]
    after = model.log_probs(*pad_batch([changed], dtype="float64"))[:, 0]
    earlier_same = np.allclose(before[:k], after[:k], rtol=0, atol=1e-12)
    if model.config.bidirectional:
        assert not earlier_same, "a bidirectional model must see later words"
    else:
        assert earlier_same, np.abs(before[:k] - after[:k]).max()
    assert not np.isclose(before[k], after[k])  # the changed target itself


# -- 6. padding invariance -----------------------------------------------------------------------


def test_log_probs_do_not_depend_on_padding(built):
    model, _, values = built
    model.params.assign(values)
    short, long = random_sentences(np.random.default_rng(9), [4, 7])
    alone = model.log_probs(*pad_batch([short], dtype="float64"))[:, 0]
    x, y, mask = pad_batch([long, short], dtype="float64")
    padded = model.log_probs(x, y, mask)[:, 1]
    steps = len(short) - 1
    np.testing.assert_array_equal(padded[:-steps], 0.0)
    np.testing.assert_allclose(padded[-steps:], alone, rtol=0, atol=1e-12)


# -- 7. dropout ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dropout_model():
    config = make_config(cell="gru", layers=2, embedding_size=3, dropout=0.5)
    model = Model(config, seed=0)
    rng = np.random.default_rng(6)
    model.params.assign(
        {name: rng.normal(0.0, 0.6, v.shape) for name, v in model.params.values_dict().items()}
    )
    # No updates: the parameters stay put, so outputs differ only through the dropout masks.
    step = model.compile_train_step(lambda params, grads: {})
    return model, step


def test_dropout_masks_follow_the_seed_in_training(dropout_model, batch):
    model, step = dropout_model
    x, y, mask = batch
    states = model.initial_states(x.shape[1])

    def run(seed: int) -> float:
        model.reseed(seed)
        return float(step(x, y, mask, *states)[0])

    first, other, again = run(1), run(2), run(1)
    assert first != other
    assert first == again
    assert float(step(x, y, mask, *states)[0]) != again  # the stream moves on between calls


def test_no_dropout_in_evaluation(dropout_model, batch):
    model, step = dropout_model
    x, y, mask = batch
    values = model.params.values_dict()
    model.reseed(1)
    once = model.log_probs(x, y, mask)
    model.reseed(2)
    twice = model.log_probs(x, y, mask)
    np.testing.assert_array_equal(once, twice)
    # and no rescaling either: evaluation is the plain (dropout-free) model
    want = numpy_log_probs(model.config, values, x, y, mask)
    np.testing.assert_allclose(once, want, rtol=0, atol=FORWARD_TOLERANCE)
    model.reseed(1)
    trained_nll = float(step(x, y, mask, *model.initial_states(x.shape[1]))[0])
    assert not np.isclose(trained_nll, -once.sum())  # while training, dropout is on
