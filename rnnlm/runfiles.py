"""What a training run leaves on disk besides the checkpoint format itself:

    NAME.npz            the latest state (`rnnlm.checkpoint`), written at every evaluation
    NAME.best.npz       the state with the lowest evaluation loss so far
    NAME.metrics.jsonl  one JSON line per evaluation

and `TrainProgress`, the record of where training stands that every checkpoint carries (as
the same JSON table rnnlm 0.1 wrote). `rnnlm info` and `rnnlm plot` read these without
importing the training loop. Also what a run reports as it goes: the log's lines, the
progress bar's text, and the summary it ends with.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnlm.errors import RnnlmError

if TYPE_CHECKING:
    from rnnlm.config import ModelConfig
    from rnnlm.data import TrainingData


def metrics_path(out: Path) -> Path:
    """Where every evaluation is appended as one JSON line, beside the checkpoint."""
    return out.with_name(out.stem + ".metrics.jsonl")


def best_path(out: Path) -> Path:
    """Where the best model (lowest evaluation loss) is kept, beside the latest."""
    return out.with_name(out.stem + ".best" + out.suffix)


def make_folder(out: Path) -> None:
    """The folder the run's files go to, created if need be (`--out runs/new/m.npz`)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RnnlmError(
            f"cannot create the output folder {out.parent}: {error.strerror or error}"
        ) from None


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700))


@dataclass
class TrainProgress:
    """Where a run stands: position in the data, counters, schedule and losses."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch done
    step: int = 0  # updates applied (a rolled-back batch is not one)
    examples_seen: int = 0  # sentences, or stream columns, trained on
    tokens_seen: int = 0  # real tokens trained on
    learning_rate: float = 0.0
    best_loss: float | None = None  # lowest evaluation loss so far
    last_loss: float | None = None  # evaluation loss of the weights now in place
    bad_evals: int = 0  # evaluations in a row without improvement
    wall_s: float = 0.0  # training time so far, over all resumed runs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def restored(self, stored: dict[str, Any]) -> TrainProgress:
        """This progress with a checkpoint's values, each checked (a model file is untrusted);
        keys it does not know (an imported model's "imported_from") are left alone."""
        values = {}
        for f in dataclasses.fields(self):
            if f.name not in stored:
                continue
            value = stored[f.name]
            counter = f.type == "int"
            if isinstance(value, bool) or not (
                (isinstance(value, int) and value >= 0)
                if counter
                else isinstance(value, Real) or (value is None and "None" in f.type)
            ):
                raise RnnlmError(f"training progress {f.name} is {value!r}, not a valid value")
            values[f.name] = value
        return dataclasses.replace(self, **values)


def loss_name(bidirectional: bool) -> str:
    """What an evaluation measures. A bidirectional model predicts each word from both sides,
    so its cross-entropy is a fill-in loss, never to be read as a perplexity."""
    return "fill_loss" if bidirectional else "loss"


def record_loss(record: dict[str, Any]) -> tuple[str, Any]:
    """The name and value of the loss a metrics record holds."""
    name = "fill_loss" if "fill_loss" in record else "loss"
    return name, record.get(name)


def evaluation_record(
    progress: TrainProgress,
    epoch: float,
    learning_rate: float,
    train_loss: float | None,
    loss: float,
    eval_set: str,
    elapsed: float,
    bidirectional: bool,
) -> dict[str, Any]:
    """One metrics line: `loss` measured on `eval_set` ("valid", or "train-sample": a fixed
    sample of training sentences), `train_loss` the running mean since the last evaluation,
    `elapsed` the training seconds so far.
    A language model's losses come with their perplexities; a fill-in model's never do."""
    name = loss_name(bidirectional)
    record: dict[str, Any] = {
        "step": progress.step,
        "epoch": epoch,
        "tokens_seen": progress.tokens_seen,
        # float(np.float32(0.005)) is 0.004999999888241291: keep the digits that mean something.
        "learning_rate": float(f"{learning_rate:.6g}"),
        f"train_{name}": train_loss,
    }
    if not bidirectional:
        record["train_perplexity"] = perplexity(train_loss) if train_loss is not None else None
    record |= {"eval_set": eval_set, name: loss}
    if not bidirectional:
        record["perplexity"] = perplexity(loss)
    return record | {
        "tokens_per_s": progress.tokens_seen / elapsed if elapsed else None,
        "wall_s": elapsed,
    }


def shown_loss(name: str, loss: float) -> str:
    """A loss as the log shows it: a language model's with its perplexity, a fill-in model's
    named as what it is."""
    if name == "fill_loss":
        return f"fill loss {loss:.4f}"
    return f"{loss:.4f} (ppl {perplexity(loss):.1f})"


def log_line(record: dict[str, Any]) -> str:
    """The training log's line for one evaluation record."""
    name, loss = record_loss(record)
    train_loss = record.get(f"train_{name}")
    return "".join(
        [
            f"step {record['step']}  epoch {record['epoch']:.2f}  lr {record['learning_rate']:.4g}",
            f"  train {shown_loss(name, train_loss)}" if train_loss is not None else "",
            "  valid " if record["eval_set"] == "valid" else "  eval ",
            shown_loss(name, loss),
            f"  {record['tokens_per_s']:.0f} tokens/s" if record["wall_s"] else "",
        ]
    )


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    with metrics_path(out).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def model_line(model: ModelConfig, parameters: int, compile_s: float) -> str:
    """The log's line for the model a run built, and how long compiling it took."""
    direction = " (bidirectional)" if model.bidirectional else ""
    return (
        f"Model: {model.cell}, {model.layers} layer(s) of {model.hidden_size}{direction}, "
        f"vocabulary {model.vocab_size}, {model.softmax} softmax, {parameters} parameters; "
        f"compiled in {compile_s:.1f} s."
    )


def bar_text(name: str, mean_loss: float, tokens_per_s: float) -> str:
    """The progress bar's running loss (a language model's with its perplexity) and speed."""
    shown = f"{name}={mean_loss:.4f}"
    if name == "loss":
        shown += f", ppl={perplexity(mean_loss):.1f}"
    return f"{shown}, tok/s={tokens_per_s:.0f}"


def run_summary(
    out: Path,
    data: TrainingData,
    name: str,
    progress: TrainProgress,
    history: list[dict[str, Any]],
    *,
    interrupted: bool,
    early_stopped: bool,
) -> dict[str, Any]:
    """What a finished (or interrupted) run returns: its files, data, counters, losses (of
    the kind `name` says) and every evaluation record."""
    p = progress
    return {
        "model": str(out),
        "best_model": str(best_path(out)),
        "corpus": data.source,
        "sentences": len(data.sentences),
        "vocab_size": len(data.vocab),
        "loss_name": name,  # what the losses below measure
        "steps": p.step,
        "epochs": p.epoch,
        "tokens_seen": p.tokens_seen,
        "wall_s": round(p.wall_s, 2),
        "tokens_per_s": round(p.tokens_seen / max(p.wall_s, 1e-9), 1),
        "initial_loss": history[0][name] if history else None,
        "final_loss": p.last_loss,
        "best_loss": p.best_loss,
        "interrupted": interrupted,
        "early_stopped": early_stopped,
        "history": history,
    }
