"""Timing by alternation: contenders run in turn, medians over repetitions after a warm-up."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchlib.threads import set_threads

STARTED = time.perf_counter()


@dataclass
class Contender:
    """A fixed amount of work, run once per round: `steps` steps over `tokens` real tokens."""

    name: str
    run: Callable[[], object]
    steps: int = 1
    tokens: int = 0
    threads: int | None = None  # BLAS and PyTorch threads while it runs; None: as they are


def alternate(
    contenders: Sequence[Contender], reps: int, warmup: int = 1
) -> dict[str, dict[str, float | None]]:
    """Run the contenders in turn (A, B, A, B, ...): `warmup` untimed rounds, `reps` timed.

    Returns, per contender: the median seconds per repetition, ms per step, tokens/s (None
    without tokens), the spread (max - min) / median, and the repetitions.
    """
    seconds: dict[str, list[float]] = {c.name: [] for c in contenders}
    for round_ in range(warmup + reps):
        for contender in contenders:
            if contender.threads is not None:
                set_threads(contender.threads)
            started = time.perf_counter()
            contender.run()
            elapsed = time.perf_counter() - started
            if round_ >= warmup:
                seconds[contender.name].append(elapsed)
    return {c.name: summarize(c, seconds[c.name]) for c in contenders}


def summarize(contender: Contender, seconds: list[float]) -> dict[str, float | None]:
    median = statistics.median(seconds)
    return {
        "median_s": median,
        "ms_step": 1000 * median / contender.steps,
        "tok_s": contender.tokens / median if contender.tokens else None,
        "spread": (max(seconds) - min(seconds)) / median,
        "reps": len(seconds),
        "threads": contender.threads,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def progress(message: str) -> None:
    """A line on stderr, stamped with the seconds since the script started."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)
