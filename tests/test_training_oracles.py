"""Training behaviours held against numbers measured outside the trainer.

`NAME.best.npz` holds the weights of the best evaluation (re-evaluated by `rnnlm eval` and
compared with metrics.jsonl), dropout drops its rate of units and scales the rest by
1 / (1 - rate), and patience tolerates exactly its number of non-improving evaluations.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import backend, checkpoint
from rnnlm.backend import tensor as tt
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.data import load_training_data
from rnnlm.model import Model
from rnnlm.train import Trainer

CORPUS = [
    "the cat sat on the mat .",
    "the dog sat on the rug .",
    "a cat saw a dog .",
    "the dog saw the cat on the mat .",
    "a bird sang .",
    "the bird sat on the dog .",
    "a cat sang to the bird .",
    "the mat was red .",
    "the rug was blue .",
    "a dog ran .",
]
VALID = ["the cat ran to the rug .", "a bird saw the mat .", "the dog sat on the mat ."]


def invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


# -- the best model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overshooting_run(tmp_path_factory):
    """SGD at a rate that first helps, then overshoots: the validation loss falls to its best
    at an evaluation in the middle of the run and is well above it at the end."""
    folder = tmp_path_factory.mktemp("best")
    corpus, valid = folder / "corpus.txt", folder / "valid.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    valid.write_text("\n".join(VALID) + "\n")
    out = folder / "m.npz"
    invoke(
        "train", "--corpus", corpus, "--valid", valid, "--vocab-size", 20, "--hidden-size", 8,
        "--dtype", "float64", "--optimizer", "sgd", "--lr", 0.7, "--no-halve-on-rise",
        "--batch-size", 2, "--epochs", 2, "--eval-every", 3, "--out", out, "--quiet",
    )  # fmt: skip
    records = [json.loads(line) for line in (folder / "m.metrics.jsonl").read_text().splitlines()]
    return out, folder / "m.best.npz", valid, records


def eval_loss(model, corpus) -> float:
    """The model's cross-entropy on `corpus` by `rnnlm eval`, not by the trainer."""
    return json.loads(invoke("eval", "--model", model, "--corpus", corpus, "--json"))[
        "cross_entropy_nats"
    ]


def test_best_file_holds_the_weights_of_the_best_evaluation(overshooting_run):
    latest, best, valid, records = overshooting_run
    losses = [r["loss"] for r in records]
    best_at = int(np.argmin(losses))
    assert 0 < best_at < len(records) - 1, losses  # training went on past its best
    assert losses[-1] > losses[best_at] + 0.5, losses
    assert eval_loss(best, valid) == pytest.approx(losses[best_at], rel=1e-9)
    assert checkpoint.load(best).progress["step"] == records[best_at]["step"]


def test_latest_file_holds_the_weights_of_the_last_evaluation(overshooting_run):
    latest, _, valid, records = overshooting_run
    assert eval_loss(latest, valid) == pytest.approx(records[-1]["loss"], rel=1e-9)
    assert checkpoint.load(latest).progress["step"] == records[-1]["step"]


# -- dropout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_dropout_zeroes_its_rate_of_units_and_scales_the_rest(rate):
    """Measured on a constant input of 100,000 units: the share of zeros is the rate, every
    kept unit is multiplied by exactly 1 / (1 - rate), so the mean is unchanged; each unit
    is drawn on its own (no mask shared across time steps) and anew at every call."""
    model = Model(ModelConfig(vocab_size=5, hidden_size=2, dropout=rate, dtype="float64"), seed=3)
    h = tt.tensor3("h", dtype="float64")  # (T, B, H)
    drop = backend.function([h], model._dropout(h, train=True))
    value = np.full((40, 50, 50), 2.0)
    out = drop(value)
    n, keep = out.size, 1 - rate
    zeros = out == 0
    assert abs(zeros.mean() - rate) < 5 * math.sqrt(rate * keep / n), zeros.mean()
    np.testing.assert_allclose(out[~zeros], 2.0 / keep, rtol=1e-15)
    assert abs(out.mean() - 2.0) < 5 * 2.0 * math.sqrt(rate / (keep * n)), out.mean()
    assert not (zeros == zeros[:1]).all()  # time steps draw their own masks
    assert not np.array_equal(drop(value) == 0, zeros)  # and so does the next call
    evaluation = backend.function([h], model._dropout(h, train=False))
    np.testing.assert_array_equal(evaluation(value), value)


# -- patience ------------------------------------------------------------------------------------

# Evaluation losses, the first before any training; "=" marks the best so far.
# One evaluation per step over the 10 training sentences: 11 in all.
SCRIPT = [3.0, 2.0, 2.5, 2.4, 1.5, 1.5, 1.7, 1.6, 9.0, 9.0, 9.0]
#         =    =    bad1 bad2 =    bad1 bad2 bad3 bad4 bad5 bad6   (a tie is no improvement)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("patience") / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path


@pytest.mark.parametrize(
    "patience, evaluations",
    [(1, 3), (3, 8), (0, len(SCRIPT))],
    ids=["1", "3-after-a-reset-and-a-tie", "0-never"],
)
def test_patience_tolerates_exactly_that_many_evaluations_without_improvement(
    corpus_file, tmp_path, patience, evaluations
):
    config = Config(
        data=DataConfig(corpus=str(corpus_file), vocab_size=20),
        model=ModelConfig(vocab_size=20, hidden_size=2),
        train=TrainConfig(
            batch_size=1, epochs=1, eval_every=1, halve_on_rise=False, patience=patience
        ),
    )
    trainer = Trainer(config, load_training_data(config), tmp_path / "m.npz")
    losses = iter(SCRIPT)
    trainer._evaluate = lambda: next(losses)  # scripted evaluations; the loop is real
    summary = trainer.run()
    assert len(summary["history"]) == evaluations
    assert summary["early_stopped"] is (patience > 0)
    assert summary["steps"] == evaluations - 1  # one step between evaluations
