"""`rnnlm info` and `rnnlm plot` on a real (tiny) training run; `import-tutorial --json`."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm.cli import main
from rnnlm.legacy import tutorial_vocabulary


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    corpus = folder / "corpus.txt"
    corpus.write_text("the cat sat on the mat .\nthe dog sat .\na cat ran .\n" * 4)
    out = folder / "m.npz"
    invoke(
        "train",
        "--corpus",
        corpus,
        "--vocab-size",
        12,
        "--hidden-size",
        6,
        "--cell",
        "lstm",
        "--embedding-size",
        5,
        "--epochs",
        2,
        "--eval-every",
        4,
        "--out",
        out,
        "--quiet",
    )
    return out


def test_training_appends_one_metrics_line_per_evaluation(run):
    lines = run.with_name("m.metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    assert records[0]["step"] == 0 and len(records) >= 4
    for key in ("epoch", "tokens_seen", "learning_rate", "train_loss", "loss", "perplexity"):
        assert key in records[-1]
    assert records[0]["train_loss"] is None and records[0]["train_perplexity"] is None
    for record in records[1:]:
        assert record["train_perplexity"] == pytest.approx(math.exp(record["train_loss"]))
    # No validation data was given: the loss is measured on a sample of training sentences.
    assert {r["eval_set"] for r in records} == {"train-sample"}
    # The float32 rate, 0.004999999888241291, is stored as the number it stands for.
    assert records[-1]["learning_rate"] == 0.005
    assert '"learning_rate": 0.005,' in lines[-1]


def test_metrics_say_when_the_loss_is_a_validation_loss(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat .\nthe dog ran .\na cat sat .\n" * 4)
    out = tmp_path / "v.npz"
    invoke(
        "train", "--corpus", corpus, "--valid", corpus, "--vocab-size", 10, "--hidden-size", 4,
        "--epochs", 1, "--out", out, "--quiet",
    )  # fmt: skip
    records = [
        json.loads(line) for line in out.with_name("v.metrics.jsonl").read_text().splitlines()
    ]
    assert records and {r["eval_set"] for r in records} == {"valid"}


def test_info_describes_the_model(run):
    info = json.loads(invoke("info", "--model", run, "--json"))
    assert (info["cell"], info["layers"], info["hidden_size"]) == ("lstm", 1, 6)
    assert info["vocab_size"] == 12
    shapes = info["parameter_shapes"]
    assert info["parameters"] == sum(math.prod(shape) for shape in shapes.values())
    assert info["most_frequent"][0][0] in {"the", "."}
    assert info["metrics"]["evaluations"] >= 4
    assert info["progress"]["step"] == 2 * 12  # two epochs of 12 one-sentence batches
    text = invoke("info", "--model", run)
    assert "lstm, 1 layer(s) of 6" in text and "most frequent" in text
    [training] = [line for line in text.splitlines() if line.startswith("training:")]
    best = info["progress"]["best_loss"]
    assert f"learning rate 0.005, best loss {best:.4f}" in training, training
    assert str(best) not in training  # not the raw float's 16 digits


def test_plot_writes_a_png(run, tmp_path):
    out = tmp_path / "curves.png"
    assert invoke("plot", run, "--out", out).startswith(f"wrote {out} (")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_json_names_the_file_and_counts_the_points(run, tmp_path):
    out = tmp_path / "c.png"
    summary = json.loads(invoke("plot", run.with_name("m.metrics.jsonl"), "--out", out, "--json"))
    records = run.with_name("m.metrics.jsonl").read_text().splitlines()
    assert summary["out"] == str(out) and out.read_bytes()[:4] == b"\x89PNG"
    assert summary["metrics"] == str(run.with_name("m.metrics.jsonl"))
    assert summary["points"] == summary["evaluations"] == len(records)
    assert summary["best_loss"] == min(json.loads(line)["loss"] for line in records)


def test_plot_refuses_a_metrics_line_without_a_numeric_loss(tmp_path):
    metrics = tmp_path / "x.metrics.jsonl"
    metrics.write_text('{"step": 0, "loss": 2.5}\n{"step": 1, "loss": "low"}\n')
    result = CliRunner().invoke(main, ["plot", str(metrics), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 1
    assert "line 2 is not an evaluation record" in result.stderr


def test_import_tutorial_json_describes_the_new_checkpoint(tmp_path):
    csv = tmp_path / "comments.csv"
    csv.write_text("body\n" + "".join(f'"the cat sat. a dog ran {i}."\n' for i in range(3)))
    vocab_size = len(tutorial_vocabulary(csv, 12))
    rng = np.random.default_rng(0)
    hidden = 3
    arrays = {"U": (hidden, vocab_size), "V": (vocab_size, hidden), "W": (hidden, hidden)}
    npz = tmp_path / "tutorial.npz"
    np.savez(npz, **{k: rng.normal(size=shape).astype(np.float32) for k, shape in arrays.items()})
    out = tmp_path / "imported.npz"
    args = ["import-tutorial", "--npz", npz, "--vocab-corpus", csv, "--vocab-size", 12]
    summary = json.loads(invoke(*args, "--out", out, "--json"))
    assert summary["file"] == str(out) and out.is_file()
    assert (summary["cell"], summary["hidden_size"], summary["embedding_size"]) == (
        "rnn-tanh",
        3,
        0,
    )
    assert summary["vocab_size"] == vocab_size
    assert summary["parameters"] == 2 * hidden * vocab_size + hidden * hidden
    assert summary["progress"] == {"imported_from": str(npz)}
    info = json.loads(invoke("info", "--model", out, "--json"))
    assert info.pop("metrics") is None and summary == info  # `info --json`, less the metrics
