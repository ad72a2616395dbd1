"""Every softmax kind through every command: a tiny model of each trained by `rnnlm train`,
then scored, evaluated, sampled, filled, asked for the next word and served; its tables
kept in the checkpoint; its distributions normalised over the whole vocabulary."""

import contextlib
import dataclasses
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint, train
from rnnlm.cli import main
from rnnlm.compiled import FunctionCache
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.data import load_training_data
from rnnlm.errors import RnnlmError
from rnnlm.loading import open_model
from rnnlm.model import Model
from rnnlm.output_tables import TABLES, make_tables, training_counts
from rnnlm.train import Trainer

SENTENCES = [
    f"{s} {v} {o} ."
    for s in ("the cat", "the dog", "a bird", "my sister", "the old man", "a small child")
    for v in ("sees", "likes", "follows")
    for o in ("the river", "a red ball")
]

KIND_OPTIONS = {
    "class": ["--classes", 4],
    "adaptive": ["--cutoffs", "4,10", "--div-value", 2],
    "sampled": ["--samples", 5],
}
KINDS = list(KIND_OPTIONS)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_ok(result):
    assert result.exit_code == 0, result.output
    assert result.exception is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("softmax") / "tiny.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=KINDS)
def trained(request, corpus):
    """(kind, model path): a float64 model of the kind, trained for two epochs."""
    kind = request.param
    out = corpus.parent / f"{kind}.npz"
    result = run(
        "train", "--corpus", corpus, "--vocab-size", 30, "--hidden-size", 8, "--embedding-size",
        8, "--dtype", "float64", "--epochs", 2, "--softmax", kind, *KIND_OPTIONS[kind],
        "--no-cache", "--quiet", "--out", out,
    )  # fmt: skip
    assert_ok(result)
    return kind, out


@pytest.fixture(scope="module")
def opened(trained):
    kind, path = trained
    model, ckpt = open_model(path)
    return kind, model, ckpt


def test_the_checkpoint_keeps_the_tables_made_from_the_training_counts(trained, tmp_path):
    kind, path = trained
    ckpt = checkpoint.load(path)
    assert ckpt.config.model.softmax == kind
    assert set(ckpt.tables) == set(TABLES[kind].names)
    expected = make_tables(ckpt.config.model.output, training_counts(ckpt.vocab))
    for name, table in expected.items():
        np.testing.assert_array_equal(ckpt.tables[name], table)
    checkpoint.save(tmp_path / "again.npz", ckpt)
    again = checkpoint.load(tmp_path / "again.npz")
    for name, table in ckpt.tables.items():
        assert again.tables[name].dtype == table.dtype
        np.testing.assert_array_equal(again.tables[name], table)


def test_a_checkpoint_without_its_tables_is_refused(trained, tmp_path):
    kind, path = trained
    ckpt = checkpoint.load(path)
    ckpt.tables = {}
    checkpoint.save(tmp_path / "bare.npz", ckpt)
    with pytest.raises(RnnlmError, match=f"bare.npz: the {kind} softmax needs the tables"):
        checkpoint.load(tmp_path / "bare.npz")


def test_info_shows_the_kind(trained):
    kind, path = trained
    result = run("info", "--model", path)
    assert_ok(result)
    assert f"output: {kind} softmax (" in result.output
    described = json.loads(run("info", "--model", path, "--json").stdout)
    assert described["softmax"]["kind"] == kind
    assert any(name.startswith("out/") for name in described["parameter_shapes"])


def test_distributions_normalise_over_the_whole_vocabulary(opened):
    """Class and adaptive are exact distributions; sampled is the full softmax outside
    training. The scored targets are the distribution's own entries."""
    kind, model, ckpt = opened
    vocab = ckpt.vocab
    ids = vocab.encode("the old man likes a red ball .".split())
    x, y = ids[:-1, None].astype(np.int32), ids[1:, None].astype(np.int32)
    mask = np.ones(x.shape)
    dist = model.distribution(x, y, mask)  # (T, 1, V)
    assert dist.shape == (len(x), 1, len(vocab))
    np.testing.assert_allclose(np.exp(dist).sum(axis=-1), 1, rtol=1e-12)
    log_p = model.log_probs(x, y, mask)
    np.testing.assert_allclose(log_p, np.take_along_axis(dist, y[..., None], -1)[..., 0], 1e-10)
    step_log_p, _ = model.step(x[0], model.initial_states(1))
    np.testing.assert_allclose(np.exp(step_log_p).sum(axis=-1), 1, rtol=1e-12)
    np.testing.assert_allclose(step_log_p, dist[0], rtol=1e-10)
    next_log_p = model.next_log_probs(x, mask)
    np.testing.assert_allclose(next_log_p, dist[-1], rtol=1e-10)


def test_sampled_scores_with_the_full_softmax_of_its_weights(opened):
    kind, model, ckpt = opened
    if kind != "sampled":
        pytest.skip("the sampled softmax only")
    full = Model(dataclasses.replace(ckpt.config.model, softmax="full"), params=ckpt.params)
    ids = ckpt.vocab.encode("a bird follows the river .".split())
    x, y = ids[:-1, None].astype(np.int32), ids[1:, None].astype(np.int32)
    mask = np.ones(x.shape)
    np.testing.assert_array_equal(model.log_probs(x, y, mask), full.log_probs(x, y, mask))
    np.testing.assert_array_equal(model.distribution(x, y, mask), full.distribution(x, y, mask))


def test_every_command_runs(trained, corpus):
    kind, path = trained
    scored = run("score", "--model", path, "--json", "--no-cache", "the cat sees the river .")
    assert_ok(scored)
    model, ckpt = open_model(path)
    ids = ckpt.vocab.encode("the cat sees the river .".split())
    x, y = ids[:-1, None].astype(np.int32), ids[1:, None].astype(np.int32)
    expected = model.log_probs(x, y, np.ones(x.shape))[:, 0].sum()
    assert json.loads(scored.stdout)["sentences"][0]["log_prob"] == pytest.approx(expected)
    evaluated = run("eval", "--model", path, "--corpus", corpus, "--json", "--no-cache")
    assert_ok(evaluated)
    assert 1 < json.loads(evaluated.stdout)["perplexity"] < len(ckpt.vocab)
    sampled = run("sample", "--model", path, "--seed", 1, "--json", "--no-cache")
    assert_ok(sampled)
    drawn = json.loads(sampled.stdout)
    assert drawn and all(0 < token["prob"] <= 1 for s in drawn for token in s["tokens"])
    filled = run("fill", "--model", path, "--json", "--no-cache", "the ___ sees the river .")
    assert_ok(filled)
    assert json.loads(filled.stdout)
    following = run("next", "--model", path, "--json", "--no-cache", "the old")
    assert_ok(following)
    probs = [c["prob"] for c in json.loads(following.stdout)["next"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-12


def test_the_service_scores_as_the_command_line_does(trained):
    pytest.importorskip("fastapi")
    from rnnlm.generate import score_texts
    from rnnlm.serve.limits import Limits
    from rnnlm.serve.served import load_models

    kind, path = trained
    served = load_models({"m": path}, Limits())["m"]
    try:
        text = "my sister likes a red ball ."
        [[served_score]] = served.score_batch([([text], [served.tokens(text)])])
        [expected] = score_texts(path, [text]).sentences
        assert served_score.log_probs == pytest.approx(expected.log_probs, rel=1e-12)
        [candidates] = served.next_batch([(served.tokens("the"), 3)])
        assert len(candidates) == 3
    finally:
        served.executor.shutdown()


def test_cutoffs_beyond_the_vocabulary_are_a_one_line_error(corpus, tmp_path):
    result = run(
        "train", "--corpus", corpus, "--vocab-size", 30, "--hidden-size", 4, "--softmax",
        "adaptive", "--cutoffs", "4,100", "--no-cache", "--out", tmp_path / "m.npz",
    )  # fmt: skip
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "model.cutoffs" in result.stderr or "--cutoffs" in result.stderr


# -- resuming, and the compiled-function cache --------------------------------------------------


def training_config(tmp_path, corpus, kind):
    options = {"class": {"classes": 3}, "adaptive": {"cutoffs": "5"}, "sampled": {"samples": 4}}
    return Config(
        data=DataConfig(corpus=str(corpus), vocab_size=30),
        model=ModelConfig(
            hidden_size=5,
            embedding_size=4,
            cell="gru",
            bptt_truncate=-1,
            dtype="float64",
            softmax=kind,
            **options[kind],
        ),  # fmt: skip
        train=TrainConfig(batch_size=4, epochs=2, optimizer="adam", learning_rate=0.02),
    )


def train_until(config, out, resume=None, stop_after=None, monkeypatch=None):
    data = load_training_data(config)
    trainer = Trainer(config, data, out, resume=resume)
    if stop_after is not None:
        flag = threading.Event()
        step = trainer.train_step

        def counting_step(*args):
            result = step(*args)
            if trainer.progress.step + 1 >= stop_after:
                flag.set()
            return result

        trainer.train_step = counting_step
        monkeypatch.setattr(train, "interrupt_flag", lambda: contextlib.nullcontext(flag))
    return trainer.run()


@pytest.mark.parametrize("kind", ["class", "sampled"])
def test_a_resumed_run_ends_like_an_uninterrupted_one(tmp_path, corpus, monkeypatch, kind):
    """The sampled softmax's negatives are reseeded per step, so they replay too."""
    config = training_config(tmp_path, corpus, kind)
    whole = train_until(config, tmp_path / "whole.npz")
    part = train_until(config, tmp_path / "part.npz", stop_after=4, monkeypatch=monkeypatch)
    assert part["interrupted"] and part["steps"] == 4 < whole["steps"]
    monkeypatch.undo()
    resumed = train_until(config, tmp_path / "part.npz", checkpoint.load(tmp_path / "part.npz"))
    assert resumed["steps"] == whole["steps"]
    a, b = checkpoint.load(tmp_path / "whole.npz"), checkpoint.load(tmp_path / "part.npz")
    for name in a.params:
        np.testing.assert_allclose(b.params[name], a.params[name], rtol=1e-9, atol=1e-12)
    for name in a.tables:
        np.testing.assert_array_equal(b.tables[name], a.tables[name])


def test_the_function_cache_tells_tables_apart(tmp_path):
    """Two class models of one config but different class maps: the second must not get
    the first one's compiled function (its class map is a constant of the graph)."""
    config = ModelConfig(vocab_size=9, hidden_size=3, dtype="float64", softmax="class", classes=3)
    counts = np.arange(9, 0, -1)
    tables_a = make_tables(config.output, counts)
    tables_b = {"word_class": tables_a["word_class"][::-1].copy()}
    cache = FunctionCache(tmp_path / "cache")
    x = np.array([[1], [2], [3]], np.int32)
    y = np.array([[2], [3], [4]], np.int32)
    mask = np.ones(x.shape)
    Model(config, seed=1, cache=cache, tables=tables_a).log_probs(x, y, mask)
    cached = Model(config, seed=1, cache=cache, tables=tables_b).log_probs(x, y, mask)
    fresh = Model(config, seed=1, tables=tables_b).log_probs(x, y, mask)
    np.testing.assert_array_equal(cached, fresh)
