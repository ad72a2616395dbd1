"""n-gram interpolation: our ARPA reader (and KenLM's, when installed) against probabilities
worked out by hand, the mixture's end points, EM's weight against a closed-form optimum, and
--ngram on every command that takes it."""

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.arpa import read_arpa
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.interpolation import Interpolation, fit_weight, mix, ngram_words
from rnnlm.model import init_params
from rnnlm.ngram import kenlm_available, open_ngram
from rnnlm.vocab import build_vocabulary, count_tokens

# A trigram model small enough to score by hand. Backoffs: <s> -0.5, a -0.3, b -0.2,
# "<s> a" -0.1, "a b" -0.15; everything else 0.
ARPA = """
\\data\\
ngram 1=5
ngram 2=5
ngram 3=1

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.5
-0.6\t</s>
-0.4\ta\t-0.3
-0.7\tb\t-0.2

\\2-grams:
-0.2\t<s> a\t-0.1
-0.5\ta b\t-0.15
-0.3\tb </s>
-0.1\ta a
-0.8\tb b

\\3-grams:
-0.05\t<s> a b

\\end\\
"""
# log10 p of each word, then </s>, worked out by hand from the file above.
BY_HAND = {
    # <s> a: listed; <s> a b: listed; a b </s>: bo(a b) + p(</s> | b) = -0.15 + -0.3
    "a b": [-0.2, -0.05, -0.45],
    # <s> b: bo(<s>) + p(b) = -0.5 - 0.7; <s> b a: bo(b) + p(a) = -0.2 - 0.4;
    # b a </s>: bo(a) + p(</s>) = -0.3 - 0.6
    "b a": [-1.2, -0.6, -0.9],
    # zebra is <unk>: bo(<s> a) + bo(a) + p(<unk>) = -0.1 - 0.3 - 1.0; then p(</s>) = -0.6
    "a zebra": [-0.2, -1.4, -0.6],
}
ENGINES = ["arpa", pytest.param("kenlm", marks=pytest.mark.skipif(
    not kenlm_available(), reason="the kenlm package is not installed"
))]  # fmt: skip


@pytest.fixture(scope="module")
def arpa_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ngram") / "tiny.arpa"
    path.write_text(ARPA, encoding="utf-8")
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_sentence_probabilities_are_the_ones_worked_out_by_hand(arpa_file, engine):
    lm = open_ngram(arpa_file, engine)
    assert lm.order == 3
    for sentence, expected in BY_HAND.items():
        np.testing.assert_allclose(lm.sentence_log10(sentence.split()), expected, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_next_word_probabilities_back_off_like_the_sentence_ones(arpa_file, engine):
    lm = open_ngram(arpa_file, engine)
    # After <s> a: b from the trigram; a: bo(<s> a) + p(a | a); </s>: bo(<s> a) + bo(a) + p(</s>)
    np.testing.assert_allclose(
        lm.next_log10(["a"], ["b", "a", "</s>"]), [-0.05, -0.1 - 0.1, -0.1 - 0.3 - 0.6], atol=1e-6
    )


def test_a_gzipped_arpa_file_reads_the_same(arpa_file, tmp_path):
    import gzip

    packed = tmp_path / "tiny.arpa.gz"
    packed.write_bytes(gzip.compress(arpa_file.read_bytes()))
    assert read_arpa(packed).log10_probs == read_arpa(arpa_file).log10_probs


@pytest.mark.parametrize(
    "change, fragment",
    [
        (("ngram 3=1", "ngram 3=2"), "3-grams 1 (header 2)"),
        (("\\end\\", ""), "ends before"),
        (("-0.8\tb b", "x\tb b"), "line 19: not a number"),
        (("-0.8\tb b", "-0.8\tb"), "line 19: expected a log10 probability"),
        (("\\data\\", "data"), "not an ARPA file"),
    ],
)
def test_a_broken_arpa_file_is_one_error_naming_the_problem(tmp_path, change, fragment):
    path = tmp_path / "broken.arpa"
    path.write_text(ARPA.replace(*change), encoding="utf-8")
    with pytest.raises(RnnlmError, match=re.escape(fragment)):
        read_arpa(path)


def test_mixing_with_weight_0_or_1_gives_one_model_exactly():
    rnn, ngram = np.log([0.2, 0.01, 0.5]), np.log([0.1, 0.3, 0.25])
    np.testing.assert_array_equal(mix(rnn, ngram, 0.0), rnn)
    np.testing.assert_array_equal(mix(rnn, ngram, 1.0), ngram)
    np.testing.assert_allclose(
        np.exp(mix(rnn, ngram, 0.3)), 0.3 * np.exp(ngram) + 0.7 * np.exp(rnn), rtol=1e-14
    )


def test_em_finds_the_closed_form_optimum():
    # k1 tokens with (p_ngram, p_rnn) = (x, y), k2 with (y, x): d/dλ of the log-likelihood is
    # zero at λ* = (k1 x − k2 y) / ((k1 + k2)(x − y)).
    x, y, k1, k2 = 0.4, 0.1, 3, 1
    rnn = np.log([y] * k1 + [x] * k2)
    ngram = np.log([x] * k1 + [y] * k2)
    weight, iterations, converged = fit_weight(rnn, ngram, tolerance=1e-12)
    assert converged and iterations > 1
    assert weight == pytest.approx((k1 * x - k2 * y) / ((k1 + k2) * (x - y)), abs=1e-9)


def test_em_weight_is_a_maximum_of_the_likelihood():
    rng = np.random.default_rng(0)
    rnn, ngram = np.log(rng.uniform(0.01, 1, 500)), np.log(rng.uniform(0.01, 1, 500))
    weight, _, _ = fit_weight(rnn, ngram, tolerance=1e-12)
    grid = np.linspace(0, 1, 1001)
    likelihood = [mix(rnn, ngram, w).sum() for w in grid]
    assert mix(rnn, ngram, weight).sum() >= max(likelihood) - 1e-9
    assert abs(weight - grid[int(np.argmax(likelihood))]) <= 1e-3


# -- an RNN and the n-gram model together ----------------------------------------------------

WORDS = ["a b", "b a", "a a b", "b b a"]


@pytest.fixture(scope="module")
def vocab():
    return build_vocabulary(count_tokens([s.split() for s in WORDS]), 20)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, vocab):
    folder = tmp_path_factory.mktemp("interp")
    model_config = ModelConfig(vocab_size=len(vocab), hidden_size=4, cell="gru", embedding_size=3)
    config = Config(data=DataConfig(vocab_size=20, level="whitespace"), model=model_config)
    path = folder / "m.npz"
    params = init_params(model_config, np.random.default_rng(5))
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params))
    corpus = folder / "held-out.txt"
    corpus.write_text("a b\nb a\na zebra\n", encoding="utf-8")
    return path, corpus


def test_rnn_markers_and_unknown_token_become_kenlm_s(vocab):
    words = ngram_words(vocab)
    assert words[vocab.start_id] == "<s>"
    assert words[vocab.end_id] == "</s>"
    assert words[vocab.unknown_id] == "<unk>"
    assert words[vocab.ids(["a"])[0]] == "a"


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def scored(model_file, arpa_file, *options):
    path, _ = model_file
    out = invoke("score", "--model", path, *BY_HAND, *options, "--json")
    return [[t["log_prob"] for t in s["tokens"]] for s in json.loads(out)["sentences"]]


def test_score_with_weight_0_is_the_rnn_and_with_weight_1_the_ngram_model(model_file, arpa_file):
    alone = scored(model_file, arpa_file)
    assert scored(model_file, arpa_file, "--ngram", arpa_file, "--ngram-weight", 0) == alone
    ngram = scored(model_file, arpa_file, "--ngram", arpa_file, "--ngram-weight", 1)
    for got, expected in zip(ngram, BY_HAND.values(), strict=True):
        np.testing.assert_allclose(got, np.array(expected) * math.log(10), atol=1e-5)
    mixed = scored(model_file, arpa_file, "--ngram", arpa_file, "--ngram-weight", 0.25)
    for got, rnn, lm in zip(mixed, alone, ngram, strict=True):
        np.testing.assert_allclose(np.exp(got), 0.25 * np.exp(lm) + 0.75 * np.exp(rnn), rtol=1e-9)


def test_eval_perplexity_is_the_mixed_scores_perplexity(model_file, arpa_file):
    path, corpus = model_file
    options = ("--ngram", arpa_file, "--ngram-weight", 0.4)
    result = json.loads(invoke("eval", "--model", path, "--corpus", corpus, *options, "--json"))
    log_probs = [lp for s in scored(model_file, arpa_file, *options) for lp in s]
    assert result["perplexity"] == pytest.approx(math.exp(-sum(log_probs) / len(log_probs)))
    assert result["ngram"]["weight"] == 0.4 and result["ngram"]["order"] == 3
    text = invoke("eval", "--model", path, "--corpus", corpus, *options)
    assert "0.4·p_ngram + 0.6·p_rnn" in text


def test_tune_weight_beats_both_models_alone_and_agrees_with_eval(model_file, arpa_file):
    path, corpus = model_file
    args = ("tune-weight", "--ngram", arpa_file, "--corpus", corpus, "--model", path)
    fit = json.loads(invoke(*args, "--json"))
    assert fit["converged"] and 0 < fit["weight"] < 1
    assert fit["perplexity_mixed"] <= min(fit["perplexity_rnn"], fit["perplexity_ngram"])
    assert fit["ngram_unknown"] == 1  # zebra
    mixed = ("--ngram", arpa_file, "--ngram-weight", fit["weight"])
    evaluation = json.loads(invoke("eval", "--model", path, "--corpus", corpus, *mixed, "--json"))
    assert evaluation["perplexity"] == pytest.approx(fit["perplexity_mixed"], rel=1e-6)
    assert f"λ = {fit['weight']:.4f}" in invoke(*args)


def test_next_with_weight_1_gives_the_ngram_models_probabilities(model_file, arpa_file):
    path, _ = model_file
    options = ("--ngram", arpa_file, "--ngram-weight", 1, "--top-k", 3, "--json")
    result = json.loads(invoke("next", "a", "--model", path, *options))
    got = {c["token"]: c["prob"] for c in result["next"]}
    expected = {"b": 10**-0.05, "a": 10**-0.2, "SENTENCE_END": 10**-1.0}
    assert got == pytest.approx(expected, rel=1e-5)


def test_rescore_lm_column_is_the_interpolated_log_probability(model_file, arpa_file, tmp_path):
    path, _ = model_file
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("0 ||| a b ||| -1.0\n0 ||| b a ||| -0.5\n", encoding="utf-8")
    options = ("--ngram", arpa_file, "--ngram-weight", 1, "--lm-weight", 1, "--json")
    rows = json.loads(invoke("rescore", "--nbest", nbest, "--model", path, *options))
    lm = {r["text"]: r["lm"] for r in rows}
    assert lm["a b"] == pytest.approx(sum(BY_HAND["a b"]) * math.log(10), abs=1e-5)
    assert [r["text"] for r in rows] == ["a b", "b a"]  # -1.0 - 0.7 ln 10 beats -0.5 - 2.7 ln 10


def test_compare_the_rnn_alone_against_its_interpolation(model_file, arpa_file):
    path, corpus = model_file
    both = ("--model", path, "--model", path, "--corpus", corpus, "--samples", 50)
    mixed = ("--ngram", arpa_file, "--ngram-weight", 0.5, "--ngram-on", "B")
    result = json.loads(invoke("compare", *both, *mixed, "--json"))
    alone = json.loads(invoke("eval", "--model", path, "--corpus", corpus, "--json"))
    with_ngram = json.loads(
        invoke("eval", "--model", path, "--corpus", corpus, *mixed[:4], "--json")
    )
    assert result["perplexity_a"] == pytest.approx(alone["perplexity"])
    assert result["perplexity_b"] == pytest.approx(with_ngram["perplexity"])
    assert result["model_b"].endswith("+ n-gram")


@pytest.mark.parametrize(
    "options, fragment",
    [
        (("--ngram-weight", 0.5), "--ngram-weight needs --ngram"),
        (("--ngram", "missing.arpa"), "n-gram model not found"),
        (("--ngram", "ARPA", "--ngram-weight", 1.5), "1.5 is not in the range"),
    ],
)
def test_bad_ngram_options_are_one_line_errors(model_file, arpa_file, options, fragment):
    path, _ = model_file
    options = [arpa_file if o == "ARPA" else o for o in options]
    result = CliRunner().invoke(main, ["score", "--model", str(path), "a b", *map(str, options)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert fragment in result.stderr


def test_interpolation_refuses_a_weight_outside_0_1(arpa_file):
    with pytest.raises(RnnlmError, match="between 0 and 1"):
        Interpolation.open(arpa_file, 1.5)


def test_arpa_unk_script_renames_the_stand_in_and_recounts(arpa_file, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    # lmplz's layout for a corpus whose <unk> was written UNKWORD: its own <unk> unigram,
    # and the stand-in in n-grams of every order.
    raw = ARPA.replace("<unk>", "UNKWORD").replace("ngram 1=5", "ngram 1=6")
    raw = raw.replace("\\1-grams:\n", "\\1-grams:\n-5.3\t<unk>\t0\n")
    raw = raw.replace("ngram 2=5", "ngram 2=6").replace("-0.8\tb b", "-0.9\tb UNKWORD\n-0.8\tb b")
    (tmp_path / "raw.arpa").write_text(raw, encoding="utf-8")
    script = Path(__file__).resolve().parents[1] / "scripts" / "arpa_unk.py"
    fixed = subprocess.run(
        [sys.executable, script, tmp_path / "raw.arpa", "UNKWORD"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (tmp_path / "fixed.arpa").write_text(fixed, encoding="utf-8")
    got, original = read_arpa(tmp_path / "fixed.arpa"), read_arpa(arpa_file)
    assert got.log10_probs == original.log10_probs | {"b <unk>": -0.9}
    assert got.log10_backoffs == original.log10_backoffs
