"""The training loop: batches -> compiled steps -> evaluations -> schedule -> checkpoints.

Fixed order per step: next batch, one compiled update, then maybe an evaluation (schedule,
rollback, best model, early stopping) and a checkpoint. Everything random is derived from
the seed and the position (epoch, step), so a resumed run retraces an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import checkpoint
from rnnlm.batches import stream, stream_batches, training_batches
from rnnlm.config import Config
from rnnlm.corpus import Corpus, load_corpus
from rnnlm.distributed import Comm, LocalComm, train_step
from rnnlm.errors import RnnlmError
from rnnlm.evaluate import sentence_log_probs
from rnnlm.vocab import Vocabulary, build_vocabulary, count_tokens

log = logging.getLogger(__name__)

MAX_ROLLBACKS = 3  # non-finite losses in a row before training gives up


@dataclass
class Prepared:
    corpus: Corpus  # from a prepared folder: its source only, the sentences stay on disk
    vocab: Vocabulary
    # Encoded training sentences, both markers included: a list, or memory-mapped shards.
    sentences: Sequence[np.ndarray]
    valid: Sequence[np.ndarray] = field(default_factory=list)  # empty: no validation set


def prepare_data(config: Config, vocab: Vocabulary | None = None) -> Prepared:
    """Read and tokenize, build the vocabulary (unless given), encode, split off validation.

    Logs what the tutorial prints: sentences parsed, unique tokens, the rarest word kept.
    With `data.prepared`, the sentences and vocabulary come from that folder instead.
    """
    data = config.data
    if data.prepared:
        return _prepared_data(config, vocab)

    def read(path: str | None) -> Corpus:
        return load_corpus(
            path,
            format=data.format,
            column=data.column,
            lowercase=data.lowercase,
            level=data.level,
        )

    corpus = read(data.corpus)
    sentences = corpus.sentences
    valid_tokens: list[list[str]] = []
    if data.valid:
        valid_tokens = read(data.valid).sentences
    elif data.valid_fraction:
        valid_order, train_order = hold_out(len(sentences), data.valid_fraction, config.train.seed)
        valid_tokens = [sentences[i] for i in valid_order]
        sentences = [sentences[i] for i in train_order]
    if vocab is None:
        counts = count_tokens(sentences)
        vocab = build_vocabulary(counts, data.vocab_size, data.min_count, data.unknown)
        log.info("Parsed %d sentences.", len(sentences))
        log.info("Found %d unique words tokens.", len(counts))
        log.info("Using vocabulary size %d.", len(vocab))
        rarest = max(
            (i for i, word in enumerate(vocab.words) if word != vocab.unknown),
            key=lambda i: (-vocab.counts[i], i),
        )
        log.info(
            "The least frequent word in our vocabulary is '%s' and appeared %d times.",
            vocab.words[rarest],
            vocab.counts[rarest],
        )
    if valid_tokens:
        log.info("Validation: %d sentences.", len(valid_tokens))
    return Prepared(
        corpus,
        vocab,
        [vocab.encode(tokens) for tokens in sentences],
        [vocab.encode(tokens) for tokens in valid_tokens],
    )


def hold_out(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the validation and the training sentences: a seeded shuffle, then a cut."""
    held_out = int(count * fraction)
    if held_out < 1 or held_out >= count:
        raise RnnlmError(
            f"valid_fraction {fraction} leaves no validation or no training sentences "
            f"out of {count}"
        )
    order = np.random.default_rng(seed).permutation(count)
    return order[:held_out], order[held_out:]


def _prepared_data(config: Config, vocab: Vocabulary | None) -> Prepared:
    """Sentences memory-mapped from a `rnnlm prepare` folder, with its stored vocabulary.

    Its vocabulary counts every sentence in the folder, held-out ones too (it was built
    before any split); a --valid file is read the way the folder's corpus was.
    """
    from rnnlm.shards import Subset, open_prepared

    stored = open_prepared(config.data.prepared)
    if vocab is not None and vocab != stored.vocab:
        raise RnnlmError(
            f"{stored.folder}: its vocabulary differs from the checkpoint's; the folder was "
            "prepared again since that run started"
        )
    sentences: Sequence[np.ndarray] = stored.sentences
    valid: Sequence[np.ndarray] = []
    data = config.data
    if data.valid:
        corpus = load_corpus(
            data.valid,
            format=stored.data.format,
            column=stored.data.column,
            lowercase=stored.data.lowercase,
            level=stored.data.level,
        )
        valid = [stored.vocab.encode(tokens) for tokens in corpus.sentences]
    elif data.valid_fraction:
        valid_order, train_order = hold_out(len(sentences), data.valid_fraction, config.train.seed)
        valid, sentences = Subset(sentences, valid_order), Subset(sentences, train_order)
    log.info(
        "Prepared data %s: %d sentences, %d tokens, vocabulary %d.",
        stored.folder,
        len(stored.sentences),
        stored.num_tokens,
        len(stored.vocab),
    )
    if valid:
        log.info("Validation: %d sentences.", len(valid))
    return Prepared(Corpus(str(stored.folder), []), stored.vocab, sentences, valid)


def evaluate(model: Any, sentences: list[np.ndarray], mode: str) -> float:
    """Cross-entropy per predicted token, in nats, without dropout."""
    log_probs = sentence_log_probs(model, sentences, mode)
    return -math.fsum(lp.sum() for lp in log_probs) / sum(len(lp) for lp in log_probs)


@contextlib.contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """Turn Ctrl-C into a flag the loop checks between steps, so no step is cut in half.

    SIGUSR1 does the same: mpirun forwards it to every rank, while its Ctrl-C kills them.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        flag.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGUSR1)}
    try:
        yield flag
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def _logs_above_the_bar() -> contextlib.AbstractContextManager:
    """Log lines go above the progress bar instead of onto its line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    # The command line gives the "rnnlm" logger its own stderr handler; a library user's
    # console handler sits on the root logger.
    logger = logging.getLogger("rnnlm")
    return logging_redirect_tqdm([logger if logger.handlers else logging.root])


def metrics_path(out: Path) -> Path:
    """Where every evaluation is appended as one JSON line, beside the checkpoint."""
    return out.with_name(out.stem + ".metrics.jsonl")


def best_path(out: Path) -> Path:
    """Where the best model (lowest evaluation loss) is kept, beside the latest."""
    return out.with_name(out.stem + ".best" + out.suffix)


class Trainer:
    """One training run; `run()` returns a summary. Owns the schedule and the checkpoints."""

    def __init__(
        self,
        config: Config,
        prepared: Prepared,
        out: str | Path,
        *,
        compile_mode: str | None = None,
        show_progress: bool = False,
        resume: checkpoint.Checkpoint | None = None,
        comm: Comm | None = None,
    ) -> None:
        from rnnlm import backend
        from rnnlm.model import Model
        from rnnlm.optim import updates_for

        # The vocabulary built from the corpus decides the model's vocabulary size.
        model_config = dataclasses.replace(config.model, vocab_size=len(prepared.vocab))
        config = dataclasses.replace(config, model=model_config)
        tc = config.train
        if config.model.bidirectional and tc.mode == "stream":
            raise RnnlmError("a bidirectional model trains in sentence mode only")
        self.config, self.prepared, self.out = config, prepared, Path(out)
        if not self.out.parent.is_dir():
            raise RnnlmError(f"output folder does not exist: {self.out.parent}")
        # Data-parallel ranks (see rnnlm.distributed): all train, only rank 0 writes.
        self.comm = comm if comm is not None else LocalComm()
        self.is_main = self.comm.rank == 0
        self.show_progress = show_progress and self.is_main
        self.model = Model(config.model, seed=tc.seed, compile_mode=compile_mode)
        dtype = config.model.dtype
        self.learning_rate = backend.shared(np.asarray(tc.learning_rate, dtype=dtype), name="lr")
        self.optimizer_state: dict = {}

        def updates(params, grads):
            result, self.optimizer_state = updates_for(tc, params, grads, self.learning_rate)
            return result

        started = time.perf_counter()
        self.train_step = train_step(self.model, updates, self.comm)
        log.info(
            "Model: %s, %d layer(s) of %d%s, vocabulary %d, %d parameters; compiled in %.1f s.",
            config.model.cell,
            config.model.layers,
            config.model.hidden_size,
            " (bidirectional)" if config.model.bidirectional else "",
            config.model.vocab_size,
            self.model.params.count(),
            time.perf_counter() - started,
        )
        if prepared.valid:
            self.eval_set = prepared.valid
        else:
            pick = np.random.default_rng(tc.seed).permutation(len(prepared.sentences))
            self.eval_set = [prepared.sentences[i] for i in pick[: tc.eval_sentences]]
        self.progress: dict[str, Any] = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "examples_seen": 0,
            "tokens_seen": 0,
            "learning_rate": tc.learning_rate,
            "best_loss": None,
            "last_loss": None,
            "bad_evals": 0,
            "wall_s": 0.0,
        }
        self.carry = None  # stream mode: states carried from the last batch
        self.rollbacks = 0  # non-finite losses in a row
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._restore(resume)
        self._share_weights()

    # -- checkpoints ------------------------------------------------------------------------

    def _checkpoint(self) -> checkpoint.Checkpoint:
        self.progress["learning_rate"] = float(self.learning_rate.get_value())
        return checkpoint.Checkpoint(
            self.config,
            self.prepared.vocab,
            self.model.params.values_dict(),
            dict(self.progress),
            optimizer={name: var.get_value() for name, var in self.optimizer_state.items()},
            carry=list(self.carry) if self.carry is not None else [],
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
        for var in [*self.model.params.values(), *self.optimizer_state.values()]:
            value = var.get_value()
            self.comm.broadcast(value)
            var.set_value(value)

    def _anyone(self, flag: bool) -> bool:
        """Whether any rank's flag is up: all ranks stop at the same step, or none does."""
        votes = np.array([float(flag)])
        self.comm.allreduce_sum(votes)
        return bool(votes[0])

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        self._load_weights(ckpt)
        self.progress.update(ckpt.progress)
        self.learning_rate.set_value(
            np.asarray(self.progress["learning_rate"], self.learning_rate.dtype)
        )
        self.carry = ckpt.carry or None
        log.info(
            "Resuming at epoch %d, step %d, learning rate %g.",
            self.progress["epoch"] + 1,
            self.progress["step"],
            self.progress["learning_rate"],
        )

    # -- one epoch of batches ---------------------------------------------------------------

    def _batches(self, epoch: int):
        tc, dtype = self.config.train, self.config.model.dtype
        rng = np.random.default_rng([tc.seed, epoch])
        if tc.mode == "stream":
            return list(
                stream_batches(stream(self.prepared.sentences, tc.batch_size), tc.bptt, dtype)
            )
        return training_batches(self.prepared.sentences, tc.batch_size, rng, dtype)

    # -- evaluation and schedule ------------------------------------------------------------

    def _evaluate(self) -> float:
        # Rank 0's weights and loss everywhere, so every rank takes the same schedule decision.
        self._share_weights()
        loss = np.array([evaluate(self.model, self.eval_set, self.config.train.mode)])
        self.comm.broadcast(loss)
        return float(loss[0])

    def _after_evaluation(self, loss: float, train_loss: float | None, elapsed: float) -> bool:
        """Apply the schedule; returns True when early stopping says stop."""
        tc, p = self.config.train, self.progress
        record = {
            "step": p["step"],
            "epoch": round(p["epoch"] + p["batch"] / max(self.epoch_batches, 1), 3),
            "tokens_seen": p["tokens_seen"],
            # float(np.float32(0.005)) is 0.004999999888241291: keep the digits that mean something.
            "learning_rate": float(f"{float(self.learning_rate.get_value()):.6g}"),
            "train_loss": train_loss,  # running mean over the steps since the last evaluation
            "train_perplexity": math.exp(min(train_loss, 700)) if train_loss is not None else None,
            # `loss` and `perplexity` were measured on the validation data, or without any on
            # a fixed sample of --eval-sentences training sentences.
            "eval_set": "valid" if self.prepared.valid else "train-sample",
            "loss": loss,
            "perplexity": math.exp(min(loss, 700)),
            "tokens_per_s": p["tokens_seen"] / elapsed if elapsed else None,
            "wall_s": elapsed,
        }
        self.history.append(record)
        if self.is_main:
            with metrics_path(self.out).open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        what = "valid" if self.prepared.valid else "eval"
        running = (
            f"  train {train_loss:.4f} (ppl {math.exp(min(train_loss, 700)):.1f})"
            if train_loss is not None
            else ""
        )
        speed = f"  {record['tokens_per_s']:.0f} tokens/s" if elapsed else ""
        log.info(
            "step %d  epoch %.2f  lr %.4g%s  %s %.4f (ppl %.1f)%s",
            p["step"],
            record["epoch"],
            record["learning_rate"],
            running,
            what,
            loss,
            record["perplexity"],
            speed,
        )
        p["last_loss"] = loss
        best = p["best_loss"]
        if best is None or loss < best:
            p["best_loss"], p["bad_evals"] = loss, 0
            self._save(best_path(self.out))
            return False
        p["bad_evals"] += 1
        if tc.halve_on_rise:
            # Mikolov's RNNLM: back to the best weights, then take smaller steps.
            self.model.params.assign(checkpoint.load(best_path(self.out)).params)
            p["last_loss"] = best  # the loss of the weights now in place
            self.learning_rate.set_value(self.learning_rate.get_value() * 0.5)
            log.info(
                "Loss rose (best %.4f): back to the best weights, learning rate halved to %g.",
                best,
                self.learning_rate.get_value(),
            )
        if tc.patience and p["bad_evals"] >= tc.patience:
            log.info("No improvement in %d evaluations: stopping early.", p["bad_evals"])
            return True
        return False

    def _train_on(self, x, y, mask) -> tuple[float, float] | None:
        """One update; (summed NLL, tokens), or None when a non-finite loss was rolled back."""
        tc, p, model = self.config.train, self.progress, self.model
        states = self.carry if self.carry is not None else model.initial_states(x.shape[1])
        if self.config.model.dropout:
            model.reseed([tc.seed, p["step"]])
        out = self.train_step(x, y, mask, *states)
        nll, n_tokens = float(out[0]), float(out[1])
        if not math.isfinite(nll):
            self._roll_back(nll)
            return None
        self.rollbacks = 0
        if tc.mode == "stream":
            self.carry = [np.asarray(state) for state in out[2:]]
        p["step"] += 1
        p["examples_seen"] += x.shape[1]
        p["tokens_seen"] += int(n_tokens)
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
            self.progress["step"] + 1,
            last.progress["step"],
            self.learning_rate.get_value(),
        )
        if self.rollbacks >= MAX_ROLLBACKS:
            self._save(self.out)  # the good weights, just restored
            raise RnnlmError(
                f"the loss was {loss} after {MAX_ROLLBACKS} rollbacks in a row (learning rate now "
                f"{self.learning_rate.get_value():g}): training stopped, {self.out} holds the "
                "last good weights; try a smaller --lr or --clip-norm"
            )

    def _end_of_epoch(self) -> None:
        tc, p = self.config.train, self.progress
        p["epoch"] += 1
        p["batch"] = 0
        self.carry = None
        if tc.lr_decay < 1 and p["epoch"] >= tc.lr_decay_start:
            self.learning_rate.set_value(self.learning_rate.get_value() * tc.lr_decay)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        tc, p = self.config.train, self.progress
        started = time.perf_counter() - p["wall_s"]
        self.epoch_batches = len(self._batches(0))
        eval_every = tc.eval_every or self.epoch_batches
        run_loss, run_tokens = 0.0, 0.0
        stopped = interrupted = False
        bar_started, bar_tokens = time.perf_counter(), p["tokens_seen"]
        with (
            interrupt_flag() as interrupt,
            tqdm(
                total=tc.epochs * self.epoch_batches,
                initial=p["epoch"] * self.epoch_batches + p["batch"],
                disable=not self.show_progress,
                file=sys.stderr,
                # Batches give the ETA; the speed that means something, tokens/s, is a postfix.
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} batches "
                "[{elapsed}<{remaining}{postfix}]",
                dynamic_ncols=True,
                leave=False,
            ) as bar,
            _logs_above_the_bar() if self.show_progress else contextlib.nullcontext(),
        ):
            if p["best_loss"] is None and p["step"] == 0:
                self._after_evaluation(self._evaluate(), None, 0.0)  # saves the best model
            interrupted = self._anyone(interrupt.is_set())
            while p["epoch"] < tc.epochs and not (stopped or interrupted):
                batches = self._batches(p["epoch"])
                for x, y, mask in batches[p["batch"] :]:
                    trained = self._train_on(x, y, mask)
                    p["batch"] += 1
                    bar.update(1)
                    if trained is not None:
                        run_loss += trained[0]
                        run_tokens += trained[1]
                        if p["step"] % 20 == 0:
                            mean = run_loss / run_tokens
                            speed = (p["tokens_seen"] - bar_tokens) / (
                                time.perf_counter() - bar_started
                            )
                            bar.set_postfix_str(
                                f"loss={mean:.4f}, ppl={math.exp(min(mean, 700)):.1f}, "
                                f"tok/s={speed:.0f}",
                                refresh=False,
                            )
                    if p["batch"] == len(batches):
                        self._end_of_epoch()
                    if trained is not None and p["step"] % eval_every == 0:
                        p["wall_s"] = time.perf_counter() - started
                        stopped = self._after_evaluation(
                            self._evaluate(), run_loss / run_tokens, p["wall_s"]
                        )
                        run_loss, run_tokens = 0.0, 0.0
                        self._save(self.out)
                    interrupted = self._anyone(interrupt.is_set())
                    if stopped or interrupted:
                        break
        p["wall_s"] = time.perf_counter() - started
        if interrupted:
            log.info("Interrupted at step %d: saving the model as it is now.", p["step"])
        elif self.history[-1]["step"] != p["step"] and run_tokens:
            # Steps since the last evaluation: measure the weights that are about to be saved.
            self._after_evaluation(self._evaluate(), run_loss / run_tokens, p["wall_s"])
        self._save(self.out)
        return {
            "model": str(self.out),
            "best_model": str(best_path(self.out)),
            "corpus": self.prepared.corpus.source,
            "sentences": len(self.prepared.sentences),
            "vocab_size": len(self.prepared.vocab),
            "steps": p["step"],
            "epochs": p["epoch"],
            "tokens_seen": p["tokens_seen"],
            "wall_s": round(p["wall_s"], 2),
            "tokens_per_s": round(p["tokens_seen"] / max(p["wall_s"], 1e-9), 1),
            "initial_loss": self.history[0]["loss"] if self.history else None,
            "final_loss": p["last_loss"],
            "best_loss": p["best_loss"],
            "interrupted": interrupted,
            "early_stopped": stopped,
            "history": self.history,
        }
