"""The tutorial's vanishing-gradient story, measured: how ||d loss_t / d h_(t-k)|| falls with k.

For sentences of a corpus, the norm of the gradient of each step's loss with respect to the
hidden state k steps earlier (through the recurrence, by `aesara.grad`), relative to k = 0;
plus how saturated the units are, and a finite-difference check of the model's gradients.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnlm.model import Model

REPORT_DISTANCES = (1, 5, 10, 20)


def untruncated_float64(model: Model) -> Model:
    """A copy of `model` with full BPTT in float64, so the numbers are the model's own."""
    config = dataclasses.replace(model.config, bptt_truncate=-1, dtype="float64", dropout=0.0)
    return Model(config, params=model.params.values_dict(), mode=model.mode)


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
    if steps is None:
        return f"{result['cell']}: gradients do not shrink with distance here."
    at4 = result["ratios"][4] if len(result["ratios"]) > 4 else math.nan
    advice = (
        "truncating BPTT at 4 loses little"
        if steps < 4
        else "long-range gradients survive: truncating BPTT would lose them"
    )
    return (
        f"{result['cell']}: gradients shrink ×10 every {steps:.1f} steps "
        f"(at k = 4 they keep {at4:.2%} of their size): {advice}."
    )


def gradient_check(
    model: Model, ids: np.ndarray, entries: int = 3, seed: int = 0, eps: float = 1e-5
) -> dict[str, float]:
    """Relative error between symbolic and central-difference gradients, per parameter."""
    probe = untruncated_float64(model)
    x, y = ids[:-1, None].astype(np.int32), ids[1:, None].astype(np.int32)
    mask = np.ones(x.shape)
    symbolic = probe.gradients(x, y, mask)
    rng = np.random.default_rng(seed)
    errors = {}
    for name, var in probe.params.items():
        value = var.get_value()
        worst = 0.0
        for flat in rng.choice(value.size, size=min(entries, value.size), replace=False):
            index = np.unravel_index(flat, value.shape)
            losses = []
            for delta in (eps, -eps):
                changed = value.copy()
                changed[index] += delta
                var.set_value(changed)
                losses.append(-probe.log_probs(x, y, mask).sum())
            var.set_value(value)
            numeric = (losses[0] - losses[1]) / (2 * eps)
            scale = max(abs(numeric), abs(symbolic[name][index]), 1e-8)
            worst = max(worst, abs(numeric - symbolic[name][index]) / scale)
        errors[name] = worst
    return errors


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
