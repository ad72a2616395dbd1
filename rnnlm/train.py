"""The training loop: corpus -> vocabulary -> SGD steps -> evaluations -> checkpoints.

Fixed order per step: draw the next sentence, one compiled SGD step, maybe evaluate
(halving the learning rate when the loss rose, as the tutorial does) and save.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import checkpoint
from rnnlm.batches import length_batches, pad_batch
from rnnlm.config import Config
from rnnlm.corpus import Corpus, load_corpus
from rnnlm.errors import RnnlmError
from rnnlm.vocab import Vocabulary, build_vocabulary, count_tokens

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 64


@dataclass
class Prepared:
    corpus: Corpus
    vocab: Vocabulary
    sentences: list[np.ndarray]  # encoded, both markers included
    unique_tokens: int


def prepare_data(config: Config) -> Prepared:
    """Read, tokenize, build the vocabulary and encode, logging what the tutorial prints."""
    data = config.data
    corpus = load_corpus(
        data.corpus, format=data.format, column=data.column, lowercase=data.lowercase
    )
    counts = count_tokens(corpus.sentences)
    vocab = build_vocabulary(counts, data.vocab_size, data.min_count)
    log.info("Parsed %d sentences.", len(corpus.sentences))
    log.info("Found %d unique words tokens.", len(counts))
    log.info("Using vocabulary size %d.", len(vocab))
    rarest = min(
        (i for i, word in enumerate(vocab.words) if word != vocab.unknown),
        key=lambda i: (vocab.counts[i], -i),
    )
    log.info(
        "The least frequent word in our vocabulary is '%s' and appeared %d times.",
        vocab.words[rarest],
        vocab.counts[rarest],
    )
    sentences = [vocab.encode(tokens) for tokens in corpus.sentences]
    return Prepared(corpus, vocab, sentences, len(counts))


def mean_loss(model: Any, sentences: list[np.ndarray]) -> float:
    """Cross-entropy per predicted token (words and SENTENCE_END), in nats."""
    total, count = 0.0, 0.0
    for _, x, y, mask in length_batches(sentences, EVAL_BATCH_SIZE, model.config.dtype):
        total -= float(model.log_probs(x, y, mask).sum(dtype=np.float64))
        count += float(mask.sum())
    return total / count


@contextlib.contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """Turn Ctrl-C into a flag the loop checks between steps, so no step is cut in half."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    config: Config,
    prepared: Prepared,
    out: str | Path,
    *,
    mode: str | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Train with the tutorial's per-sentence SGD; returns a summary of the run."""
    import aesara
    from tqdm import tqdm

    from rnnlm.model import Model
    from rnnlm.optim import sgd

    out = Path(out)
    if out.parent and not out.parent.exists():
        raise RnnlmError(f"output folder does not exist: {out.parent}")
    tc = config.train
    rng = np.random.default_rng(tc.seed)
    model_config = config.model
    model = Model(model_config, seed=tc.seed, mode=mode)
    log.info(
        "Model: %s, hidden %d, vocabulary %d, %d parameters, bptt_truncate %d",
        model_config.cell,
        model_config.hidden_size,
        model_config.vocab_size,
        model.params.count(),
        model_config.bptt_truncate,
    )
    sentences = prepared.sentences
    eval_set = [sentences[i] for i in rng.permutation(len(sentences))[: tc.eval_sentences]]
    learning_rate = aesara.shared(np.asarray(tc.learning_rate, dtype=model_config.dtype))
    compile_start = time.perf_counter()
    train_step = model.compile_train_step(sgd, learning_rate)
    initial = mean_loss(model, eval_set)
    log.info("Compiled in %.1f s.", time.perf_counter() - compile_start)

    history: list[dict[str, Any]] = []
    progress = {
        "epoch": 0,
        "step": 0,
        "examples_seen": 0,
        "tokens_seen": 0,
        "learning_rate": tc.learning_rate,
        "last_loss": initial,
    }
    _log_eval(progress, None, initial, 0.0)
    eval_every = tc.eval_every or len(sentences)
    start = time.perf_counter()
    run_loss, run_tokens = 0.0, 0.0
    previous_loss = initial
    interrupted = False

    def save() -> None:
        progress["learning_rate"] = float(learning_rate.get_value())
        checkpoint.save(
            out,
            checkpoint.Checkpoint(config, prepared.vocab, model.params.values_dict(), progress),
        )

    total_steps = tc.epochs * len(sentences)
    order = (i for _ in range(tc.epochs) for i in rng.permutation(len(sentences)))
    with (
        interrupt_flag() as stop,
        tqdm(
            total=total_steps,
            disable=not show_progress,
            file=sys.stderr,
            unit="sent",
            dynamic_ncols=True,
            leave=False,
        ) as bar,
    ):
        for index in order:
            x, y, mask = pad_batch([sentences[index]], model_config.dtype)
            nll, n_tokens = train_step(x, y, mask)
            nll, n_tokens = float(nll), float(n_tokens)
            if not math.isfinite(nll):
                raise RnnlmError(
                    f"the loss became {nll} at step {progress['step'] + 1}: try a smaller --lr"
                )
            run_loss += nll
            run_tokens += n_tokens
            progress["step"] += 1
            progress["examples_seen"] += 1
            progress["tokens_seen"] += int(n_tokens)
            progress["epoch"] = progress["step"] / len(sentences)
            bar.update(1)
            if progress["step"] % 50 == 0:
                bar.set_postfix(loss=f"{run_loss / max(run_tokens, 1):.3f}", refresh=False)
            if progress["step"] % eval_every == 0:
                elapsed = time.perf_counter() - start
                loss = mean_loss(model, eval_set)
                record = _log_eval(progress, run_loss / run_tokens, loss, elapsed)
                history.append(record)
                run_loss, run_tokens = 0.0, 0.0
                if loss > previous_loss:
                    learning_rate.set_value(learning_rate.get_value() * 0.5)
                    log.info("Loss rose: learning rate halved to %g.", learning_rate.get_value())
                previous_loss = loss
                progress["last_loss"] = loss
                save()
            if stop.is_set():
                interrupted = True
                break
            continue
    if interrupted:
        log.info("Interrupted at step %d: saving the model as it is now.", progress["step"])
    save()
    elapsed = time.perf_counter() - start
    return {
        "model": str(out),
        "corpus": prepared.corpus.source,
        "sentences": len(sentences),
        "vocab_size": len(prepared.vocab),
        "steps": progress["step"],
        "epochs": progress["epoch"],
        "tokens_seen": progress["tokens_seen"],
        "wall_s": round(elapsed, 2),
        "tokens_per_s": round(progress["tokens_seen"] / max(elapsed, 1e-9), 1),
        "initial_loss": initial,
        "final_loss": progress["last_loss"],
        "interrupted": interrupted,
        "history": history,
    }


def _log_eval(
    progress: dict[str, Any], train_loss: float | None, loss: float, elapsed: float
) -> dict[str, Any]:
    record = {
        "step": progress["step"],
        "epoch": round(progress["epoch"], 3),
        "examples_seen": progress["examples_seen"],
        "learning_rate": progress["learning_rate"],
        "train_loss": train_loss,
        "loss": loss,
        "perplexity": math.exp(loss),
        "tokens_per_s": progress["tokens_seen"] / elapsed if elapsed else None,
        "wall_s": elapsed,
    }
    running = f"train {train_loss:.4f}  " if train_loss is not None else ""
    speed = f"  {record['tokens_per_s']:.0f} tokens/s" if elapsed else ""
    log.info(
        "step %d  epoch %.2f  examples %d  %sloss %.4f  perplexity %.1f%s",
        progress["step"],
        progress["epoch"],
        progress["examples_seen"],
        running,
        loss,
        math.exp(loss),
        speed,
    )
    return record
