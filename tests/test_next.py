"""The next-word distribution: a probability distribution, the same as stepping the model one
token at a time, and the same for a context read alone or beside longer ones."""

import numpy as np
import pytest

from rnnlm.config import ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.generate import softmax
from rnnlm.model import Model
from rnnlm.next_word import next_distribution, next_words
from rnnlm.vocab import build_vocabulary, count_tokens

CORPUS = [
    "the cat sat on the mat".split(),
    "the dog sat on the log".split(),
    "a cat saw a dog".split(),
]
CONTEXTS = [[], "the cat sat on the".split(), ["a"], "the zebra sat".split()]
TOLERANCE = {"float64": 1e-12, "float32": 2e-6}  # float32: batch sizes round differently


@pytest.fixture(scope="module")
def vocab():
    return build_vocabulary(count_tokens(CORPUS), 50)


@pytest.fixture(scope="module", params=["float64", "float32"])
def model(request, vocab):
    config = ModelConfig(
        vocab_size=len(vocab), hidden_size=7, cell="lstm", layers=2, embedding_size=5,
        dtype=request.param,
    )  # fmt: skip
    return Model(config, seed=3)


def stepped(model, vocab, tokens):
    """The oracle: SENTENCE_START and the words fed one at a time to the one-step function."""
    states = model.initial_states(1)
    for token_id in [vocab.start_id, *vocab.ids(tokens)]:
        logits, states = model.step(np.array([token_id]), states)
    return softmax(np.asarray(logits, dtype=np.float64))[0]


def test_each_row_is_a_distribution_over_the_whole_vocabulary(model, vocab):
    probs = next_distribution(model, vocab, CONTEXTS)
    assert probs.shape == (len(CONTEXTS), len(vocab))
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_it_is_what_stepping_one_token_at_a_time_gives(model, vocab):
    probs = next_distribution(model, vocab, CONTEXTS)
    for row, tokens in enumerate(CONTEXTS):
        expected = stepped(model, vocab, tokens)
        np.testing.assert_allclose(probs[row], expected, atol=TOLERANCE[model.config.dtype])


def test_a_context_reads_the_same_alone_and_beside_longer_ones(model, vocab):
    alone = next_distribution(model, vocab, [["a"]])[0]
    together = next_distribution(model, vocab, CONTEXTS)[2]
    np.testing.assert_allclose(alone, together, atol=TOLERANCE[model.config.dtype])


def test_top_k_is_sorted_sums_to_at_most_one_and_never_offers_sentence_start(model, vocab):
    (candidates,) = next_words(model, vocab, ["the cat".split()], top_k=5)
    probs = [p for _, p in candidates]
    assert len(candidates) == 5
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1
    everything = next_words(model, vocab, ["the cat".split()], top_k=10_000)[0]
    assert len(everything) == len(vocab) - 1
    assert vocab.start not in [word for word, _ in everything]
    assert sum(p for _, p in everything) == pytest.approx(
        1 - next_distribution(model, vocab, ["the cat".split()])[0, vocab.start_id], abs=1e-9
    )
    full = dict(everything)
    assert candidates == [(word, full[word]) for word, _ in candidates]  # the model's own numbers


def test_sentence_end_and_the_unknown_token_are_candidates(model, vocab):
    shared = model.params["out/b"]
    saved = shared.get_value()
    rigged = saved.copy()
    rigged[vocab.end_id] += 50
    rigged[vocab.unknown_id] += 45
    shared.set_value(rigged)
    try:
        (candidates,) = next_words(model, vocab, [["the"]], top_k=2)
    finally:
        shared.set_value(saved)
    assert [word for word, _ in candidates] == [vocab.end, vocab.unknown]


def test_bad_requests(model, vocab):
    with pytest.raises(RnnlmError, match="top-k"):
        next_words(model, vocab, [["the"]], top_k=0)
    bidirectional = Model(ModelConfig(vocab_size=len(vocab), hidden_size=3, bidirectional=True))
    with pytest.raises(RnnlmError, match="fill"):
        next_words(bidirectional, vocab, [["the"]])
