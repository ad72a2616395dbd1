"""The tutorial's vanishing-gradient story, measured: how ||d loss_t / d h_(t-k)|| falls with k.

For sentences of a corpus, the norm of the gradient of each step's loss with respect to the
hidden state k steps earlier (through the recurrence, by `aesara.grad`), relative to k = 0;
plus how saturated the units are, and a finite-difference check of the model's gradients on
entries where they are not zero.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlm.loading import open_model, read_like_training
from rnnlm.model import Model

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache

REPORT_DISTANCES = (1, 5, 10, 20)


def diagnose_models(
    paths: Sequence[str | Path],
    corpus: str | Path,
    out: str | Path,
    *,
    count: int = 30,
    max_distance: int = 20,
    gradcheck: bool = False,
    seed: int = 0,
    cache: FunctionCache | None = None,
) -> list[dict[str, Any]]:
    """`rnnlm diagnose`: per model, the gradient's decay over `count` sentences of `corpus`
    (read as its training corpus was), a note and optionally a gradient check; one plot of
    them all goes to `out`."""
    results, labels = [], []
    for path in paths:
        model, ckpt = open_model(
            path, left_to_right="measure left-to-right gradient flow", cache=cache
        )
        sentences = read_like_training(ckpt.config.data, corpus)
        encoded = [ckpt.vocab.encode(tokens) for tokens in sentences]
        picked = pick_sentences(encoded, count, max_distance, seed)
        result = gradient_decay(model, picked, max_distance)
        result["model"] = str(path)
        result["note"] = note(result)
        if gradcheck:
            result["gradcheck"] = gradient_check(model, picked[0], seed=seed)
        results.append(result)
        labels.append(f"{Path(path).name} ({ckpt.config.model.cell})")
    plot(results, labels, out)
    return results


def pick_sentences(
    encoded: Sequence[np.ndarray], count: int, max_distance: int, seed: int
) -> list[np.ndarray]:
    """`count` sentences in a seeded random order, those long enough to measure every
    distance up to `max_distance` first (all of them when none is)."""
    order = np.random.default_rng(seed).permutation(len(encoded))
    long = [encoded[i] for i in order if len(encoded[i]) > max_distance + 1]
    return (long or [encoded[i] for i in order])[:count]


def untruncated_float64(model: Model) -> Model:
    """A copy of `model` with full BPTT in float64, so the numbers are the model's own."""
    config = dataclasses.replace(model.config, bptt_truncate=-1, dtype="float64", dropout=0.0)
    params = model.params.values_dict()
    return Model(config, params=params, compile_mode=model.compile_mode, tables=model.tables)


def gradient_decay(
    model: Model, sentences: Sequence[np.ndarray], max_distance: int = 20
) -> dict[str, Any]:
    """Mean ratio ||dl_t/dh_(t-k)|| / ||dl_t/dh_t|| for k = 0..max_distance, and saturation."""
    probe = untruncated_float64(model)
    sums = np.zeros(max_distance + 1)
    counts = np.zeros(max_distance + 1)
    states = []
    for ids in sentences:
        norms, top = probe.gradient_flow(ids)
        states.append(top)
        for t in range(len(norms)):
            if norms[t, t] <= 0:
                continue
            reach = min(t, max_distance)
            sums[: reach + 1] += norms[t, t - np.arange(reach + 1)] / norms[t, t]
            counts[: reach + 1] += 1
    ratios = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    h = np.concatenate(states)
    relu = model.config.cell == "rnn-relu"
    return {
        "cell": model.config.cell,
        "sentences": len(sentences),
        "ratios": ratios.tolist(),
        "pairs": counts.astype(int).tolist(),
        "steps_per_tenfold_drop": steps_per_tenfold_drop(ratios),
        # tanh-bounded states saturate near ±1; ReLU units die (never above 0) instead.
        "saturated_share": None if relu else float((np.abs(h) > 0.99).mean()),
        "dead_units_share": float((h <= 0).all(axis=0).mean()) if relu else None,
    }


def steps_per_tenfold_drop(ratios: np.ndarray) -> float | None:
    """Distance over which the gradient shrinks ×10, from a log-linear fit; None if it grows."""
    k = np.flatnonzero(np.isfinite(ratios) & (ratios > 0))
    if len(k) < 2:
        return None
    slope = np.polyfit(k, np.log10(ratios[k]), 1)[0]
    return float(-1 / slope) if slope < 0 else None


def note(result: dict[str, Any]) -> str:
    """The finding in plain words."""
    steps = result["steps_per_tenfold_drop"]
    reached = [r for r in result["ratios"][1:] if np.isfinite(r)]
    if reached and not any(reached):
        return (
            f"{result['cell']}: no gradient reaches even one step back (a zero recurrent "
            "matrix, or every unit dead)."
        )
    if steps is None:
        return f"{result['cell']}: gradients do not shrink with distance here."
    ratios = result["ratios"]
    # What is left at k = 4 (the default truncation), or as far as the measurement went.
    measured = [k for k in range(min(4, len(ratios) - 1), 0, -1) if math.isfinite(ratios[k])]
    kept = (
        f" (at k = {measured[0]} they keep {ratios[measured[0]]:.2%} of their size)"
        if measured
        else ""
    )
    advice = (
        "truncating BPTT at 4 loses little"
        if steps < 4
        else "long-range gradients survive: truncating BPTT would lose them"
    )
    return f"{result['cell']}: gradients shrink ×10 every {steps:.1f} steps{kept}: {advice}."


# Entries checked are drawn from those whose gradient is at least this share of the largest.
INFORMATIVE = 1e-3


def informative_entries(gradient: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of up to `count` entries worth checking: random among the large ones.

    Most entries of a one-hot input matrix or an embedding belong to words absent from the
    sentence: their gradient is exactly 0 and a finite difference agrees trivially. Tiny
    gradients drown in rounding. So draw among the entries within INFORMATIVE of the largest.
    """
    size = np.abs(gradient).ravel()
    if size.max() == 0:  # nothing informative: say so through |g| = 0 in the report
        return rng.choice(size.size, size=min(count, size.size), replace=False)
    candidates = np.flatnonzero(size >= INFORMATIVE * size.max())
    return rng.choice(candidates, size=min(count, candidates.size), replace=False)


def gradient_check(
    model: Model, ids: np.ndarray, entries: int = 3, seed: int = 0, eps: float = 1e-5
) -> dict[str, dict[str, float]]:
    """Symbolic against central-difference gradients on a few entries of each parameter.

    Per parameter: the worst relative error, the number of entries checked and the
    smallest and largest |symbolic gradient| among them (0 would make the check vacuous).
    """
    probe = untruncated_float64(model)
    x, y = ids[:-1, None].astype(np.int32), ids[1:, None].astype(np.int32)
    mask = np.ones(x.shape)
    symbolic = probe.gradients(x, y, mask)
    rng = np.random.default_rng(seed)
    report = {}
    for name, var in probe.params.items():
        value = var.get_value()
        worst, checked = 0.0, []
        for flat in informative_entries(symbolic[name], entries, rng):
            index = np.unravel_index(flat, value.shape)
            losses = []
            for delta in (eps, -eps):
                changed = value.copy()
                changed[index] += delta
                var.set_value(changed)
                losses.append(-probe.log_probs(x, y, mask).sum())
            var.set_value(value)
            numeric = (losses[0] - losses[1]) / (2 * eps)
            exact = float(symbolic[name][index])
            scale = max(abs(numeric), abs(exact), 1e-8)
            worst = max(worst, abs(numeric - exact) / scale)
            checked.append(abs(exact))
        report[name] = {
            "relative_error": worst,
            "entries": len(checked),
            "min_abs_gradient": min(checked),
            "max_abs_gradient": max(checked),
        }
    return report


def plot(results: Sequence[dict[str, Any]], labels: Sequence[str], out: str) -> None:
    """One PNG: the gradient ratio against distance k, one line per model, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for result, label in zip(results, labels, strict=True):
        ratios = np.asarray(result["ratios"])
        axes.semilogy(np.arange(len(ratios)), ratios, marker="o", label=label)
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("distance k (steps back)")
    axes.set_ylabel("||dL_t/dh_(t-k)|| / ||dL_t/dh_t||")
    axes.set_title("How far back the gradient reaches")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
