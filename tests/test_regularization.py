"""Variational dropout, embedding dropout and weight drop (`rnnlm.regularization`): their
masks measured, the training graph held to a plain graph that reads the dropped weights,
evaluation untouched, the masks of a distributed shard those of its global batch, and the
defaults the old model's.

A model with weight drop and embedding dropout is compared with a plain (`fused = false`,
nothing dropped) model whose W_rec holds the very matrix the training step used, and whose
embedding has the step's dropped words zeroed and the rest scaled: the same loss, and
dL/dW = mask * dL/dW_dropped / keep. All float64.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import backend, checkpoint, regularization
from rnnlm.backend import RandomStream
from rnnlm.backend import tensor as tt
from rnnlm.batches import pad_batch
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.launch import init_config
from rnnlm.model import Model, init_params
from rnnlm.vocab import build_vocabulary, count_tokens

VOCAB, HIDDEN, RATE = 11, 4, 0.4
TOLERANCE = 1e-10


def make_config(**overrides) -> ModelConfig:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        cell="lstm",
        layers=2,
        embedding_size=3,
        bptt_truncate=-1,
        dtype="float64",
    )
    return ModelConfig(**{**values, **overrides})


def random_values(model: Model, seed: int) -> dict[str, np.ndarray]:
    """Values large enough that every gate bites, so a wrong mask shows in the loss."""
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, 0.6, v.shape) for name, v in model.params.values_dict().items()}


@pytest.fixture(scope="module")
def batch():
    """A left-padded batch of three sentences, T = 5: lengths 6, 4, 2 ids."""
    rng = np.random.default_rng(11)
    sentences = [rng.integers(0, VOCAB, n).astype(np.int32) for n in (6, 4, 2)]
    return pad_batch(sentences, dtype="float64")


def within(share: float, rate: float, n: int) -> bool:
    """A measured share of n Bernoulli(rate) draws within 5 standard deviations of rate."""
    return abs(share - rate) < 5 * math.sqrt(rate * (1 - rate) / n)


# -- the masks, measured ---------------------------------------------------------------------------


def dropout_function(rate: float, variational: bool, seed: int = 3):
    h = tt.tensor3("h", dtype="float64")  # (T, B, D)
    model = Model(make_config(dropout=rate, variational_dropout=variational), seed=seed)
    return backend.function([h], model._dropout(h, train=True))


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_variational_dropout_keeps_one_mask_per_column_for_every_step(rate):
    """On a constant input (T, B, D) = (30, 60, 50): the mask is the same at every step, the
    columns' masks differ, its share of zeros is the rate (measured over B * D units), kept
    units are scaled by exactly 1 / (1 - rate), and the next call draws a new mask."""
    drop = dropout_function(rate, variational=True)
    value = np.full((30, 60, 50), 2.0)
    out = drop(value)
    zeros = out == 0
    assert (zeros == zeros[:1]).all()  # identical across time steps
    columns = {zeros[0, b].tobytes() for b in range(zeros.shape[1])}
    assert len(columns) == zeros.shape[1]  # and different across columns
    assert within(zeros[0].mean(), rate, zeros[0].size), zeros[0].mean()
    np.testing.assert_allclose(out[~zeros], 2.0 / (1 - rate), rtol=1e-15)
    assert not np.array_equal(drop(value) == 0, zeros)


def test_standard_dropout_is_unchanged_a_mask_per_step():
    drop = dropout_function(0.5, variational=False)
    zeros = drop(np.full((30, 60, 50), 2.0)) == 0
    assert within(zeros.mean(), 0.5, zeros.size)
    assert not (zeros == zeros[:1]).all()


@pytest.mark.parametrize("variational", [True, False], ids=["variational", "standard"])
def test_a_shards_masks_are_its_columns_of_the_global_batchs(variational):
    """Drawn with the same seed, shard (offset 2, 3 of 7 columns) = columns 2..4 of the whole."""
    h = tt.tensor3("h", dtype="float64")
    offset, columns = tt.iscalar("offset"), tt.iscalar("columns")

    def compiled(shard):
        out = regularization.dropout(RandomStream(5), h, 0.5, variational, shard)
        return backend.function([h, offset, columns], out, on_unused_input="ignore")

    value = np.full((6, 7, 20), 3.0)
    whole = compiled(None)(value, 0, 7)
    part = compiled((offset, columns))(value[:, 2:5], 2, 7)
    np.testing.assert_array_equal(part, whole[:, 2:5])
    assert (whole == 0).any() and (whole != 0).any()


def test_weight_drop_zeroes_its_rate_of_entries_and_scales_the_rest():
    """On a constant (300, 400) matrix: the share of zeros is the rate, the kept entries are
    scaled by 1 / (1 - rate), the mean stays, and every call draws a new mask."""
    rate = 0.3
    W = backend.shared(np.full((300, 400), 2.0), name="W_rec")
    drop = backend.function([], regularization.weight_drop(RandomStream(4), W, rate))
    out = drop()
    zeros = out == 0
    assert within(zeros.mean(), rate, zeros.size), zeros.mean()
    np.testing.assert_allclose(out[~zeros], 2.0 / (1 - rate), rtol=1e-15)
    assert abs(out.mean() - 2.0) < 5 * 2.0 * math.sqrt(rate / ((1 - rate) * out.size))
    assert not np.array_equal(drop() == 0, zeros)


def test_word_dropout_drops_its_rate_of_the_vocabulary_everywhere():
    """3,000 words, each at 5 places (T, B) = (5, 3000): a word is zeroed at all its places or
    none, the share of words zeroed is the rate, the rest scaled by exactly 1 / (1 - rate)."""
    rate, vocab = 0.3, 3000
    rows, ids = tt.tensor3("rows", dtype="float64"), tt.imatrix("ids")
    out = regularization.word_dropout(RandomStream(6), rows, ids, vocab, rate)
    drop = backend.function([rows, ids], out)
    rng = np.random.default_rng(0)
    words = np.stack([rng.permutation(vocab) for _ in range(5)]).astype(np.int32)
    value = np.full((5, vocab, 2), 2.0)
    result = drop(value, words)
    zeros = result[:, :, 0] == 0
    by_word = np.stack([zeros[t][np.argsort(words[t])] for t in range(5)])  # (5, V)
    assert (by_word == by_word[:1]).all()
    assert within(by_word[0].mean(), rate, vocab), by_word[0].mean()
    np.testing.assert_allclose(result[~zeros], 2.0 / (1 - rate), rtol=1e-15)


# -- weight drop in the model, against a plain graph on the dropped matrix -------------------------


@pytest.fixture(scope="module")
def plain():
    """The oracle: the plain graph of small ops, without any dropout or weight drop."""
    return Model(make_config(fused=False), seed=3)


@dataclasses.dataclass
class Step:
    """One training step of a regularised model, by parameter: what its graph read (each
    layer's dropped W_rec; for "embed/W", the embedded rows (T, B, E)) and dL/d the parameter."""

    nll: float
    grads: dict[str, np.ndarray]
    read: dict[str, np.ndarray]


# The fused op in C (FAST_RUN) and in numpy (the suite's FAST_COMPILE), and the plain graph.
LINKERS = {"fused-c": (True, "FAST_RUN"), "fused-py": (True, None), "plain": (False, None)}


@pytest.fixture(scope="module", params=list(LINKERS))
def regularized(request, batch):
    """(model with weight drop and embedding dropout, its values, two training steps at those
    values), what each step read taken from the training graph itself."""
    fused, mode = LINKERS[request.param]
    config = make_config(weight_drop=RATE, embedding_dropout=RATE, fused=fused)
    model = Model(config, seed=3, compile_mode=mode)
    values = random_values(model, 6)
    model.params.assign(values)
    read = {}
    recurrent_matrix, embedded = model._recurrent_matrix, model._embedded

    def capture_matrix(layer: str, train: bool):
        read[layer + "W_rec"] = recurrent_matrix(layer, train)
        return read[layer + "W_rec"]

    def capture_rows(key: str, ids, train: bool):
        read[key] = embedded(key, ids, train)
        return read[key]

    model._recurrent_matrix, model._embedded = capture_matrix, capture_rows
    x, y, mask, initial = model._inputs()
    draws_before = len(model.random.state_updates)
    nll, _ = model._nll(x, y, mask, initial, train=True)
    # a weight-drop mask per layer and a word mask, nothing else
    assert len(model.random.state_updates) == draws_before + 3
    names = list(read)
    grads = backend.grad(nll, [model.params[name] for name in names])
    outputs = [nll, *grads, *read.values()]
    train = backend.function([x, y, mask, *initial], outputs, mode=model.compile_mode)
    model._recurrent_matrix, model._embedded = recurrent_matrix, embedded

    def step() -> Step:
        nll, *rest = train(*batch, *model.initial_states(batch[0].shape[1]))
        grads, read = rest[: len(names)], rest[len(names) :]
        return Step(nll, dict(zip(names, grads, strict=True)), dict(zip(names, read, strict=True)))

    model.reseed(9)
    return model, values, step(), step()  # the second with the next step's masks


def kept_words(step: Step, values: dict, x: np.ndarray) -> np.ndarray:
    """(V,) 0 for each word of x the step dropped, else 1; checked to be one decision per
    word: its rows all zero, or all its embedding / keep."""
    rows, keep = step.read["embed/W"], np.ones(VOCAB)
    for word in np.unique(x):
        at = rows[x == word]  # (n, E)
        if (at == 0).all():
            keep[word] = 0
        else:
            want = np.broadcast_to(values["embed/W"][word] / (1 - RATE), at.shape)
            np.testing.assert_allclose(at, want, rtol=1e-15)
    return keep


def dropped_values(values: dict, step: Step, x: np.ndarray) -> dict[str, np.ndarray]:
    """The values whose plain forward pass is the step's: the dropped W_rec, and the
    embedding with the dropped words' rows zero and the rest scaled."""
    words = kept_words(step, values, x)[:, None] / (1 - RATE)
    matrices = {name: W for name, W in step.read.items() if name.endswith("W_rec")}
    return values | matrices | {"embed/W": values["embed/W"] * words}


def test_training_reads_the_dropped_weights(regularized, plain, batch):
    model, values, step, _ = regularized
    plain.params.assign(dropped_values(values, step, batch[0]))
    want = -plain.log_probs(*batch).sum()
    assert step.nll == pytest.approx(want, rel=TOLERANCE, abs=0)


def test_weight_drop_masks_w_rec_and_scales_the_rest(regularized):
    model, values, step, next_step = regularized
    keep = 1 - RATE
    matrices = [name for name in step.read if name.endswith("W_rec")]
    for name in matrices:
        W, kept = step.read[name], step.read[name] != 0
        np.testing.assert_allclose(W[kept], values[name][kept] / keep, rtol=1e-15)
        assert 0 < kept.mean() < 1
        assert not np.array_equal(next_step.read[name] != 0, kept)  # new every step
    first, second = (step.read[name] for name in matrices)
    assert not np.array_equal(first != 0, second != 0)  # and one mask per layer


def test_embedding_dropout_drops_whole_words(regularized, batch):
    """Each word of the batch dropped everywhere or nowhere (`kept_words` checks it), some of
    each over two steps (7 words), and the next step decides anew."""
    model, values, step, next_step = regularized
    x = batch[0]
    kept, next_kept = (kept_words(s, values, x)[np.unique(x)] for s in (step, next_step))
    assert 0 < np.concatenate([kept, next_kept]).mean() < 1
    assert not np.array_equal(kept, next_kept)


def test_the_gradients_reach_the_weights_through_the_masks(regularized, plain, batch):
    """dL/dW_rec = mask * dL/dW_dropped / keep, and likewise for the embedding's rows, with
    dL/dW_dropped from the plain graph's gradient at the dropped values."""
    model, values, step, _ = regularized
    plain.params.assign(dropped_values(values, step, batch[0]))
    oracle = plain.gradients(*batch)
    masks = {name: W != 0 for name, W in step.read.items() if name.endswith("W_rec")}
    masks["embed/W"] = kept_words(step, values, batch[0])[:, None]
    for name, mask in masks.items():
        want = mask * oracle[name] / (1 - RATE)
        np.testing.assert_allclose(step.grads[name], want, rtol=TOLERANCE, atol=1e-13)
        assert np.abs(step.grads[name]).max() > 1e-3


def test_none_in_evaluation(regularized, plain, batch):
    """Evaluation, scoring and generation graphs draw nothing, and read the weights as they
    are."""
    model, values, _, _ = regularized
    x, y, mask, initial = model._inputs()
    draws = len(model.random.state_updates)
    model._top(x, y, mask, initial, train=False)
    model._stack("layer", x, mask, initial, train=False)
    assert len(model.random.state_updates) == draws
    plain.params.assign(values)
    model.reseed(1)
    once = model.log_probs(*batch)
    model.reseed(2)
    np.testing.assert_array_equal(model.log_probs(*batch), once)
    np.testing.assert_allclose(once, plain.log_probs(*batch), rtol=0, atol=TOLERANCE)


# -- distributed shards, and the defaults ----------------------------------------------------------


def test_shards_add_up_to_the_global_batch_with_every_option(batch):
    """Reseeded alike, shards {0, 1} and {2} of the batch give the whole batch's loss and
    gradient sums: their dropout masks are the global batch's, their weight-drop and word
    masks one. One-hot input: the words dropped are rows of layer0/W_in."""
    options = dict(dropout=0.5, variational_dropout=True, embedding_dropout=0.5, weight_drop=0.5)
    config = make_config(cell="gru", embedding_size=0, **options)
    model = Model(config, seed=2)
    model.params.assign(random_values(model, 4))
    sums = model.compile_gradient_sums()
    x, y, mask = batch
    n = len(model.params)

    def run(start: int, stop: int) -> list[np.ndarray]:
        model.reseed(8)
        part = (x[:, start:stop], y[:, start:stop], mask[:, start:stop])
        return sums(*part, start, 3, *model.initial_states(stop - start))[: n + 1]

    whole, first, second = run(0, 3), run(0, 2), run(2, 3)
    for total, a, b in zip(whole, first, second, strict=True):
        np.testing.assert_allclose(a + b, total, rtol=TOLERANCE, atol=1e-13)
    model.reseed(8)
    unmasked = model.log_probs(x, y, mask).sum()
    assert not np.isclose(whole[n], -unmasked)  # the masks did drop something


def test_defaults_give_the_loss_of_the_model_before_these_options(batch):
    """The default config (standard dropout, no weight drop) draws what it drew before: the
    training losses below were measured by these same calls on rnnlm at f5446b8, before
    these options existed (Aesara and PyTensor alike, fused and not)."""
    config = make_config(dropout=0.3)
    assert not config.variational_dropout and config.weight_drop == config.embedding_dropout == 0
    model = Model(config, seed=5)
    sums = model.compile_gradient_sums()
    x, y, mask = batch
    n = len(model.params)
    model.reseed(7)
    whole = sums(x, y, mask, 0, 3, *model.initial_states(3))[n]
    model.reseed(7)
    shard = sums(x[:, 1:], y[:, 1:], mask[:, 1:], 1, 3, *model.initial_states(2))[n]
    assert float(whole) == pytest.approx(21.580825311820824, rel=1e-12)
    assert float(shard) == pytest.approx(9.59900323485935, rel=1e-12)


# -- config, checkpoint, info --------------------------------------------------------------------


def test_bad_values_are_one_line_errors_naming_the_key():
    with pytest.raises(RnnlmError, match="model.weight_drop"):
        make_config(weight_drop=1.0)
    with pytest.raises(RnnlmError, match="model.embedding_dropout"):
        make_config(embedding_dropout=-0.1)
    with pytest.raises(RnnlmError, match="model.variational_dropout"):
        Config.from_dict({"model": {"variational_dropout": "yes"}})


def test_checkpoint_and_info_keep_the_new_settings(tmp_path):
    corpus = ["the cat sat on the mat".split(), "a dog sat on a log".split()]
    vocab = build_vocabulary(count_tokens(corpus), 50)
    model = ModelConfig(vocab_size=len(vocab), hidden_size=4, cell="lstm", dropout=0.5)
    new = dict(variational_dropout=True, embedding_dropout=0.1, weight_drop=0.25)
    model = dataclasses.replace(model, **new)
    config = Config(data=DataConfig(corpus="c.txt"), model=model)
    params = init_params(model, np.random.default_rng(0))
    path = tmp_path / "m.npz"
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params, {"step": 0}))
    assert checkpoint.load(path).config == config
    result = CliRunner().invoke(main, ["info", "--model", str(path)])
    assert result.exit_code == 0, result.output
    for key, value in new.items():
        assert f"{key}={value}" in result.output
    result = CliRunner().invoke(main, ["info", "--model", str(path), "--json"])
    shown = json.loads(result.output)["config"]["model"]
    assert {key: shown[key] for key in new} == new


def test_train_has_the_options():
    text = CliRunner().invoke(main, ["train", "--help"]).output
    for option in ("--variational-dropout", "--embedding-dropout", "--weight-drop"):
        assert option in text


def test_fine_tuning_may_change_them():
    """They change no parameter, so `train --init-from` may set them anew."""
    new = {"variational_dropout": True, "embedding_dropout": 0.1, "weight_drop": 0.3}
    config = init_config(Config(), None, {"model": new})
    assert {key: getattr(config.model, key) for key in new} == new
