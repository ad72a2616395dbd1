"""The training loop: exact resume, schedules, best model, early stopping."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from rnnlm import checkpoint, train
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.data import load_training_data
from rnnlm.errors import RnnlmError
from rnnlm.runfiles import best_path
from rnnlm.train import Trainer

SENTENCES = [
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
    "the cat ran to the rug .",
    "a bird saw the mat .",
]


def make_config(tmp_path, **train_options) -> Config:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    data = DataConfig(corpus=str(corpus), vocab_size=20, valid_fraction=0.25)
    model = ModelConfig(
        vocab_size=20,
        hidden_size=6,
        embedding_size=5,
        cell="lstm",
        dropout=0.3,
        bptt_truncate=-1,
        dtype="float64",
    )
    options = dict(batch_size=3, epochs=3, optimizer="adam", learning_rate=0.02, eval_every=2)
    options.update(train_options)
    return Config(data=data, model=model, train=TrainConfig(**options))


def run(config, out, resume=None, stop_after=None, monkeypatch=None):
    """Train; with `stop_after`, press "Ctrl-C" once that many steps have run."""
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


@pytest.mark.parametrize(
    "mode_options",
    [
        dict(mode="sentence"),
        dict(mode="stream", bptt=4, batch_size=2, optimizer="momentum", learning_rate=0.1),
    ],
    ids=["sentence-adam-dropout", "stream-momentum"],
)
def test_interrupted_then_resumed_run_ends_like_an_uninterrupted_one(
    tmp_path, monkeypatch, mode_options
):
    config = make_config(tmp_path, **mode_options)
    whole = run(config, tmp_path / "whole.npz")
    part = run(config, tmp_path / "part.npz", stop_after=5, monkeypatch=monkeypatch)
    assert part["interrupted"] and part["steps"] == 5 < whole["steps"]
    monkeypatch.undo()
    resumed = run(config, tmp_path / "part.npz", resume=checkpoint.load(tmp_path / "part.npz"))
    assert resumed["steps"] == whole["steps"]
    a = checkpoint.load(tmp_path / "whole.npz")
    b = checkpoint.load(tmp_path / "part.npz")
    moved = checkpoint.load(tmp_path / "whole.best.npz")
    for name in a.params:
        np.testing.assert_allclose(b.params[name], a.params[name], rtol=1e-9, atol=1e-12)
    assert a.optimizer.keys() == b.optimizer.keys() and a.optimizer
    for name in a.optimizer:
        np.testing.assert_allclose(b.optimizer[name], a.optimizer[name], rtol=1e-9, atol=1e-12)
    assert moved.params.keys() == a.params.keys()


def test_best_model_is_kept_beside_the_latest(tmp_path):
    config = make_config(tmp_path, epochs=2)
    summary = run(config, tmp_path / "m.npz")
    best = checkpoint.load(best_path(tmp_path / "m.npz"))
    assert best.progress["best_loss"] == pytest.approx(summary["best_loss"])
    assert summary["best_loss"] == min(record["loss"] for record in summary["history"])


def test_step_decay_multiplies_the_rate_after_the_start_epoch(tmp_path):
    config = make_config(
        tmp_path,
        optimizer="sgd",
        learning_rate=0.1,
        lr_decay=0.5,
        lr_decay_start=2,
        halve_on_rise=False,
        epochs=4,
        eval_every=0,
    )
    summary = run(config, tmp_path / "m.npz")
    rates = [record["learning_rate"] for record in summary["history"][1:]]  # after each epoch
    assert rates == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_rising_loss_rolls_back_to_the_best_weights_and_halves_the_rate(tmp_path):
    config = make_config(tmp_path, optimizer="sgd", learning_rate=0.4)
    trainer = Trainer(config, load_training_data(config), tmp_path / "m.npz")
    trainer.epoch_batches = 1
    best = trainer.model.params.values_dict()
    assert not trainer._after_evaluation(2.0, None, 0.0)  # the first loss is the best so far
    trainer.model.params.assign({name: value + 1.0 for name, value in best.items()})
    trainer._after_evaluation(2.5, None, 0.0)
    for name, value in trainer.model.params.values_dict().items():
        np.testing.assert_array_equal(value, best[name])
    assert trainer.learning_rate.get_value() == pytest.approx(0.2)
    assert trainer.progress.best_loss == 2.0 and trainer.progress.bad_evals == 1


def test_patience_stops_early(tmp_path):
    config = make_config(
        tmp_path,
        optimizer="sgd",
        learning_rate=50.0,
        halve_on_rise=False,
        patience=1,
        epochs=20,
    )
    summary = run(config, tmp_path / "m.npz")
    assert summary["early_stopped"]
    assert summary["epochs"] < 20


def poisoned(trainer, bad_calls):
    """Make the given train-step calls (0-based) wreck the weights and return a NaN loss."""
    step, calls = trainer.train_step, [0]

    def train_step(*args):
        out = step(*args)
        calls[0] += 1
        if calls[0] - 1 in bad_calls:
            for var in trainer.model.params.values():
                var.set_value(var.get_value() * np.nan)
            out[0] = np.asarray(np.nan)
        return out

    trainer.train_step = train_step


def test_a_nan_loss_rolls_back_to_the_last_checkpoint_and_halves_the_rate(tmp_path, caplog):
    config = make_config(tmp_path, optimizer="sgd", learning_rate=0.4, epochs=1, eval_every=0)
    trainer = Trainer(config, load_training_data(config), tmp_path / "m.npz")
    start = trainer.model.params.values_dict()
    poisoned(trainer, {1})
    summary = trainer.run()
    assert "rolled back" in caplog.text
    assert summary["steps"] == trainer.epoch_batches - 1  # the poisoned batch is skipped
    assert trainer.learning_rate.get_value() == pytest.approx(0.2)
    final = checkpoint.load(tmp_path / "m.npz").params
    for name, value in final.items():
        assert np.isfinite(value).all()
        assert not np.array_equal(value, start[name])  # training went on after the rollback


def test_three_nan_losses_in_a_row_stop_training_with_an_explanation(tmp_path):
    config = make_config(tmp_path, optimizer="sgd", learning_rate=0.4, epochs=1)
    trainer = Trainer(config, load_training_data(config), tmp_path / "m.npz")
    poisoned(trainer, {0, 1, 2})
    with pytest.raises(RnnlmError, match="3 rollbacks in a row"):
        trainer.run()
    assert all(np.isfinite(v).all() for v in checkpoint.load(tmp_path / "m.npz").params.values())
