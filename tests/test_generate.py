"""Sampling and scoring, held against the model's own scan and one-step functions; `rnnlm
sample`'s --prompt, --greedy and --top-k through the command line."""

import contextlib
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.evaluate import BATCH_SIZE
from rnnlm.generate import corpus_perplexity, sample, score
from rnnlm.model import Model
from rnnlm.terminal import TokenProgress
from rnnlm.vocab import build_vocabulary, count_tokens

CORPUS = [
    "the cat sat on the mat".split(),
    "the dog sat on the log".split(),
    "a cat saw a dog".split(),
    "the dog ran".split(),
]
TEXTS = ["the cat ran", "a dog sat on the mat", "cat", "the zebra sat on a log ."]


@pytest.fixture(scope="module")
def vocab():
    return build_vocabulary(count_tokens(CORPUS), 50)


@pytest.fixture(scope="module")
def model(vocab):
    """One compiled float64 model for the whole module; tests that rig weights restore them."""
    config = ModelConfig(vocab_size=len(vocab), hidden_size=6, bias=True, dtype="float64")
    return Model(config, seed=1)


@contextlib.contextmanager
def output_bias(model, changes):
    """Temporarily add to the output bias: +big makes a word near certain, -big impossible."""
    shared = model.params["out/b"]
    saved = shared.get_value()
    rigged = saved.copy()
    for word_id, delta in changes.items():
        rigged[word_id] += delta
    shared.set_value(rigged)
    try:
        yield
    finally:
        shared.set_value(saved)


def draw(model, vocab, seed=0, n=8, **kwargs):
    """Sampled sentences as token lists (the probabilities dropped)."""
    drawn = sample(model, vocab, np.random.default_rng(seed), n, **kwargs)
    return [[token for token, _ in sentence] for sentence in drawn]


# -- sampling ---------------------------------------------------------------------------------


def test_sample_returns_n_sentences_of_vocabulary_words(model, vocab):
    sentences = draw(model, vocab, n=5)
    assert len(sentences) == 5
    assert all(sentence and all(word in vocab for word in sentence) for sentence in sentences)


def test_sample_never_emits_markers_or_unknown_even_when_they_are_near_certain(model, vocab):
    big = 1e3
    with output_bias(model, {vocab.unknown_id: big, vocab.start_id: big}):
        sentences = draw(model, vocab, n=20, max_length=10)
    words = {word for sentence in sentences for word in sentence}
    assert words and not words & {vocab.unknown, vocab.start, vocab.end}


def test_sample_stops_at_max_length(model, vocab):
    with output_bias(model, {vocab.end_id: -1e3}):  # the sentence would never end
        sentences = draw(model, vocab, max_length=7)
    assert [len(s) for s in sentences] == [7] * len(sentences)


def test_sample_never_ends_before_min_length(model, vocab):
    with output_bias(model, {vocab.end_id: 1e3}):  # SENTENCE_END as soon as it is allowed
        sentences = draw(model, vocab, min_length=4, max_length=10)
    assert [len(s) for s in sentences] == [4] * len(sentences)


def test_sample_is_reproducible_from_the_seed(model, vocab):
    assert draw(model, vocab, seed=5) == draw(model, vocab, seed=5)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_sample_rejects_a_temperature_that_is_not_positive(model, vocab, temperature):
    with pytest.raises(RnnlmError, match="temperature"):
        draw(model, vocab, temperature=temperature)


def test_sample_rejects_a_nan_temperature(model, vocab):
    with pytest.raises(RnnlmError, match="temperature"):
        draw(model, vocab, temperature=float("nan"))


def test_sample_rejects_min_length_above_max_length(model, vocab):
    with pytest.raises(RnnlmError, match="min_length"):
        draw(model, vocab, min_length=5, max_length=4)


def test_greedy_sampling_takes_the_likeliest_word_every_time(model, vocab):
    [sentence] = sample(model, vocab, np.random.default_rng(0), 1, greedy=True, max_length=6)
    states = model.initial_states(1)
    ids = np.array([vocab.start_id], dtype=np.int32)
    for token, prob in sentence:
        logits, states = model.step(ids, states)
        probs = np.exp(logits[0] - np.logaddexp.reduce(logits[0].astype(np.float64)))
        probs[[vocab.unknown_id, vocab.start_id]] = 0
        assert vocab.words[int(np.argmax(probs))] == token
        assert prob == pytest.approx(probs[int(vocab.ids([token])[0])], rel=1e-5)
        ids = np.array([int(vocab.ids([token])[0])], dtype=np.int32)


def test_top_k_draws_only_from_the_k_likeliest_words(model, vocab):
    states = model.initial_states(1)
    logits, _ = model.step(np.array([vocab.start_id], dtype=np.int32), states)
    allowed = {vocab.words[i] for i in np.argsort(-logits[0])[:2]}
    firsts = {s[0] for s in draw(model, vocab, n=40, top_k=2, max_length=1) if s}
    assert firsts <= allowed and firsts


def test_a_prompt_opens_every_sentence(model, vocab):
    prompt = vocab.words[3:5]
    for sentence in draw(model, vocab, n=4, prompt=list(prompt), max_length=8):
        assert sentence[:2] == list(prompt)


# -- sampling through the command line --------------------------------------------------------


@pytest.fixture(scope="module")
def saved(model, vocab, tmp_path_factory):
    """The module's model as a checkpoint (saved before any test rigs its weights)."""
    path = tmp_path_factory.mktemp("generate") / "m.npz"
    config = Config(data=DataConfig(vocab_size=len(vocab)), model=model.config)
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, model.params.values_dict()))
    return path


def sample_cli(saved, *args):
    result = CliRunner().invoke(main, ["sample", "--model", str(saved), *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def greedy(saved):
    return sample_cli(saved, "-n", 3, "--greedy", "--seed", 1)


def test_sample_command_prompt_opens_every_sentence(saved):
    lines = sample_cli(saved, "-n", 6, "--prompt", "The  dog", "--seed", 0)
    assert len(lines) == 6
    assert all(line.split()[:2] == ["the", "dog"] for line in lines), lines  # lowercased


def test_sample_command_greedy_ignores_the_seed(saved, greedy):
    assert len(greedy) == 3 and len(set(greedy)) == 1  # every sentence the same
    assert sample_cli(saved, "-n", 3, "--greedy", "--seed", 2) == greedy


def test_sample_command_top_k_1_is_greedy(saved, greedy):
    assert sample_cli(saved, "-n", 3, "--top-k", 1, "--seed", 3) == greedy


# -- scoring ----------------------------------------------------------------------------------


def scored(model, vocab, texts):
    return score(model, vocab, texts, [text.split() for text in texts])


def test_score_matches_log_probs_of_one_unpadded_sentence(model, vocab):
    for text in TEXTS:
        [result] = scored(model, vocab, [text])
        ids = vocab.encode(text.split())
        want = model.log_probs(ids[:-1, None], ids[1:, None], np.ones((len(ids) - 1, 1)))
        np.testing.assert_allclose(result.log_probs, want[:, 0], rtol=1e-12)


def test_score_matches_the_one_step_function_used_for_sampling(model, vocab):
    """An independent path: feed the words one at a time, log-softmax each step's logits."""
    text = TEXTS[1]
    [result] = scored(model, vocab, [text])
    ids = vocab.encode(text.split())
    states = model.initial_states(1)
    want = []
    for current, target in zip(ids[:-1], ids[1:], strict=True):
        logits, states = model.step(np.array([current]), states)
        logits = logits[0].astype(np.float64)
        want.append(logits[target] - np.logaddexp.reduce(logits))
    np.testing.assert_allclose(result.log_probs, want, rtol=1e-10)


def test_score_tokens_are_the_words_then_sentence_end(model, vocab):
    [result] = scored(model, vocab, ["the cat ran"])
    assert result.tokens == ["the", "cat", "ran", vocab.end]
    assert len(result.log_probs) == 4


def test_score_flags_out_of_vocabulary_words(model, vocab):
    [result] = scored(model, vocab, ["the zebra sat on a xylophone"])
    assert result.unknown == [False, True, False, False, False, True, False]
    assert result.to_dict()["n_unknown"] == 2


def test_batch_scoring_equals_scoring_each_sentence_alone(model, vocab):
    together = scored(model, vocab, TEXTS)
    for text, result in zip(TEXTS, together, strict=True):
        [alone] = scored(model, vocab, [text])
        assert result.text == text and result.tokens == alone.tokens
        np.testing.assert_allclose(result.log_probs, alone.log_probs, rtol=1e-12)


def test_scoring_more_sentences_than_one_batch_keeps_their_order(model, vocab):
    texts = [TEXTS[i % len(TEXTS)] for i in range(BATCH_SIZE + 5)]
    results = scored(model, vocab, texts)
    assert [r.text for r in results] == texts
    alone = {text: scored(model, vocab, [text])[0].log_probs for text in TEXTS}
    for result in results:
        np.testing.assert_allclose(result.log_probs, alone[result.text], rtol=1e-12)


def test_sentence_score_totals_and_perplexity(model, vocab):
    [result] = scored(model, vocab, [TEXTS[1]])
    summary = result.to_dict()
    assert summary["log_prob"] == pytest.approx(sum(result.log_probs), abs=1e-12)
    assert summary["n_tokens"] == len(result.log_probs)
    assert summary["perplexity"] == pytest.approx(
        math.exp(-summary["log_prob"] / summary["n_tokens"]), rel=1e-12
    )
    assert summary["log10_prob"] == pytest.approx(summary["log_prob"] / math.log(10), rel=1e-12)


def test_corpus_perplexity_is_exp_of_the_mean_token_nll(model, vocab):
    results = scored(model, vocab, TEXTS)
    log_probs = [lp for r in results for lp in r.log_probs]
    want = math.exp(-sum(log_probs) / len(log_probs))
    assert corpus_perplexity(results) == pytest.approx(want, rel=1e-12)


@contextlib.contextmanager
def unigram(model, vocab, probs: dict[str, float]):
    """Temporarily a model that ignores context: output weights 0, output bias ln q, where
    q[word] is `probs` for the words named and the rest shared evenly by the others."""
    rest = (1 - sum(probs.values())) / (len(vocab) - len(probs))
    saved = {name: model.params[name].get_value() for name in ("out/W", "out/b")}
    model.params["out/W"].set_value(np.zeros_like(saved["out/W"]))
    model.params["out/b"].set_value(np.log([probs.get(w, rest) for w in vocab.words]))
    try:
        yield
    finally:
        for name, value in saved.items():
            model.params[name].set_value(value)


def test_scores_and_corpus_perplexity_worked_out_by_hand(model, vocab):
    """13 tokens; p(the) = 1/2, every other token 1/24, whatever came before:
    "the cat ran"           the cat ran END             ln p = ln(1/2) + 3 ln(1/24)
    "a dog sat on the mat"  a dog sat on the mat END    ln p = ln(1/2) + 6 ln(1/24)
    perplexity (2 * 24**3) ** (1/4), (2 * 24**6) ** (1/7); together (2**2 * 24**9) ** (1/11)."""
    assert len(vocab) == 13
    with unigram(model, vocab, {"the": 0.5}):
        results = scored(model, vocab, ["the cat ran", "a dog sat on the mat"])
    first, second = (r.to_dict() for r in results)
    assert [t["prob"] for t in first["tokens"]] == pytest.approx([1 / 2, 1 / 24, 1 / 24, 1 / 24])
    assert first["log_prob"] == pytest.approx(-math.log(2) - 3 * math.log(24), rel=1e-12)
    assert first["log10_prob"] == pytest.approx(-math.log10(2) - 3 * math.log10(24), rel=1e-12)
    assert first["n_tokens"] == 4
    assert first["perplexity"] == pytest.approx((2 * 24**3) ** (1 / 4), rel=1e-12)
    assert second["n_tokens"] == 7
    assert second["perplexity"] == pytest.approx((2 * 24**6) ** (1 / 7), rel=1e-12)
    # Over tokens, not the mean of the two sentences' perplexities (14.86 here).
    assert corpus_perplexity(results) == pytest.approx((2**2 * 24**9) ** (1 / 11), rel=1e-12)


def test_score_rejects_a_sentence_without_words(model, vocab):
    with pytest.raises(RnnlmError, match="no words"):
        score(model, vocab, ["the cat", "  "], [["the", "cat"], []])


@pytest.mark.parametrize("mode", ["sentence", "stream"])
def test_score_progress_hears_every_token_and_the_running_perplexity(model, vocab, mode):
    texts = [TEXTS[i % len(TEXTS)] for i in range(BATCH_SIZE + 5)]  # two batches
    tokens = [text.split() for text in texts]
    total = sum(len(t) + 1 for t in tokens)
    with TokenProgress(total, show=False) as progress:
        results = score(model, vocab, texts, tokens, mode, progress=progress)
    assert progress.tokens == total
    assert progress.perplexity == pytest.approx(corpus_perplexity(results), rel=1e-9)
    assert progress.bar.postfix == f"ppl={progress.perplexity:.2f}"
