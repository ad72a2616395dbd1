"""How long rnnlm takes to get going: cold compiles with and without the parallel C-module
builds, a warm start from the compiled-function cache, and a fresh `rnnlm score`.

Every run is a fresh process; "cold" means an empty Aesara compile directory
(base_compiledir in a temporary folder) and an empty compiled-function cache
(XDG_CACHE_HOME in one too). Rows:

  1. the PTB-small training step (configs/ptb-small.toml's graph; random ids, nothing
     trained): cold, with RNNLM_COMPILE_WORKERS=0 (one process compiles) and =N (this
     machine's cores);
  2. the default `rnnlm train` (the built-in sample corpus), cold, likewise, wall time
     of the whole command;
  3. the same `rnnlm train` again on the warm caches;
  4. `rnnlm score "a sentence"` on a PTB-small-sized model, warm caches, and with
     --no-cache (Aesara's compile directory still warm);
  5. `rnnlm --help`.

Contenders alternate (A, B, A, B, ...) over --repeats, so a shared machine's drift hits
both; the median is reported with the load average. Takes a while: every cold row compiles
everything from scratch.

    python scripts/bench_compile.py                  # --repeats 2
    python scripts/bench_compile.py --repeats 3 --json compile.json
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

ROOT = Path(__file__).resolve().parents[1]
RNNLM = [sys.executable, "-c", "from rnnlm.cli import main; main()"]
PTB_STEP = """
import time
import numpy as np
from rnnlm import backend
from rnnlm.config import load_config, resolve
from rnnlm.model import Model
from rnnlm.optim import updates_for
config = resolve(load_config("configs/ptb-small.toml"), {})
started = time.perf_counter()
model = Model(config.model.for_mode(config.train.mode))
lr = backend.shared(np.asarray(1.0, dtype=config.model.dtype), name="lr")
model.compile_train_step(lambda p, g: updates_for(config.train, p, g, lr)[0])
print(time.perf_counter() - started)
"""


def environment(folder: Path, workers: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["XDG_CACHE_HOME"] = str(folder / "xdg")
    flags = env.get("RNNLM_FLAGS", "")  # for whichever tensor library runs
    env["RNNLM_FLAGS"] = ",".join(p for p in (flags, f"base_compiledir={folder / 'library'}") if p)
    if workers is not None:
        env["RNNLM_COMPILE_WORKERS"] = str(workers)
    return env


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started, result.stdout


def ptb_model(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_serve import ptb_sized_model

    return ptb_sized_model(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)
        print(f"  {name}: {value:.2f} s", flush=True)

    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
            for workers in (0, args.workers):
                folder = temp / f"cold-{repeat}-{workers}"
                _, out = timed([sys.executable, "-c", PTB_STEP], environment(folder, workers))
                record(f"PTB-small training step, cold, {workers} workers", float(out))
            for workers in (0, args.workers):
                folder = temp / f"train-{repeat}-{workers}"
                env = environment(folder, workers)
                command = [*RNNLM, "train", "--out", str(folder / "m.npz"), "--quiet"]
                record(f"default rnnlm train, cold, {workers} workers", timed(command, env)[0])
                record(f"default rnnlm train, warm, {workers} workers", timed(command, env)[0])
        folder = temp / "score"
        model = ptb_model(temp)
        env = environment(folder)
        score = [*RNNLM, "score", "--model", str(model), "the cat sat on the mat"]
        timed(score, env)  # fills both caches
        for _ in range(3 * args.repeats):
            record("rnnlm score, warm caches", timed(score, env)[0])
            record(
                "rnnlm score --no-cache (compile directory warm)",
                timed([*score, "--no-cache"], env)[0],
            )
            record("rnnlm --help", timed([*RNNLM, "--help"], env)[0])

    print(f"\nmedians (load average at the end {os.getloadavg()}, {os.cpu_count()} CPUs):")
    summary = {name: statistics.median(values) for name, values in rows.items()}
    for name, value in summary.items():
        print(f"{value:8.2f} s  {name}")
    if args.json:
        args.json.write_text(json.dumps({"median_s": summary, "runs_s": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
