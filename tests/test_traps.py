"""The traps a review of rnnlm 0.1 found by using it as a new user would, one test each.

1. stream mode back-propagated through only 4 steps of each window; 2. a bidirectional
model's "perplexity" in the log, metrics, `info` and `plot`; 3. `score` and `eval` counting
unknown words differently; 4. Moses n-best lists refused by `rescore`; 5. `--resume` with the
flags or config the run started with refused; 6. `--out` into a folder that does not exist
yet; 7. which commands a bidirectional model may go through. And two found on the way:
`--keep-case` lowercased, and usage errors exited 1 without the usage line.
"""

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.model import init_params
from rnnlm.vocab import build_vocabulary, count_tokens

SENTENCES = [
    f"{s} {v} {o} ."
    for s, v, o in itertools.product(["the cat", "a dog", "my sister"], ["sees", "likes"], ["it"])
]
TINY = ["--vocab-size", 20, "--hidden-size", 4, "--epochs", 1]


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def assert_ok(result):
    assert result.exit_code == 0, f"{result.exception!r}\n{result.output[-3000:]}"
    return result


def one_line_error(result, code=1):
    """The `Error:` line of a handled failure with exit code `code`, and nothing on stdout."""
    detail = f"exit {result.exit_code}, {result.exception!r}\n{result.output[-3000:]}"
    assert result.exit_code == code, detail
    assert "Traceback" not in result.output and result.stdout == "", detail
    lines = result.stderr.splitlines()
    assert sum(line.startswith("Error") for line in lines) == 1, detail
    assert lines[-1].startswith("Error: "), detail
    return lines[-1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("traps")


@pytest.fixture(scope="module")
def corpus(folder):
    path = folder / "tiny.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


# -- 1. stream mode trains through the whole window unless told otherwise ---------------------


def test_stream_mode_defaults_to_full_bptt_within_the_window(folder, corpus):
    out = folder / "stream.npz"
    stream = ["--mode", "stream", "--cell", "lstm", "--bptt", 5, "--batch-size", 2]
    result = assert_ok(run("train", "--corpus", corpus, *TINY, *stream, "--out", out))
    assert checkpoint.load(out).config.model.bptt_truncate == -1
    assert "bptt_truncate -1 (the stream-mode default)" in result.stderr


def test_sentence_mode_keeps_the_tutorials_truncation_and_an_explicit_value_wins(folder, corpus):
    sentence = folder / "sentence.npz"
    result = assert_ok(run("train", "--corpus", corpus, *TINY, "--out", sentence))
    assert checkpoint.load(sentence).config.model.bptt_truncate == 4
    assert "bptt_truncate 4 (the sentence-mode default)" in result.stderr
    explicit = folder / "explicit.npz"
    stream = ["--mode", "stream", "--bptt", 5, "--batch-size", 2, "--bptt-truncate", 3]
    result = assert_ok(run("train", "--corpus", corpus, *TINY, *stream, "--out", explicit))
    assert checkpoint.load(explicit).config.model.bptt_truncate == 3
    assert "bptt_truncate 3 (as set)" in result.stderr


# -- 2. a bidirectional model never reports a perplexity --------------------------------------


@pytest.fixture(scope="module")
def bidirectional_run(folder, corpus):
    out = folder / "bi.npz"
    result = run("train", "--corpus", corpus, *TINY, "--bidirectional", "--out", out)
    return assert_ok(result), out


def test_a_bidirectional_training_log_and_metrics_name_the_fill_loss(bidirectional_run):
    result, out = bidirectional_run
    assert "ppl" not in result.stderr and "perplexity" not in result.stderr
    assert "fill loss" in result.stderr
    records = [json.loads(line) for line in out.with_name("bi.metrics.jsonl").open()]
    assert records
    for record in records:
        assert not any("perplexity" in key for key in record), record
        assert "loss" not in record and math.isfinite(record["fill_loss"])


def test_info_and_plot_of_a_bidirectional_run_name_the_fill_loss(bidirectional_run, folder):
    _, out = bidirectional_run
    described = json.loads(assert_ok(run("info", "--model", out, "--json")).stdout)
    assert "perplexity" not in json.dumps(described["metrics"])
    assert described["metrics"]["best_fill_loss"] > 0
    text = assert_ok(run("info", "--model", out)).stdout
    assert "perplexity" not in text and "fill loss" in text
    png = folder / "bi.png"
    plotted = json.loads(assert_ok(run("plot", out, "--out", png, "--json")).stdout)
    assert "perplexity" not in json.dumps(plotted) and plotted["best_fill_loss"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"


# -- 3. one definition of an unknown word ------------------------------------------------------


@pytest.fixture(scope="module")
def unk_model(folder):
    """A PTB-style model: the corpus marks rare words <unk> itself."""
    path = folder / "unk.txt"
    path.write_text("\n".join(s.replace("sister", "<unk>") for s in SENTENCES) + "\n")
    out = folder / "unk.npz"
    options = ["--level", "whitespace", "--unknown", "<unk>"]
    assert_ok(run("train", "--corpus", path, *TINY, *options, "--out", out))
    return out


def test_score_and_eval_count_the_corpus_unknown_marker_alike(unk_model, folder):
    text = "my <unk> sees zebra ."
    scored = json.loads(assert_ok(run("score", "--model", unk_model, text, "--json")).stdout)
    [sentence] = scored["sentences"]
    assert [t["token"] for t in sentence["tokens"] if t["unknown"]] == ["<unk>", "zebra"]
    path = folder / "unk-eval.txt"
    path.write_text(text + "\n")
    evaluated = json.loads(
        assert_ok(run("eval", "--model", unk_model, "--corpus", path, "--json")).stdout
    )
    assert evaluated["unknown"] == sentence["n_unknown"] == 2
    per_word = assert_ok(run("score", "--model", unk_model, text, "--per-word")).stdout
    assert "2 OOVs" in per_word and "OOVs:\t2" in per_word


# -- 4. Moses n-best lists ---------------------------------------------------------------------


def test_rescore_reads_moses_nbest_lists_and_the_short_format(folder, corpus):
    model = folder / "lm.npz"
    assert_ok(run("train", "--corpus", corpus, *TINY, "--out", model))
    moses = folder / "moses.nbest"
    moses.write_text(
        "0 ||| the cat sees it . ||| LM0= -12.5 TM0= -3 -4.25 WordPenalty0= -5 ||| -20.75\n"
        "0 ||| a dog likes it . ||| LM0= -10 TM0= -2 -1 WordPenalty0= -5 ||| -18\n"
        "1 ||| my sister sees it . ||| LM0= -9 TM0= -1 -1 WordPenalty0= -5 ||| -16.5\n"
    )
    rows = json.loads(
        assert_ok(run("rescore", "--model", model, "--nbest", moses, "--json")).stdout
    )
    scores = sorted((r["id"], r["score"]) for r in rows)
    assert scores == [("0", -20.75), ("0", -18.0), ("1", -16.5)]
    short = folder / "short.nbest"
    short.write_text("0 ||| the cat sees it . ||| -20.75\n0 ||| a dog likes it . ||| -18\n")
    rows_short = json.loads(
        assert_ok(run("rescore", "--model", model, "--nbest", short, "--json")).stdout
    )
    assert rows_short == [r for r in rows if r["id"] == "0"]


# -- 5. resuming the way people resume ----------------------------------------------------------


def test_resume_with_the_same_flags_or_config_is_accepted(folder, corpus):
    first = folder / "resume.npz"
    flags = ["--corpus", corpus, *TINY, "--cell", "gru"]
    assert_ok(run("train", *flags, "--out", first))
    again = assert_ok(run("train", *flags, "--epochs", 2, "--resume", first, "--out", first))
    assert "Resuming at epoch 2" in again.stderr
    config = folder / "resume.toml"
    config.write_text(
        f'[data]\ncorpus = "{corpus}"\nvocab_size = 20\n'
        '[model]\nhidden_size = 4\ncell = "gru"\n[train]\nepochs = 3\n'
    )
    assert_ok(run("train", "--config", config, "--resume", first, "--out", first))
    assert checkpoint.load(first).progress["epoch"] == 3


def test_resume_refuses_each_value_that_really_differs_naming_old_and_new(folder, corpus):
    first = folder / "refuse.npz"
    assert_ok(run("train", "--corpus", corpus, *TINY, "--out", first))
    result = run(
        "train", "--corpus", corpus, *TINY, "--hidden-size", 8, "--cell", "gru",
        "--resume", first, "--out", folder / "refused.npz",
    )  # fmt: skip
    message = one_line_error(result)
    assert "model.hidden_size 4 -> 8" in message and "model.cell 'rnn-tanh' -> 'gru'" in message
    assert "vocab_size" not in message and "corpus" not in message
    assert not (folder / "refused.npz").exists()


# -- 6. --out into a new folder -----------------------------------------------------------------


def test_train_creates_the_output_folder(folder, corpus):
    out = folder / "runs" / "new" / "m.npz"
    assert_ok(run("train", "--corpus", corpus, *TINY, "--out", out))
    assert checkpoint.load(out).config.model.hidden_size == 4


# -- 7. a bidirectional model: fill yes, everything that needs a language model no --------------


@pytest.fixture(scope="module")
def bidirectional_file(folder):
    """A bidirectional checkpoint built without training (nothing here compiles a step)."""
    vocab = build_vocabulary(count_tokens([s.split() for s in SENTENCES]), 20)
    config = Config(
        data=DataConfig(vocab_size=20),
        model=ModelConfig(vocab_size=len(vocab), hidden_size=4, bidirectional=True),
        train=TrainConfig(epochs=1),
    )
    params = init_params(config.model, np.random.default_rng(0))
    path = folder / "bidirectional.npz"
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params))
    return path


def test_fill_works_on_a_bidirectional_model(bidirectional_file):
    result = assert_ok(run("fill", "--model", bidirectional_file, "the cat ___ it .", "--json"))
    candidates = json.loads(result.stdout)
    assert len(candidates) == 10 and all(0 < c["prob"] < 1 for c in candidates)


@pytest.mark.parametrize("command", ["score", "sample", "eval", "compare", "rescore", "diagnose"])
def test_every_other_model_reading_command_refuses_a_bidirectional_model(
    bidirectional_file, corpus, folder, command
):
    nbest = folder / "refuse.nbest"
    nbest.write_text("0 ||| the cat sees it . ||| -1\n")
    model = ["--model", bidirectional_file]
    args = {
        "score": [*model, "the cat sees it ."],
        "sample": model,
        "eval": [*model, "--corpus", corpus],
        "compare": [*model, *model, "--corpus", corpus],
        "rescore": [*model, "--nbest", nbest],
        "diagnose": [*model, "--corpus", corpus, "--out", folder / "never.png"],
    }[command]
    message = one_line_error(run(command, *args))
    assert "bidirectional" in message and "rnnlm fill" in message


# -- found on the way -----------------------------------------------------------------------------


def test_keep_case_keeps_the_case(folder):
    path = folder / "cased.txt"
    path.write_text("The Cat sat .\nA Dog ran .\n")
    out = folder / "cased.npz"
    assert_ok(run("train", "--corpus", path, *TINY, "--keep-case", "--out", out))
    saved = checkpoint.load(out)
    assert saved.config.data.lowercase is False and "Cat" in saved.vocab


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "--model", "a.npz", "--corpus", "x.txt"],
        ["score", "--model", "a.npz"],
        ["rescore", "--model", "a.npz", "--nbest", "-", "--lm-weight", "nan"],
        ["prepare", "--corpus", "x.txt", "--out", "o", "--scheduler", "tcp://h:1", "--workers", 1],
    ],
    ids=["compare-one-model", "score-nothing", "rescore-nan-weight", "prepare-scheduler-workers"],
)
def test_usage_errors_exit_2_with_the_usage_line(args):
    result = run(*args, input="")
    message = one_line_error(result, code=2)
    assert any(line.startswith("Usage: ") for line in result.stderr.splitlines()), result.stderr
    assert "--" in message
