"""Beam search against exhaustive search on a tiny vocabulary, and nucleus (top-p) sampling
against a numpy oracle of the truncated distribution."""

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.beam import beam_search
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.errors import SettingError
from rnnlm.evaluate import sentence_log_probs
from rnnlm.generate import nucleus, sample, softmax
from rnnlm.model import Model, init_params
from rnnlm.vocab import build_vocabulary, count_tokens

WORDS = ["a", "b", "c"]
MAX_LENGTH = 3


@pytest.fixture(scope="module")
def vocab():
    return build_vocabulary(count_tokens([["a", "b"], ["b", "c", "a"]]), 10)


@pytest.fixture(scope="module")
def model(vocab):
    config = ModelConfig(
        vocab_size=len(vocab), hidden_size=6, cell="gru", embedding_size=4, init_scale=1.5,
        dtype="float64",
    )  # fmt: skip
    return Model(config, seed=7)


def exhaustive(model, vocab, prompt=()):
    """Every sentence of 1..MAX_LENGTH words starting with `prompt`, with ln p of its words
    after the prompt and SENTENCE_END, scored by the scan graph (not the step function)."""
    sentences = [
        [*prompt, *rest]
        for length in range(max(len(prompt), 1), MAX_LENGTH + 1)
        for rest in itertools.product(WORDS, repeat=length - len(prompt))
    ]
    log_probs = sentence_log_probs(model, [vocab.encode(s) for s in sentences])
    return {
        tuple(s[len(prompt) :]): lp[len(prompt) :]
        for s, lp in zip(sentences, log_probs, strict=True)
    }


@pytest.mark.parametrize("normalize", [False, True])
def test_a_beam_as_wide_as_every_sentence_finds_what_exhaustive_search_finds(
    model, vocab, normalize
):
    every = exhaustive(model, vocab)
    key = (lambda lp: lp.sum() / len(lp)) if normalize else (lambda lp: lp.sum())
    expected = sorted(every, key=lambda words: -key(every[words]))
    found = beam_search(model, vocab, len(every), max_length=MAX_LENGTH, normalize=normalize)
    assert [tuple(c.words) for c in found] == expected
    for completion in found:
        np.testing.assert_allclose(completion.log_probs, every[tuple(completion.words)], rtol=1e-9)


@pytest.mark.parametrize("width", [1, 3, 5])
def test_a_narrow_beam_returns_sorted_true_log_probabilities_and_finds_the_best(
    model, vocab, width
):
    every = exhaustive(model, vocab, prompt=["b"])
    found = beam_search(model, vocab, width, prompt=["b"], max_length=MAX_LENGTH)
    assert len(found) == width
    totals = [c.log_prob for c in found]
    assert totals == sorted(totals, reverse=True)
    for completion in found:
        np.testing.assert_allclose(completion.log_probs, every[tuple(completion.words)], rtol=1e-9)
    # Not guaranteed for every model, but for this one: the beam finds the best completion.
    assert found[0].log_prob == pytest.approx(max(lp.sum() for lp in every.values()))


def test_min_length_keeps_short_sentences_out(model, vocab):
    found = beam_search(model, vocab, 40, max_length=MAX_LENGTH, min_length=2)
    assert len(found) == 9 + 27
    assert all(len(c.words) >= 2 for c in found)


def test_beam_search_refuses_an_empty_beam(model, vocab):
    with pytest.raises(SettingError):
        beam_search(model, vocab, 0)


# -- nucleus sampling -------------------------------------------------------------------------


def nucleus_oracle(row, top_p):
    """One row, the plain way: likeliest first (ties by id), add tokens until the mass
    reaches top_p, renormalise."""
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += row[i]
        if mass >= top_p:
            break
    out = np.zeros_like(row)
    out[kept] = row[kept] / row[kept].sum()
    return out


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_nucleus_is_the_truncated_renormalised_distribution(top_p):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(12, 0.5), size=20)
    probs[0] = [0.25, 0.25, 0.25, 0.25] + [0.0] * 8  # ties
    got = nucleus(probs, top_p)
    for row, expected in zip(got, probs, strict=True):
        np.testing.assert_allclose(row, nucleus_oracle(expected, top_p), atol=1e-12)


def test_top_p_draws_follow_the_nucleus_of_the_models_distribution(model, vocab):
    draws = 4000
    drawn = sample(model, vocab, np.random.default_rng(0), draws, max_length=1, top_p=0.6)
    (logits,), _ = model.step(np.array([vocab.start_id]), model.initial_states(1))
    logits = np.asarray(logits, dtype=np.float64)[None].copy()
    logits[:, [vocab.unknown_id, vocab.start_id, vocab.end_id]] = -np.inf
    expected = nucleus_oracle(softmax(logits)[0], 0.6)
    counts = np.bincount([vocab.ids([s[0][0]])[0] for s in drawn], minlength=len(vocab))
    assert (counts[expected == 0] == 0).all()
    assert (expected > 0).sum() < len(WORDS)  # the cut leaves something out
    sigma = np.sqrt(draws * expected * (1 - expected))
    assert (np.abs(counts - draws * expected) <= 4 * sigma + 1e-9).all()


def test_top_p_outside_0_1_is_refused(model, vocab):
    with pytest.raises(SettingError):
        sample(model, vocab, np.random.default_rng(0), 1, top_p=0.0)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, vocab, model):
    path = tmp_path_factory.mktemp("beam") / "m.npz"
    config = Config(data=DataConfig(vocab_size=10, level="whitespace"), model=model.config)
    params = init_params(model.config, np.random.default_rng(7))
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params))
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_sample_beam_prints_the_completions_best_first(model_file):
    result = run("sample", "--model", model_file, "--beam", 4, "--prompt", "a", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert len(found) == 4
    assert all(c["text"].startswith("a") for c in found)
    totals = [c["log_prob"] for c in found]
    assert totals == sorted(totals, reverse=True)
    normalized = run("sample", "--model", model_file, "--beam", 4, "--length-normalize")
    assert normalized.exit_code == 0, normalized.output
    shown = [float(line.split()[0]) for line in normalized.stdout.splitlines()]
    assert shown == sorted(shown, reverse=True) and len(shown) == 4


@pytest.mark.parametrize(
    "options, fragment",
    [
        (("--beam", 2, "--top-k", 3), "drop --top-k"),
        (("--beam", 2, "--seed", 1), "drop --seed"),
        (("--length-normalize",), "give --beam N"),
        (("--top-p", 0), "0<x<=1"),
    ],
)
def test_sample_refuses_options_that_do_not_go_together(model_file, options, fragment):
    result = run("sample", "--model", model_file, *options)
    assert result.exit_code == 2
    assert fragment in result.stderr
