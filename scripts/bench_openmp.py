"""rnnlm and PyTorch on the PTB-small training step, each in processes of its own, so that each
runs with the OpenMP wait policy it has on its own: rnnlm sets OMP_WAIT_POLICY=PASSIVE when it
is imported (unless the user set it; rnnlm/flags.py), PyTorch leaves libgomp's default. In
bench.py both share one process and so one libgomp, which reads the variable once.

    python scripts/bench_openmp.py --threads 1,2 --rounds 5

Each round starts, per thread count, one process per contender, in turn: rnnlm as installed,
rnnlm with OMP_WAIT_POLICY as given (libgomp's spinning default when unset), PyTorch, and
PyTorch with PASSIVE. A process compiles (rnnlm: warm cache) and times three repetitions of
`--steps` steps after an untimed one; the median is its figure. Medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.threads import thread_env  # noqa: E402

# name -> (library, OMP_WAIT_POLICY for the process: None = as given)
CONTENDERS = {
    "rnnlm": ("rnnlm", None),
    "rnnlm, libgomp default": ("rnnlm", "(given)"),
    "PyTorch": ("torch", None),
    "PyTorch, PASSIVE": ("torch", "PASSIVE"),
}


def worker(library: str, steps: int) -> float:
    """Median tokens/s of three repetitions of `steps` PTB-small training steps."""
    if library == "torch":
        import torch  # noqa: F401  (its libgomp loads now, before rnnlm sets the variable)
    import numpy as np
    from benchlib.configs import PTB, PTB_TRAIN
    from benchlib.steps import random_windows, real_tokens

    windows = random_windows(np.random.default_rng(0), steps)
    if library == "torch":
        from benchlib.pytorch import pytorch_runner

        run = pytorch_runner(PTB, windows)
    else:
        from benchlib.steps import compile_sgd_step, stream_runner

        model, step, _ = compile_sgd_step(PTB, PTB_TRAIN)
        run = stream_runner(model, step, windows)
    run()
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return real_tokens(windows) / statistics.median(seconds)


def run_worker(name: str, threads: int, steps: int) -> float:
    library, policy = CONTENDERS[name]
    env = thread_env(threads)  # OMP_WAIT_POLICY as given, whatever this process holds
    if policy == "PASSIVE":
        env["OMP_WAIT_POLICY"] = policy
    elif policy == "(given)":
        # rnnlm keeps a value the user set; "" is one it keeps that libgomp ignores.
        env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "")
    command = [sys.executable, __file__, "--worker", library, "--steps", str(steps)]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"the {name} worker failed (exit code {done.returncode})")
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="training steps per repetition")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", choices=("rnnlm", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(worker(args.worker, args.steps))
        return
    threads = [int(n) for n in args.threads.split(",")]
    figures: dict[str, dict[str, list[float]]] = {
        str(n): {c: [] for c in CONTENDERS} for n in threads
    }
    for round_ in range(args.rounds):
        for n in threads:
            for name in CONTENDERS:
                print(f"round {round_ + 1}, {n} thread(s): {name} ...", file=sys.stderr, flush=True)
                figures[str(n)][name].append(run_worker(name, n, args.steps))
    given = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    print(f"PTB-small training tokens/s, medians of {args.rounds} rounds")
    print(f"OMP_WAIT_POLICY as given: {given}")
    medians = {n: {c: statistics.median(v) for c, v in row.items()} for n, row in figures.items()}
    for n, row in medians.items():
        print(f"{n} thread(s): " + ", ".join(f"{c} {v:,.0f}" for c, v in row.items()))
        print(
            f"    rnnlm / PyTorch, each as it runs on its own: {row['rnnlm'] / row['PyTorch']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "runs": figures}, indent=2))


if __name__ == "__main__":
    main()
