"""`rnnlm info` and `rnnlm plot` on a real (tiny) training run."""

import json
import math

import pytest
from click.testing import CliRunner

from rnnlm.cli import main


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


def test_plot_writes_a_png(run, tmp_path):
    out = tmp_path / "curves.png"
    invoke("plot", run, "--out", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
