"""Which BLAS trains rnnlm faster on this machine: the OpenBLAS inside scipy's wheel (what
`rnnlm/flags.py` links by default) or Intel's MKL from the package registry (`pip install mkl`).

    pip install mkl          # into this virtualenv (about 1 GB), or anywhere: --mkl-lib DIR
    python scripts/bench_blas.py --threads 1 --rounds 3 --json blas.json

Each round runs one worker process per BLAS, in turn (OpenBLAS, MKL, OpenBLAS, ...), so that
drift of the machine hits both alike. A worker links the C code of the graph, our fused ops
included, against its BLAS (`blas__ldflags`; MKL through `libmkl_rt` with its GNU OpenMP
threading layer, the one our ops use) in a compiledir of its own, and times, after an untimed
repetition:
  - the PTB-small training step of scripts/bench.py (median ms/step, tokens/s);
  - the output layer's forward product, (700 x 200) x (200 x 10,000);
  - the recurrent product of one time step, (20 x 200) x (200 x 800), 2,000 calls;
  - a 2000 x 2000 product (the GEMM peak of bench.py's row 6).
The first round also compiles (minutes on an empty compiledir) and is not counted. numpy's
own products still use its OpenBLAS; only the compiled graph changes BLAS.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.threads import thread_env  # noqa: E402

# name -> (rows, inner, columns, calls per repetition)
PRODUCTS = {
    "output_gemm": (700, 200, 10_000, 20),
    "recurrent_gemm": (20, 200, 800, 2_000),
    "peak_gemm": (2_000, 2_000, 2_000, 10),
}


def worker(threads: int, steps: int) -> dict[str, Any]:
    """Time the PTB step and the products once, after one untimed run of each."""
    import numpy as np
    from benchlib.configs import PTB, PTB_TRAIN
    from benchlib.steps import compile_sgd_step, random_windows, real_tokens, stream_runner
    from benchlib.threads import set_threads

    from rnnlm import backend
    from rnnlm.backend import tensor as tt

    set_threads(threads)
    rng = np.random.default_rng(0)
    model, step, _ = compile_sgd_step(PTB, PTB_TRAIN)
    windows = random_windows(rng, steps)
    runs = {"ptb_step": (stream_runner(model, step, windows), steps)}
    for name, (m, k, n, calls) in PRODUCTS.items():
        a = backend.shared(rng.standard_normal((m, k)).astype("float32"))
        b = backend.shared(rng.standard_normal((k, n)).astype("float32"))
        product = backend.function([], tt.dot(a, b))
        runs[name] = (lambda f=product, c=calls: [f() for _ in range(c)], calls)
    result: dict[str, Any] = {"tokens_per_rep": real_tokens(windows)}
    for name, (run, count) in runs.items():
        run()
        started = time.perf_counter()
        run()
        result[name + "_ms"] = 1000 * (time.perf_counter() - started) / count
    with open("/proc/self/maps") as maps:
        names = {Path(line.split()[-1]).name for line in maps}
    result["blas_loaded"] = sorted(n for n in names if n.startswith(("libmkl", "libopenblas")))
    return result


def blas_flags(blas: str, mkl_lib: Path | None) -> dict[str, str]:
    """The environment a worker needs to link against `blas`."""
    if blas == "openblas":
        return {}
    if mkl_lib is None:
        sys.exit("MKL not found: pip install mkl, or give --mkl-lib DIR (the folder of libmkl_rt)")
    runtime = sorted(mkl_lib.glob("libmkl_rt.so*"))[-1].name
    # rpath is left out: the flags' syntax splits on commas; the loader finds it this way.
    return {
        "ldflags": f"-L{mkl_lib} -l:{runtime}",
        "LD_LIBRARY_PATH": f"{mkl_lib}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        "MKL_THREADING_LAYER": "GNU",
    }


def run_worker(blas: str, args: argparse.Namespace, compiledir: Path) -> dict[str, Any]:
    extra = blas_flags(blas, args.mkl_lib)
    flags = [os.environ.get("RNNLM_FLAGS", ""), f"compiledir={compiledir}"]
    if "ldflags" in extra:
        flags.append(f"blas__ldflags={extra.pop('ldflags')}")
    extra["RNNLM_FLAGS"] = ",".join(flag for flag in flags if flag)
    command = [sys.executable, __file__, "--worker", "--threads", str(args.threads)]
    command += ["--steps", str(args.steps)]
    done = subprocess.run(command, env=thread_env(args.threads, **extra), stdout=subprocess.PIPE)
    if done.returncode != 0:
        sys.exit(f"the {blas} worker failed (exit code {done.returncode})")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def default_mkl_lib() -> Path | None:
    lib = Path(sys.prefix) / "lib"
    return lib if any(lib.glob("libmkl_rt.so*")) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (one more compiles)")
    parser.add_argument("--steps", type=int, default=10, help="PTB steps per repetition")
    parser.add_argument("--mkl-lib", type=Path, default=default_mkl_lib())
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.threads, args.steps)))
        return
    blases = ("openblas", "mkl")
    times: dict[str, list[dict[str, Any]]] = {blas: [] for blas in blases}
    with tempfile.TemporaryDirectory(prefix="rnnlm-bench-blas-") as scratch:
        for round_ in range(args.rounds + 1):
            for blas in blases:
                print(f"round {round_}: {blas} ...", file=sys.stderr, flush=True)
                result = run_worker(blas, args, Path(scratch) / blas)
                if round_:
                    times[blas].append(result)
    keys = ["ptb_step_ms", *(name + "_ms" for name in PRODUCTS)]
    medians = {b: {k: statistics.median(r[k] for r in times[b]) for k in keys} for b in blases}
    print(f"{args.threads} thread(s), medians of {args.rounds} alternated rounds (ms per call)")
    print(f"{'':18}{'OpenBLAS':>12}{'MKL':>12}{'MKL speed-up':>14}")
    for key in keys:
        o, m = medians["openblas"][key], medians["mkl"][key]
        print(f"{key[:-3]:18}{o:12.3f}{m:12.3f}{o / m:13.2f}x")
    for blas in blases:
        print(f"{blas} worker loaded: {', '.join(times[blas][-1]['blas_loaded'])}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
