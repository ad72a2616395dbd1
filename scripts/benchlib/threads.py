"""Thread counts of every BLAS, OpenMP runtime and PyTorch in this process, set and checked."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from benchlib import GIVEN_OMP_WAIT_POLICY

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class OpenBlas:
    path: str
    set_threads: Callable[[int], object]
    get_threads: Callable[[], int]


def loaded_openblas() -> list[OpenBlas]:
    """Every OpenBLAS mapped into this process: scipy's, which Aesara's compiled code calls,
    and numpy's own (ILP64, its symbols suffixed `64_`)."""
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libopenblas" in line})
    found = []
    for path in paths:
        library = ctypes.CDLL(path)  # already loaded: the same handle, no second copy
        for suffix in ("", "64_"):
            if hasattr(library, f"openblas_set_num_threads{suffix}"):
                setter = getattr(library, f"openblas_set_num_threads{suffix}")
                getter = getattr(library, f"openblas_get_num_threads{suffix}")
                found.append(OpenBlas(path, setter, getter))
                break
    return found


def loaded_openmp() -> list[str]:
    """Every OpenMP runtime mapped into this process: the system libgomp that rnnlm's fused
    softmax op runs its rows on, and PyTorch's own copy."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "libgomp" in line})


def set_threads(n: int) -> None:
    """Threads of every loaded OpenBLAS and OpenMP, and of PyTorch if imported; checked."""
    for blas in loaded_openblas():
        blas.set_threads(n)
        if blas.get_threads() != n:
            raise RuntimeError(f"{blas.path} runs {blas.get_threads()} threads, not {n}")
    for path in loaded_openmp():
        openmp = ctypes.CDLL(path)
        openmp.omp_set_num_threads(n)
        if openmp.omp_get_max_threads() != n:
            raise RuntimeError(f"{path} runs {openmp.omp_get_max_threads()} threads, not {n}")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def thread_env(threads: int, **extra: str) -> dict[str, str]:
    """This process's environment with the thread variables set, plus `extra`, and
    OMP_WAIT_POLICY as the user gave it (benchlib/__init__.py)."""
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads)), **extra}
    env.pop("OMP_WAIT_POLICY", None)
    if GIVEN_OMP_WAIT_POLICY is not None:
        env["OMP_WAIT_POLICY"] = GIVEN_OMP_WAIT_POLICY
    return env
