"""Corpus evaluation: the counting conventions, stream vs sentence mode, the bootstrap, the CLI."""

import dataclasses
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint, evaluate
from rnnlm.batches import stream_ids
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.evaluate import bootstrap_interval, paired_bootstrap, sentence_log_probs, summarize
from rnnlm.model import Model, init_params
from rnnlm.vocab import build_vocabulary, count_tokens

WORDS = ["the cat sat .", "a dog ran to the cat .", "the bird sang .", "a cat ran ."]


@pytest.fixture(scope="module")
def vocab():
    return build_vocabulary(count_tokens([s.split() for s in WORDS]), 20)


@pytest.fixture(scope="module")
def model(vocab):
    config = ModelConfig(vocab_size=len(vocab), hidden_size=5, cell="gru", embedding_size=4)
    return Model(config, seed=2)


def encode(vocab, texts):
    return [vocab.encode(text.split()) for text in texts]


def test_stream_and_sentence_mode_agree_on_a_single_sentence(model, vocab):
    sentence = encode(vocab, ["a dog sat to the bird ."])
    alone = sentence_log_probs(model, sentence, "sentence")[0]
    streamed = sentence_log_probs(model, sentence, "stream")[0]
    np.testing.assert_allclose(streamed, alone, rtol=1e-5)


def test_stream_mode_carries_the_state_into_the_next_sentence(model, vocab, monkeypatch):
    sentences = encode(vocab, WORDS)
    alone = sentence_log_probs(model, sentences, "sentence")
    streamed = sentence_log_probs(model, sentences, "stream")
    assert [len(s) for s in streamed] == [len(s) - 1 for s in sentences]
    np.testing.assert_allclose(streamed[0], alone[0], rtol=1e-5)
    assert not np.allclose(streamed[1], alone[1])
    # The oracle: one forward pass over the whole text, whether it is read in one window
    # or, carrying the state, in windows of 3 steps.
    ids = stream_ids(sentences)
    x, y = ids[:-1, None], ids[1:, None]
    long_pass = model.log_probs(x, y, np.ones(x.shape))[:, 0]
    np.testing.assert_allclose(np.concatenate(streamed), long_pass, rtol=1e-5)
    monkeypatch.setattr(evaluate, "STREAM_BPTT", 3)
    windowed = sentence_log_probs(model, sentences, "stream")
    np.testing.assert_allclose(np.concatenate(windowed), long_pass, rtol=1e-5)


def test_unknown_words_are_counted_and_can_be_left_out(model, vocab):
    sentences = encode(vocab, ["the zebra sat .", "a cat ran ."])  # "zebra" is unknown
    log_probs = sentence_log_probs(model, sentences)
    result = summarize(sentences, log_probs, vocab, "sentence")
    assert result.tokens == 4 + 1 + 4 + 1  # words + SENTENCE_END, never SENTENCE_START
    assert result.unknown == 1
    zebra = -log_probs[0][1]
    assert result.nll_unknown == pytest.approx(zebra)
    assert result.perplexity == pytest.approx(math.exp(result.nll / 10))
    assert result.perplexity_without_unknown == pytest.approx(math.exp((result.nll - zebra) / 9))


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_sentences():
    rng = np.random.default_rng(0)
    counts = rng.integers(5, 20, 4000)
    nll = counts * rng.normal(4.0, 0.5, 4000)

    def interval(n):
        low, high = bootstrap_interval(nll[:n], counts[:n], 500, seed=1)
        point = math.exp(nll[:n].sum() / counts[:n].sum())
        assert low < point < high
        return high - low

    assert interval(4000) < interval(400) / 2


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, vocab, model):
    folder = tmp_path_factory.mktemp("eval")
    config = Config(data=DataConfig(vocab_size=20), model=model.config)
    path = folder / "m.npz"
    params = init_params(model.config, np.random.default_rng(2))
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params))
    corpus = folder / "text.txt"
    corpus.write_text("the cat sat .\nthe zebra ran to the dog .\na bird sang .\n")
    return path, corpus


def test_eval_perplexity_equals_the_one_from_scores_per_token_probabilities(model_file):
    path, corpus = model_file
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "--model", str(path), "--corpus", str(corpus), "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    lines = corpus.read_text().splitlines()
    scored = runner.invoke(main, ["score", "--model", str(path), *lines, "--json"])
    tokens = [t for s in json.loads(scored.stdout)["sentences"] for t in s["tokens"]]
    expected = math.exp(-sum(math.log(t["prob"]) for t in tokens) / len(tokens))
    assert evaluation["tokens"] == len(tokens)
    assert evaluation["perplexity"] == pytest.approx(expected, rel=1e-6)
    assert evaluation["unknown"] == sum(t["unknown"] for t in tokens) == 1


def test_eval_text_output_states_its_conventions(model_file):
    path, corpus = model_file
    result = CliRunner().invoke(
        main, ["eval", "--model", str(path), "--corpus", str(corpus), "--bootstrap", "50"]
    )
    assert result.exit_code == 0, result.output
    assert "SENTENCE_START is given, never predicted" in result.stdout
    assert "reset at every sentence" in result.stdout
    assert "excluding unknown words" in result.stdout
    assert "95 % bootstrap interval" in result.stdout


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_per_word_output_adds_up_like_srilm(model_file):
    path, _ = model_file
    out = invoke("score", "--model", path, "--per-word", "the cat sat .", "the zebra ran")
    lines = out.splitlines()
    first = lines[: lines.index("")]
    log10s = [float(line.rsplit("[ ", 1)[1].rstrip(" ]")) for line in first if "p( " in line]
    assert len(log10s) == 5 and first[-2] == "1 sentences, 4 words, 0 OOVs"
    assert float(first[-1].split("logprob= ")[1].split()[0]) == pytest.approx(sum(log10s), 1e-5)
    assert "p( </s> | . ...)" in first[-3]
    assert "file -: 2 sentences, 7 words, 1 OOVs" in out
    assert "OOVs:\t1" in out and "Tokens:\t9" in out


def test_log_base_converts_the_printed_log_probabilities(model_file):
    path, _ = model_file
    scored = json.loads(invoke("score", "--model", path, "the cat sat .", "--json"))
    ln_first = scored["sentences"][0]["tokens"][0]["log_prob"]
    out = invoke("score", "--model", path, "the cat sat .", "--log-base", "2")
    assert f"log2 p={ln_first / math.log(2):.4f}" in out


# -- models that ignore context, with probabilities worked out by hand ---------------------------


def unigram_file(folder, vocab, model, probs: dict[str, float], name: str):
    """A float64 model whose output layer ignores the state (weights 0, bias ln q): every
    token has probability q[token], `probs` for the words named and the rest shared evenly."""
    rest = (1 - sum(probs.values())) / (len(vocab) - len(probs))
    q = np.array([probs.get(word, rest) for word in vocab.words])
    config = dataclasses.replace(model.config, dtype="float64")
    params = init_params(config, np.random.default_rng(0))
    params["out/W"] = np.zeros_like(params["out/W"])
    params["out/b"] = np.log(q)
    path = folder / name
    full = Config(data=DataConfig(vocab_size=20), model=config)
    checkpoint.save(path, checkpoint.Checkpoint(full, vocab, params))
    return path


@pytest.fixture(scope="module")
def unigrams(tmp_path_factory, vocab, model):
    """13 tokens. Uniform: 1/13 each. Unknown-heavy: UNKNOWN_TOKEN 1/2, the other 12 1/24."""
    folder = tmp_path_factory.mktemp("unigrams")
    assert len(vocab) == 13
    uniform = unigram_file(folder, vocab, model, {}, "uniform.npz")
    unknown_heavy = unigram_file(folder, vocab, model, {vocab.unknown: 0.5}, "unknown.npz")
    return uniform, unknown_heavy


def test_eval_numbers_worked_out_by_hand(unigrams, tmp_path):
    """The unknown-heavy model on "the zebra sat ." and "a cat ran .": 10 tokens predicted,
    one of them unknown (1/2), nine known (1/24 each): nll = 9 ln 24 + ln 2."""
    _, unknown_heavy = unigrams
    corpus = tmp_path / "text.txt"
    corpus.write_text("the zebra sat .\na cat ran .\n")
    result = json.loads(invoke("eval", "--model", unknown_heavy, "--corpus", corpus, "--json"))
    assert (result["tokens"], result["unknown"], result["unknown_rate"]) == (10, 1, 0.1)
    assert result["nll"] == pytest.approx(9 * math.log(24) + math.log(2), rel=1e-12)
    assert result["nll_unknown"] == pytest.approx(math.log(2), rel=1e-12)
    assert result["cross_entropy_bits"] == pytest.approx((9 * math.log2(24) + 1) / 10, rel=1e-12)
    assert result["perplexity"] == pytest.approx((2 * 24**9) ** (1 / 10), rel=1e-12)
    assert result["perplexity_without_unknown"] == pytest.approx(24, rel=1e-12)


def test_rescore_totals_worked_out_by_hand(unigrams, tmp_path):
    """With the unknown-heavy model, ln p(text) is by hand:
    "the cat sat ."        the cat sat . END        5 ln(1/24)              = -15.8903
    "the zebra zebra ran"  the UNK UNK ran END      3 ln(1/24) + 2 ln(1/2)  = -10.9205
    total = score + weight * ln p: weight 1 keeps the score's order, weight 2 turns it."""
    _, unknown_heavy = unigrams
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("1 ||| the cat sat . ||| 0.0\n1 ||| the zebra zebra ran ||| -6.0\n")
    rows = json.loads(
        invoke("rescore", "--model", unknown_heavy, "--nbest", nbest, "--lm-weight", 1, "--json")
    )
    assert [r["text"] for r in rows] == ["the cat sat .", "the zebra zebra ran"]
    assert [r["lm"] for r in rows] == pytest.approx([-15.890269151739728, -10.920455852163728])
    assert [r["total"] for r in rows] == pytest.approx([-15.890269151739728, -16.920455852163727])
    lines = invoke("rescore", "--model", unknown_heavy, "--nbest", nbest, "--lm-weight", 2)
    assert lines.splitlines() == [
        "1 ||| the zebra zebra ran ||| -6.0000 ||| -10.9205 ||| -27.8409",
        "1 ||| the cat sat . ||| 0.0000 ||| -15.8903 ||| -31.7805",
    ]


def test_compare_measures_a_known_margin(unigrams, tmp_path):
    """Perplexity is 13 under the uniform model on any text, and 24 under the unknown-heavy
    one on text without unknown words: B - A = 11 in every resample. On a text of unknown
    words B wins: (2 * 2 * 2 * 24 * 24) ** (1/5) = 5.4038 (zebra zebra zebra . END)."""
    uniform, unknown_heavy = unigrams
    known = tmp_path / "known.txt"
    known.write_text("the cat sat .\na dog ran to the bird .\n")
    result = json.loads(
        invoke("compare", "--model", uniform, "--model", unknown_heavy, "--corpus", known,
               "--samples", 200, "--json")
    )  # fmt: skip
    assert result["perplexity_a"] == pytest.approx(13, rel=1e-12)
    assert result["perplexity_b"] == pytest.approx(24, rel=1e-12)
    assert result["interval"] == pytest.approx([11, 11], rel=1e-9)
    assert result["verdict"] == "model A is better (p < 0.005)"
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("zebra zebra zebra .\n")
    result = json.loads(
        invoke("compare", "--model", uniform, "--model", unknown_heavy, "--corpus", unknown,
               "--samples", 200, "--json")
    )  # fmt: skip
    assert result["perplexity_a"] == pytest.approx(13, rel=1e-12)
    assert result["perplexity_b"] == pytest.approx(5.403840154082454, rel=1e-12)
    assert result["verdict"] == "model B is better (p < 0.005)"


def test_compare_finds_no_difference_between_a_model_and_itself(model_file):
    path, corpus = model_file
    result = json.loads(
        invoke("compare", "--model", path, "--model", path, "--corpus", corpus, "--json")
    )
    assert result["perplexity_a"] == result["perplexity_b"]
    assert result["p_value"] == 1.0 and "no significant difference" in result["verdict"]


def test_paired_bootstrap_detects_a_real_difference_and_ignores_noise():
    rng = np.random.default_rng(3)
    counts = rng.integers(5, 30, 300)
    nll_a = counts * rng.normal(4.0, 0.3, 300)
    worse = paired_bootstrap(nll_a, nll_a + 0.05 * counts, counts, 500)
    assert worse.p_value < 0.01 and worse.verdict.startswith("model A is better")
    noise = paired_bootstrap(nll_a, nll_a + rng.normal(0, 1.0, 300), counts, 500)
    assert noise.p_value > 0.05


def test_rescore_reranks_by_score_plus_weighted_lm(model_file, tmp_path):
    path, _ = model_file
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("1 ||| the cat sat . ||| -1.0\n1 ||| the zebra zebra ran ||| -0.5\n")
    by_score = json.loads(
        invoke("rescore", "--model", path, "--nbest", nbest, "--lm-weight", 0, "--json")
    )
    assert [r["text"] for r in by_score] == ["the zebra zebra ran", "the cat sat ."]
    lm = {r["text"]: r["lm"] for r in by_score}
    heavy = json.loads(
        invoke("rescore", "--model", path, "--nbest", nbest, "--lm-weight", 100, "--json")
    )
    assert [r["text"] for r in heavy] == sorted(lm, key=lambda t: -lm[t])
    for r in heavy:
        assert r["total"] == pytest.approx(r["score"] + 100 * r["lm"])
