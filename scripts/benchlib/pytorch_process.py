"""PyTorch's contenders in a process of their own, driven from the rnnlm worker so that the
contenders still alternate.

A process has one libgomp, which reads OMP_WAIT_POLICY once, when it loads; rnnlm sets the
variable to PASSIVE when imported (rnnlm/flags.py), and that slows PyTorch's own parallel
regions (about 1.4x on two threads here: scripts/bench_openmp.py). In this process PyTorch
loads first, with the variable as the user gave it, as it runs on its own.

The worker sends one JSON line per request and reads "ok": `build` makes a runner from arrays
in an .npz file (the same windows, states and targets rnnlm's contender uses); `run` runs one
repetition at a thread count. The worker times the round trip, a pipe's latency on top.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchlib import GIVEN_OMP_WAIT_POLICY
from benchlib.timing import Contender

SCRIPTS = Path(__file__).resolve().parents[1]
SERVER = (
    f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import torch; "
    "from benchlib.pytorch_process import serve; serve()"
)


def windows_arrays(windows: list) -> dict[str, np.ndarray]:
    return {
        f"{part}{i}": a for i, w in enumerate(windows) for part, a in zip("xym", w, strict=True)
    }


def arrays_windows(arrays) -> list:
    return [tuple(arrays[f"{p}{i}"] for p in "xym") for i in range(len(arrays.files) // 3)]


class PyTorchProcess:
    """One PyTorch process for a worker's PyTorch contenders."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if GIVEN_OMP_WAIT_POLICY is not None:
            env["OMP_WAIT_POLICY"] = GIVEN_OMP_WAIT_POLICY
        self.scratch = tempfile.TemporaryDirectory(prefix="rnnlm-bench-pytorch-")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def _call(self, **request) -> None:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        while (line := self.process.stdout.readline()) != "ok\n":
            if not line:
                raise RuntimeError("the PyTorch process died (its traceback is above)")

    def contender(
        self, name: str, builder: str, arrays: dict[str, np.ndarray], threads: int,
        steps: int, tokens: int = 0, **options,
    ) -> Contender:  # fmt: skip
        """A contender whose repetition runs in the PyTorch process at `threads` threads."""
        path = Path(self.scratch.name) / f"{len(os.listdir(self.scratch.name))}.npz"
        np.savez(path, **arrays)
        self._call(build=name, builder=builder, data=str(path), options=options)
        run: Callable[[], None] = lambda: self._call(run=name, threads=threads)  # noqa: E731
        # threads: the report's column; setting this process's own threads costs nothing here
        return Contender(name, run, steps, tokens, threads)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait()
        self.scratch.cleanup()


def serve() -> None:
    """The PyTorch process's loop (torch is imported already, see SERVER)."""
    import torch

    from benchlib.configs import GRU, MEDIUM, PTB
    from benchlib.pytorch import pytorch_runner
    from benchlib.softmax import pytorch_adaptive_run, pytorch_output_run

    models = {"ptb": PTB, "gru": GRU, "medium": MEDIUM}
    builders = {
        "lm": lambda d, o: pytorch_runner(models[o["model"]], arrays_windows(d)),
        "adaptive": lambda d, o: pytorch_adaptive_run(o["v"], o["cutoffs"], arrays_windows(d)),
        "output": lambda d, o: pytorch_output_run(o["v"], o["cutoffs"], d["h"], d["y"]),
    }
    runners = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "build" in request:
            with np.load(request["data"]) as data:
                runners[request["build"]] = builders[request["builder"]](data, request["options"])
        else:
            torch.set_num_threads(request["threads"])
            runners[request["run"]]()
        print("ok", flush=True)
