"""The training loop: batches -> compiled steps -> evaluations -> schedule -> checkpoints.

Fixed order per step: next batch, one compiled update, then maybe an evaluation (schedule,
rollback, best model, early stopping) and a checkpoint. Everything random is derived from
the seed and the position (epoch, step), so a resumed run retraces an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import checkpoint
from rnnlm.batches import stream, stream_batches, training_batches
from rnnlm.config import Config
from rnnlm.data import TrainingData
from rnnlm.distributed import Comm, LocalComm, anyone, share, train_step
from rnnlm.errors import RnnlmError, SettingError
from rnnlm.evaluate import eval_loss
from rnnlm.output_tables import make_tables, training_counts
from rnnlm.runfiles import (
    TrainProgress,
    append_metrics,
    bar_text,
    best_path,
    evaluation_record,
    log_line,
    loss_name,
    make_folder,
    model_line,
    run_summary,
)
from rnnlm.terminal import interrupt_flag, logs_above_the_bar, training_bar

log = logging.getLogger(__name__)

MAX_ROLLBACKS = 3  # non-finite losses in a row before training gives up


class Trainer:
    """One training run; `run()` returns a summary. Owns the schedule and the checkpoints."""

    def __init__(
        self,
        config: Config,
        data: TrainingData,
        out: str | Path,
        *,
        compile_mode: str | None = None,
        show_progress: bool = False,
        resume: checkpoint.Checkpoint | None = None,
        comm: Comm | None = None,
        cache: Any = None,
        initial_params: dict[str, np.ndarray] | None = None,
        initial_tables: dict[str, np.ndarray] | None = None,
    ) -> None:
        from rnnlm import backend
        from rnnlm.model import Model
        from rnnlm.optim import updates_for

        tc = config.train
        # The vocabulary built from the corpus decides the model's vocabulary size, the
        # training mode the truncation left open; the checkpoints store what was decided.
        truncation_given = config.model.bptt_truncate is not None
        model_config = config.model.for_mode(tc.mode)
        model_config = dataclasses.replace(model_config, vocab_size=len(data.vocab))
        config = dataclasses.replace(config, model=model_config)
        if config.model.bidirectional and tc.mode == "stream":
            raise RnnlmError("a bidirectional model trains in sentence mode only")
        self.config, self.data, self.out = config, data, Path(out)
        self.loss_name = loss_name(config.model.bidirectional)
        make_folder(self.out)
        # Data-parallel ranks (see rnnlm.distributed): all train, only rank 0 writes.
        self.comm = comm if comm is not None else LocalComm()
        self.is_main = self.comm.rank == 0
        self.show_progress = show_progress and self.is_main
        # The output layer's tables come from the training counts, once: a resumed run keeps
        # its checkpoint's, a fine-tuned one its start's (its weights are laid out by them).
        if resume is not None:
            tables = resume.tables
        elif initial_tables is not None:
            tables = initial_tables
        else:
            tables = make_tables(config.model.output, training_counts(data.vocab))
        # `cache`: a compiled-function cache (rnnlm.compiled), or None to compile afresh.
        self.model = Model(
            config.model, seed=tc.seed, compile_mode=compile_mode, cache=cache, tables=tables
        )
        if initial_params is not None:  # fine-tuning: another run's weights, a fresh start
            self.model.params.assign(initial_params)
        dtype = config.model.dtype
        self.learning_rate = backend.shared(np.asarray(tc.learning_rate, dtype=dtype), name="lr")
        self.optimizer_state: dict = {}

        def updates(params, grads):
            result, self.optimizer_state = updates_for(tc, params, grads, self.learning_rate)
            return result

        started = time.perf_counter()
        self.train_step = train_step(self.model, updates, self.comm)
        compile_s = time.perf_counter() - started
        log.info("%s", model_line(config.model, self.model.params.count(), compile_s))
        log.info(
            "Gradients: bptt_truncate %d (%s).",
            model_config.bptt_truncate,
            "as set" if truncation_given else f"the {tc.mode}-mode default",
        )
        if data.valid:
            self.eval_set = data.valid
        else:
            pick = np.random.default_rng(tc.seed).permutation(len(data.sentences))
            self.eval_set = [data.sentences[i] for i in pick[: tc.eval_sentences]]
        self.progress = TrainProgress(learning_rate=tc.learning_rate)
        self.carry = None  # stream mode: states carried from the last batch
        self.rollbacks = 0  # non-finite losses in a row
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._restore(resume)
        self._share_weights()

    # -- checkpoints ------------------------------------------------------------------------

    def _checkpoint(self) -> checkpoint.Checkpoint:
        self.progress.learning_rate = float(self.learning_rate.get_value())
        return checkpoint.Checkpoint(
            self.config,
            self.data.vocab,
            self.model.params.values_dict(),
            self.progress.to_dict(),
            optimizer={name: var.get_value() for name, var in self.optimizer_state.items()},
            carry=list(self.carry) if self.carry is not None else [],
            tables=self.model.tables,
        )

    def _load_weights(self, ckpt: checkpoint.Checkpoint) -> None:
        """Parameters and optimizer state from a checkpoint, checked name by name."""
        self.model.params.assign(ckpt.params)
        if set(ckpt.optimizer) != set(self.optimizer_state):
            raise RnnlmError(
                "the checkpoint's optimizer state does not match "
                f"train.optimizer = {self.config.train.optimizer!r}"
            )
        for name, var in self.optimizer_state.items():
            value = ckpt.optimizer[name]
            if value.shape != var.get_value(borrow=True).shape:
                raise RnnlmError(f"optimizer state {name} has the wrong shape {value.shape}")
            var.set_value(value.astype(var.dtype))

    def _save(self, path: Path) -> None:
        """Rank 0 writes; the other ranks hold the same state (and read it back from there)."""
        if self.is_main:
            checkpoint.save(path, self._checkpoint())

    def _share_weights(self) -> None:
        """Rank 0's parameters and optimizer state on every rank, bit for bit."""
        share(self.comm, [*self.model.params.values(), *self.optimizer_state.values()])

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        self._load_weights(ckpt)
        self.progress = self.progress.restored(ckpt.progress)
        self.learning_rate.set_value(
            np.asarray(self.progress.learning_rate, self.learning_rate.dtype)
        )
        self.carry = ckpt.carry or None
        log.info(
            "Resuming at epoch %d, step %d, learning rate %g.",
            self.progress.epoch + 1,
            self.progress.step,
            self.progress.learning_rate,
        )

    # -- one epoch of batches ---------------------------------------------------------------

    def _batches(self, epoch: int):
        tc, dtype = self.config.train, self.config.model.dtype
        rng = np.random.default_rng([tc.seed, epoch])
        if tc.mode == "stream":
            return list(stream_batches(stream(self.data.sentences, tc.batch_size), tc.bptt, dtype))
        return training_batches(self.data.sentences, tc.batch_size, rng, dtype)

    # -- evaluation and schedule ------------------------------------------------------------

    def _evaluate(self) -> float:
        # Rank 0's weights and loss everywhere, so every rank takes the same schedule decision.
        self._share_weights()
        loss = np.array([eval_loss(self.model, self.eval_set, self.config.train.mode)])
        self.comm.broadcast(loss)
        return float(loss[0])

    def _after_evaluation(self, loss: float, train_loss: float | None, elapsed: float) -> bool:
        """Record, log and apply the schedule; returns True when early stopping says stop."""
        tc, p = self.config.train, self.progress
        record = evaluation_record(
            p,
            round(p.epoch + p.batch / max(self.epoch_batches, 1), 3),
            float(self.learning_rate.get_value()),
            train_loss,
            loss,
            "valid" if self.data.valid else "train-sample",
            elapsed,
            self.config.model.bidirectional,
        )
        self.history.append(record)
        if self.is_main:
            append_metrics(self.out, record)
        log.info("%s", log_line(record))
        p.last_loss = loss
        best = p.best_loss
        if best is None or loss < best:
            p.best_loss, p.bad_evals = loss, 0
            self._save(best_path(self.out))
            return False
        p.bad_evals += 1
        if tc.halve_on_rise:
            # Mikolov's RNNLM: back to the best weights, then take smaller steps.
            self.model.params.assign(checkpoint.load(best_path(self.out)).params)
            p.last_loss = best  # the loss of the weights now in place
            self.learning_rate.set_value(self.learning_rate.get_value() * 0.5)
            log.info(
                "Loss rose (best %.4f): back to the best weights, learning rate halved to %g.",
                best,
                self.learning_rate.get_value(),
            )
        if tc.patience and p.bad_evals >= tc.patience:
            log.info("No improvement in %d evaluations: stopping early.", p.bad_evals)
            return True
        return False

    def _train_on(self, x, y, mask) -> tuple[float, float] | None:
        """One update; (summed NLL, tokens), or None when a non-finite loss was rolled back."""
        tc, p, model = self.config.train, self.progress, self.model
        states = self.carry if self.carry is not None else model.initial_states(x.shape[1])
        if model.random_in_training:
            model.reseed([tc.seed, p.step])
        out = self.train_step(x, y, mask, *states)
        nll, n_tokens = float(out[0]), float(out[1])
        if not math.isfinite(nll):
            self._roll_back(nll)
            return None
        self.rollbacks = 0
        if tc.mode == "stream":
            self.carry = [np.asarray(state) for state in out[2:]]
        p.step += 1
        p.examples_seen += x.shape[1]
        p.tokens_seen += int(n_tokens)
        return nll, n_tokens

    def _roll_back(self, loss: float) -> None:
        """A non-finite loss: back to the last checkpoint's weights, at half the rate."""
        self.rollbacks += 1
        # Before the first periodic save, the best model (saved at step 0) is the last good one.
        last = checkpoint.load(self.out if self.out.exists() else best_path(self.out))
        self._load_weights(last)
        self.learning_rate.set_value(self.learning_rate.get_value() * 0.5)
        log.warning(
            "Loss %s at step %d: rolled back to the last checkpoint (step %d), learning rate "
            "halved to %g.",
            loss,
            self.progress.step + 1,
            last.progress["step"],
            self.learning_rate.get_value(),
        )
        if self.rollbacks >= MAX_ROLLBACKS:
            self._save(self.out)  # the good weights, just restored
            raise SettingError(
                f"the loss was {loss} after {MAX_ROLLBACKS} rollbacks in a row (learning rate now "
                f"{self.learning_rate.get_value():g}): training stopped, {self.out} holds the "
                "last good weights; try a smaller",
                {"train.learning_rate": None, "train.clip_norm": None},
            )

    def _end_of_epoch(self) -> None:
        tc, p = self.config.train, self.progress
        p.epoch += 1
        p.batch = 0
        self.carry = None
        if tc.lr_decay < 1 and p.epoch >= tc.lr_decay_start:
            self.learning_rate.set_value(self.learning_rate.get_value() * tc.lr_decay)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        tc, p = self.config.train, self.progress
        started = time.perf_counter() - p.wall_s
        self.epoch_batches = len(self._batches(0))
        eval_every = tc.eval_every or self.epoch_batches
        run_loss, run_tokens = 0.0, 0.0
        stopped = interrupted = False
        bar_started, bar_tokens = time.perf_counter(), p.tokens_seen
        with (
            interrupt_flag() as interrupt,
            training_bar(
                tc.epochs * self.epoch_batches,
                p.epoch * self.epoch_batches + p.batch,
                self.show_progress,
            ) as bar,
            logs_above_the_bar(self.show_progress),
        ):
            if p.best_loss is None and p.step == 0:
                self._after_evaluation(self._evaluate(), None, 0.0)  # saves the best model
            interrupted = anyone(self.comm, interrupt.is_set())
            while p.epoch < tc.epochs and not (stopped or interrupted):
                batches = self._batches(p.epoch)
                for x, y, mask in batches[p.batch :]:
                    trained = self._train_on(x, y, mask)
                    p.batch += 1
                    bar.update(1)
                    if trained is not None:
                        run_loss += trained[0]
                        run_tokens += trained[1]
                        if p.step % 20 == 0:
                            elapsed = time.perf_counter() - bar_started
                            speed = (p.tokens_seen - bar_tokens) / elapsed
                            shown = bar_text(self.loss_name, run_loss / run_tokens, speed)
                            bar.set_postfix_str(shown, refresh=False)
                    if p.batch == len(batches):
                        self._end_of_epoch()
                    if trained is not None and p.step % eval_every == 0:
                        p.wall_s = time.perf_counter() - started
                        stopped = self._after_evaluation(
                            self._evaluate(), run_loss / run_tokens, p.wall_s
                        )
                        run_loss, run_tokens = 0.0, 0.0
                        self._save(self.out)
                    interrupted = anyone(self.comm, interrupt.is_set())
                    if stopped or interrupted:
                        break
        p.wall_s = time.perf_counter() - started
        if interrupted:
            log.info("Interrupted at step %d: saving the model as it is now.", p.step)
        elif self.history[-1]["step"] != p.step and run_tokens:
            # Steps since the last evaluation: measure the weights that are about to be saved.
            self._after_evaluation(self._evaluate(), run_loss / run_tokens, p.wall_s)
        self._save(self.out)
        return run_summary(
            self.out,
            self.data,
            self.loss_name,
            p,
            self.history,
            interrupted=interrupted,
            early_stopped=stopped,
        )
