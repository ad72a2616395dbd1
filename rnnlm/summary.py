"""What a model file holds, and its learning curves: `rnnlm info` and `rnnlm plot`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnlm import checkpoint, flags
from rnnlm.architecture import param_shapes, parameter_count
from rnnlm.config import ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.runfiles import metrics_path, perplexity, record_loss


def numeric(value: Any) -> int | float | None:
    """`value` if it is a number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def shown(value: Any, spec: str) -> str:
    """A number formatted by `spec`; anything else as it is (a model file may hold anything)."""
    return str(value) if numeric(value) is None else format(value, spec)


def describe(path: str | Path, words: int = 10) -> dict[str, Any]:
    """Architecture, sizes, vocabulary, config, progress and metrics of a checkpoint."""
    path = Path(path)
    ckpt = checkpoint.load(path)
    model = ckpt.config.model
    vocab = ckpt.vocab
    specials = {vocab.start, vocab.end, vocab.unknown}
    by_count = sorted(
        (i for i, word in enumerate(vocab.words) if word not in specials),
        key=lambda i: (-vocab.counts[i], i),
    )
    return {
        "file": str(path),
        "format_version": checkpoint.FORMAT_VERSION,
        "cell": model.cell,
        "layers": model.layers,
        "hidden_size": model.hidden_size,
        "embedding_size": model.embedding_size,
        "bidirectional": model.bidirectional,
        "softmax": output_summary(model),
        "parameters": parameter_count(model),
        "parameter_shapes": {name: list(shape) for name, shape in param_shapes(model).items()},
        "vocab_size": len(vocab),
        "level": ckpt.config.data.level,
        "most_frequent": [[vocab.words[i], vocab.counts[i]] for i in by_count[:words]],
        "least_frequent": [[vocab.words[i], vocab.counts[i]] for i in by_count[-words:]],
        "config": ckpt.config.to_dict(),
        "progress": ckpt.progress,
        "saved_with": ckpt.backend,  # {} for files from before rnnlm recorded it
        "running_on": flags.describe(),
        "metrics": metrics_summary(read_metrics(metrics_path(path))),
    }


def output_summary(model: ModelConfig) -> dict[str, Any]:
    """The output layer's kind and what shapes it (its tables are in the checkpoint)."""
    out = model.output
    if model.softmax == "class":
        return {"kind": "class", "classes": out.n_classes}
    if model.softmax == "adaptive":
        return {"kind": "adaptive", "cutoffs": list(out.head_cutoffs), "div_value": out.div_value}
    if model.softmax == "sampled":
        return {"kind": "sampled", "samples": out.samples, "sampler": out.sampler}
    return {"kind": model.softmax}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file; [] when there is none."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise RnnlmError(f"{path}: line {number} is not JSON") from None
        if not (
            isinstance(record, dict)
            and isinstance(record.get("step"), int)
            and numeric(record_loss(record)[1]) is not None
        ):
            raise RnnlmError(f"{path}: line {number} is not an evaluation record")
        records.append(record)
    return records


def metrics_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """First, last and best loss, named as the records name it: `loss` (with the best
    perplexity) for a language model, `fill_loss` (never a perplexity) for a fill-in one."""
    if not records:
        return None
    name, _ = record_loss(records[-1])
    best = min(records, key=lambda r: record_loss(r)[1])
    summary = {
        "evaluations": len(records),
        f"first_{name}": record_loss(records[0])[1],
        f"last_{name}": record_loss(records[-1])[1],
        f"best_{name}": record_loss(best)[1],
    }
    if name == "loss":
        summary["best_perplexity"] = perplexity(best["loss"])
    return summary | {
        "best_step": best["step"],
        "tokens_seen": records[-1].get("tokens_seen"),
        "wall_s": records[-1].get("wall_s"),
    }


def find_metrics(run: str | Path) -> Path:
    """A metrics file from a checkpoint, a metrics.jsonl, or a folder holding one."""
    run = Path(run)
    if run.is_dir():
        found = sorted(run.glob("*.metrics.jsonl"))
        if len(found) != 1:
            raise RnnlmError(f"{run}: expected one *.metrics.jsonl, found {len(found)}")
        return found[0]
    if run.name.endswith(".jsonl"):
        path = run
    else:
        path = metrics_path(run)
    if not path.is_file():
        raise RnnlmError(f"no metrics file at {path}")
    return path


def plot_run(run: str | Path, out: str | Path) -> dict[str, Any]:
    """`rnnlm plot`: the learning curves of a run as a PNG, and a summary of its metrics."""
    metrics = find_metrics(run)
    records = read_metrics(metrics)
    if not records:
        raise RnnlmError(f"{metrics} holds no evaluations yet")
    plot_curves(records, out, metrics.name)
    summary = {"out": str(out), "metrics": str(metrics), "points": len(records)}
    return summary | metrics_summary(records)


def plot_curves(records: list[dict[str, Any]], out: str | Path, title: str) -> None:
    """Train and evaluation perplexity (a fill-in model: its loss) against tokens seen,
    learning rate below, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Older records, or hand-made ones, may lack the token count: the step stands in.
    tokens = [
        r["step"] if numeric(r.get("tokens_seen")) is None else r["tokens_seen"] for r in records
    ]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    name, _ = record_loss(records[-1])
    language_model = name == "loss"

    def shown(loss: float) -> float:
        return perplexity(loss) if language_model else loss

    trained = [
        (t, shown(r[f"train_{name}"]))
        for t, r in zip(tokens, records, strict=True)
        if numeric(r.get(f"train_{name}")) is not None
    ]
    if trained:
        top.plot(*zip(*trained, strict=True), marker=".", label="train (running)")
    measured_on = {"valid": "validation", "train-sample": "evaluation (training sample)"}
    top.plot(
        tokens,
        [shown(record_loss(r)[1]) for r in records],
        marker="o",
        label=measured_on.get(records[-1].get("eval_set"), "evaluation"),
    )
    if language_model:
        top.set_yscale("log")
    top.set_ylabel("perplexity" if language_model else "fill-in loss (nats per word)")
    top.set_title(title)
    top.grid(True, which="both", alpha=0.3)
    top.legend()
    rates = [
        (t, r["learning_rate"])
        for t, r in zip(tokens, records, strict=True)
        if numeric(r.get("learning_rate")) is not None
    ]
    if rates:
        bottom.plot(*zip(*rates, strict=True), color="gray")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("tokens seen")
    bottom.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
