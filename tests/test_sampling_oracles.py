"""Sampling and fill-in-the-blank, through the command line, against the model's one-step
function: seeds that must and must not change the samples, the first word's frequencies
against its distribution, and `fill` on a left-to-right model against the distribution at
the blank."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.generate import sample
from rnnlm.model import Model
from rnnlm.vocab import build_vocabulary, count_tokens

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat saw a dog",
    "the dog ran to a red ball",
    "my sister likes the river",
]


def invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A float64 left-to-right model with random weights, as a checkpoint; and its vocabulary."""
    vocab = build_vocabulary(count_tokens([s.split() for s in CORPUS]), 50)
    config = ModelConfig(
        vocab_size=len(vocab), hidden_size=6, cell="gru", embedding_size=5, dtype="float64"
    )
    rng = np.random.default_rng(4)
    params = {
        name: rng.normal(0.0, 0.8, value.shape)
        for name, value in Model(config).params.values_dict().items()
    }
    path = tmp_path_factory.mktemp("sampling") / "m.npz"
    full = Config(data=DataConfig(vocab_size=len(vocab)), model=config)
    checkpoint.save(path, checkpoint.Checkpoint(full, vocab, params))
    return path, vocab


@pytest.fixture(scope="module")
def model(saved):
    path, _ = saved
    ckpt = checkpoint.load(path)
    return Model(ckpt.config.model, params=ckpt.params)


def next_word_probs(model: Model, vocab, words: list[str]) -> np.ndarray:
    """p(next | SENTENCE_START words) by feeding the one-step function a word at a time."""
    states = model.initial_states(1)
    for word_id in [vocab.start_id, *vocab.ids(words)]:
        logits, states = model.step(np.array([word_id], np.int32), states)
    logits = logits[0].astype(np.float64)
    return np.exp(logits - np.logaddexp.reduce(logits))


# -- sampling ------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_samples_and_another_seed_others(saved):
    path, _ = saved
    first = invoke("sample", "--model", path, "-n", 6, "--seed", 1, "--json")
    again = invoke("sample", "--model", path, "-n", 6, "--seed", 1, "--json")
    other = invoke("sample", "--model", path, "-n", 6, "--seed", 2, "--json")
    assert first == again
    texts = [s["text"] for s in json.loads(first)]
    other_texts = [s["text"] for s in json.loads(other)]
    # Sentences of several words each from 17 words and SENTENCE_END: two seeds drawing
    # the same sentence would be a fluke, and seeds 1 and 2 draw six different ones.
    assert all(a != b for a, b in zip(texts, other_texts, strict=True)), (texts, other_texts)


def test_first_words_are_drawn_from_the_models_distribution(model, saved):
    """4,000 first words against p(w | SENTENCE_START) from the one-step function, with the
    markers and UNKNOWN_TOKEN left out and the rest renormalised: every word's count within
    five standard deviations of its expectation."""
    _, vocab = saved
    draws = 4000
    drawn = sample(model, vocab, np.random.default_rng(7), draws, max_length=1)
    counts = np.zeros(len(vocab))
    for [(word, _)] in drawn:
        counts[vocab.words.index(word)] += 1
    probs = next_word_probs(model, vocab, [])
    excluded = [vocab.start_id, vocab.end_id, vocab.unknown_id]  # END: not before one word
    assert counts[excluded].sum() == 0
    probs[excluded] = 0
    probs /= probs.sum()
    expected = draws * probs
    spread = np.sqrt(draws * probs * (1 - probs))
    worst = np.max(np.abs(counts - expected) / np.maximum(spread, 1e-12))
    assert worst < 5, (counts, expected)
    assert probs.max() > 2 * probs[probs > 0].min()  # not uniform: the check can tell


# -- fill on a left-to-right model ---------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence, before",
    [("the cat ___ on the mat", ["the", "cat"]), ("___ dog ran", [])],
    ids=["middle", "first"],
)
def test_fill_on_a_left_to_right_model_is_the_next_word_distribution(
    saved, model, sentence, before
):
    path, vocab = saved
    got = json.loads(invoke("fill", "--model", path, sentence, "--top-k", 5, "--json"))
    probs = next_word_probs(model, vocab, before)
    order = [i for i in np.argsort(-probs) if vocab.words[i] not in (vocab.start, vocab.end)]
    order = [i for i in order if i != vocab.unknown_id][:5]
    assert [c["word"] for c in got] == [vocab.words[i] for i in order]
    np.testing.assert_allclose([c["prob"] for c in got], probs[order], rtol=1e-10)
    # The probabilities are the model's own, not renormalised over the words shown.
    assert math.fsum(c["prob"] for c in got) < 1


def test_fill_on_a_left_to_right_model_ignores_the_words_after_the_blank(saved):
    path, _ = saved
    one = invoke("fill", "--model", path, "the cat ___ on the mat", "--json")
    other = invoke("fill", "--model", path, "the cat ___ a red ball", "--json")
    assert one == other
