"""One row of the README's backend table: how fast rnnlm is on this interpreter's tensor library.

Measures, on whichever library `rnnlm.backend` picks here (Aesara on Python 3.11, PyTensor
from 3.12; `RNNLM_BACKEND` overrides where both are installed):

  - compiling Zaremba et al.'s PTB-small training step (vocabulary 10,000, embedding 200,
    2x200 LSTM, batch 20 x 35 steps, SGD 1.0, clip 5) and taking its first step, in a fresh
    process, on an empty base_compiledir (cold, with --cold: minutes of gcc, on every core:
    rnnlm.parallel_compile) and on the cache that left (warm); no compiled-function cache;
  - training tokens/s of that step on random ids, the state carried (median of --reps
    repetitions of --steps steps, after one untimed repetition);
  - the wall time of `rnnlm score "a sentence"` from a fresh process, warm C-module cache
    (median), with the compiled-function cache (a private one) and with --no-cache.

Every process gets OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = --threads. `--linker numba` runs
PyTensor's Numba linker instead of the C one (our C ops then run their Python `perform`).
Each library is in its own virtualenv, so run it once per venv:

    python scripts/bench_backend.py --cold            # about 5 minutes
    python scripts/bench_backend.py --linker numba    # PyTensor only

This stands alone until scripts/bench.py takes a --backend option; its PTB model is bench.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCORE_SENTENCE = "i think this is a good idea ."
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def ptb_worker(steps: int, reps: int) -> dict[str, Any]:
    """In a fresh process: compile the PTB step (timed), then time training."""
    import numpy as np
    from benchlib.configs import PTB as config
    from benchlib.configs import PTB_TRAIN as train

    from rnnlm import backend
    from rnnlm.batches import stream_batches
    from rnnlm.model import Model
    from rnnlm.optim import updates_for

    model = Model(config)
    lr = backend.shared(np.asarray(train.learning_rate, dtype=config.dtype), name="lr")
    rng = np.random.default_rng(0)
    data = rng.integers(0, config.vocab_size, (steps * train.bptt + 1, train.batch_size))
    windows = list(stream_batches(data.astype(np.int32), train.bptt, config.dtype))
    states = model.initial_states(train.batch_size)

    started = time.perf_counter()
    step = model.compile_train_step(lambda params, grads: updates_for(train, params, grads, lr)[0])
    step(*windows[0], *states)  # Numba compiles at the first call
    compile_s = time.perf_counter() - started
    seconds = []
    for _ in range(reps + 1):  # the first round is untimed
        started = time.perf_counter()
        for x, y, mask in windows:
            nll, _, *states = step(x, y, mask, *states)
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds[1:])
    tokens = sum(int(mask.sum()) for _, _, mask in windows)
    return {
        "compile_s": compile_s,
        "ms_step": 1000 * median / len(windows),
        "tokens_per_s": tokens / median,
        "loss_finite": bool(np.isfinite(nll)),
        "backend": backend.NAME,
        "version": backend.VERSION,
        "linker": str(backend.config.linker),
        "blas": backend.config.blas__ldflags,
        "numpy": np.__version__,
    }


def environment(threads: int, rnnlm_flags: list[str]) -> dict[str, str]:
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))}
    flags = [env.get("RNNLM_FLAGS", ""), *rnnlm_flags]
    env["RNNLM_FLAGS"] = ",".join(flag for flag in flags if flag)
    return env


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout


def worker(args: argparse.Namespace, rnnlm_flags: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", "--steps", str(args.steps)]
    out = run([*command, "--reps", str(args.reps)], environment(args.threads, rnnlm_flags))
    return json.loads(out.strip().splitlines()[-1])


def score_seconds(args: argparse.Namespace, rnnlm_flags: list[str]) -> dict[str, float]:
    """Median wall time of `rnnlm score` from a fresh process, after one untimed run: with
    the compiled-function cache (a private one, in the temporary folder) and without it."""
    env = environment(args.threads, rnnlm_flags)
    cli = [sys.executable, "-c", "from rnnlm.cli import main; main()"]
    with tempfile.TemporaryDirectory(prefix="rnnlm-bench-") as folder:
        env["XDG_CACHE_HOME"] = folder  # the user's own cache is left alone
        model = str(Path(folder) / "tiny.npz")
        tiny = ["--vocab-size", "200", "--hidden-size", "16", "--epochs", "1", "--no-cache"]
        run([*cli, "train", *tiny, "--eval-sentences", "20", "--out", model, "-q"], env)
        result = {}
        for name, extra in (("score_cli_s", []), ("score_cli_no_cache_s", ["--no-cache"])):
            seconds = []
            for _ in range(args.score_runs + 1):
                started = time.perf_counter()
                run([*cli, "score", SCORE_SENTENCE, "--model", model, "-q", *extra], env)
                seconds.append(time.perf_counter() - started)
            result[name] = statistics.median(seconds[1:])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="PTB steps per repetition")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions")
    parser.add_argument("--score-runs", type=int, default=3, help="timed `rnnlm score` runs")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and OpenMP threads")
    parser.add_argument("--linker", default="", help="e.g. numba (PyTensor); default: rnnlm's")
    parser.add_argument("--cold", action="store_true", help="also compile on an empty cache")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(ptb_worker(args.steps, args.reps)))
        return

    flags = [f"linker={args.linker}"] if args.linker else []
    result: dict[str, Any] = {"python": sys.version.split()[0], "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="rnnlm-compiledir-") as compiledir:
        if args.cold:
            flags.append(f"base_compiledir={compiledir}")  # Numba's cache lives there too
            result["compile_cold_s"] = worker(args, flags)["compile_s"]
        result |= worker(args, flags)
        result["compile_warm_s"] = result.pop("compile_s")
        result |= score_seconds(args, flags)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    cold = result.get("compile_cold_s")
    print(
        f"{result['backend']} {result['version']} (linker {result['linker']}), "
        f"Python {result['python']}, numpy {result['numpy']}, {args.threads} thread(s)\n"
        f"  PTB-small training: {result['tokens_per_s']:,.0f} tokens/s "
        f"({result['ms_step']:.1f} ms/step)\n"
        f"  compile: cold {'-' if cold is None else f'{cold:.1f} s'}, "
        f"warm {result['compile_warm_s']:.1f} s\n"
        f"  rnnlm score from a fresh process: {result['score_cli_s']:.2f} s "
        f"({result['score_cli_no_cache_s']:.2f} s with --no-cache)\n"
        f"  BLAS: {result['blas'] or '(none)'}"
    )


if __name__ == "__main__":
    main()
