"""One model's training step under rnnlm checkouts of different commits, alternated: before
and after a change, on the same machine in one run.

    git worktree add --detach ../before e2cacc9
    python scripts/bench_commits.py ptb . ../before --threads 1 --rounds 2

Each round runs, per checkout in turn, a fresh process that imports that checkout's rnnlm and
scripts/benchlib, compiles the model's training step (warm compile cache after the first
round), takes one untimed repetition of `--steps` steps, then times three; it prints the
median ms a step. Models are benchlib's: ptb (PTB-small LSTM), gru, medium (2x650 LSTM).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(model: str, checkout: str, steps: int) -> float:
    """Median ms a step of three repetitions, with `checkout`'s rnnlm (already on sys.path)."""
    import numpy as np
    from benchlib.configs import GRU, MEDIUM, PTB, PTB_TRAIN
    from benchlib.steps import compile_sgd_step, random_windows, stream_runner

    import rnnlm

    if not Path(rnnlm.__file__).resolve().is_relative_to(Path(checkout).resolve()):
        raise SystemExit(f"imported {rnnlm.__file__}, not the checkout's rnnlm")
    config = {"ptb": PTB, "gru": GRU, "medium": MEDIUM}[model]
    compiled, step, _ = compile_sgd_step(config, PTB_TRAIN)
    run = stream_runner(compiled, step, random_windows(np.random.default_rng(0), steps))
    run()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) / steps * 1000)
    return statistics.median(times)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib.threads import thread_env

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=("ptb", "gru", "medium"))
    parser.add_argument("checkouts", nargs="+", help="rnnlm checkouts (repository roots)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="training steps per repetition")
    args = parser.parse_args()
    results: dict[str, list[float]] = {c: [] for c in args.checkouts}
    for round_ in range(args.rounds):
        for checkout in args.checkouts:
            root = Path(checkout).resolve()
            # the checkout's rnnlm and benchlib first; this file run as a module, not main
            code = (
                f"import runpy, sys; sys.path[:0] = [{str(root)!r}, {str(root / 'scripts')!r}]; "
                f"work = runpy.run_path({__file__!r}, run_name='bench_commits')['worker']; "
                f"print(work({args.model!r}, {str(root)!r}, {args.steps}))"
            )
            done = subprocess.run(
                [sys.executable, "-c", code], env=thread_env(args.threads),
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            ms = float(done.stdout.strip().splitlines()[-1])
            results[checkout].append(ms)
            print(f"round {round_ + 1}: {checkout}: {ms:.1f} ms a step", file=sys.stderr)
    for checkout, values in results.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{args.model}, {args.threads} thread(s), {checkout}: {shown} ms a step")


if __name__ == "__main__":
    main()
