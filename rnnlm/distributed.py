"""Synchronous data-parallel training: every rank holds the same model and takes a slice.

    global batch (T, B)  ->  rank r runs columns shard(B, r, N)  ->  local sums
    allreduce_sum([NLL, tokens, gradient sums, final states])    ->  the same on every rank
    every rank: parameters <- update(gradient sums / B)           ->  still the same everywhere

The objective is the one-process objective (summed NLL / global columns), so N ranks on a
global batch reach the parameters one process reaches on it, up to float rounding. Ranks talk
only through `Comm` (rank, size, in-place sum, broadcast, abort): `LocalComm` for one process,
`MPIComm` over mpi4py. The training loop calls it without asking which one it has.

numpy is imported inside functions only: `one_blas_thread_per_rank` must run before any BLAS
library is loaded, and the CLI imports this module first thing to call it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from rnnlm.errors import RnnlmError

if TYPE_CHECKING:
    import numpy as np

    from rnnlm.model import Model, UpdatesFn

# Environment variables MPI launchers set in every rank (Open MPI, PMIx, MPICH/Intel/srun PMI).
LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE")
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class Comm(Protocol):
    """What the training loop needs from its peers; buffers are contiguous numpy arrays."""

    rank: int
    size: int

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Replace `buffer` on every rank by the element-wise sum over all ranks."""

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        """Overwrite `buffer` on every rank with `root`'s."""

    def abort(self, code: int) -> None:
        """End every rank now: one rank's error must not leave the others waiting."""


class LocalComm:
    """One process: the sums and broadcasts of a world of one change nothing."""

    rank = 0
    size = 1

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        pass

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        if root != 0:
            raise ValueError(f"no rank {root} in a world of one")

    def abort(self, code: int) -> None:
        raise SystemExit(code)


class MPIComm:
    """Collectives of an mpi4py communicator, on numpy buffers in place (no pickling)."""

    def __init__(self, comm=None) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self._comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        self._comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        self._comm.Bcast(buffer, root=root)

    def abort(self, code: int) -> None:
        self._comm.Abort(code)


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpirun, mpiexec, srun) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARS)


def one_blas_thread_per_rank() -> None:
    """Under an MPI launcher, one BLAS thread per rank unless the user set a count.

    N ranks on one machine each starting a thread per core would fight over the cores.
    BLAS libraries read these variables when they load, so this runs before numpy is imported.
    """
    if launched_by_mpi():
        for name in BLAS_THREAD_VARS:
            os.environ.setdefault(name, "1")


def connect(distributed: bool) -> Comm:
    """The world this process trains in: MPI's when `distributed`, else a world of one."""
    if not distributed:
        return LocalComm()
    try:
        return MPIComm()
    except ImportError as error:
        raise RnnlmError(
            f"distributed training needs mpi4py and an MPI library ({error}): "
            "pip install -e '.[distributed]'"
        ) from error


@contextlib.contextmanager
def fail_together(comm: Comm) -> Iterator[None]:
    """An error on one rank ends all of them; the others would wait in a collective forever."""
    try:
        yield
    except BaseException as error:
        if comm.size == 1 or (isinstance(error, SystemExit) and not error.code):
            raise
        what = str(error) if isinstance(error, RnnlmError) else repr(error)
        print(f"error (rank {comm.rank} of {comm.size}): {what}", file=sys.stderr, flush=True)
        comm.abort(130 if isinstance(error, KeyboardInterrupt) else 1)
        raise


def share(comm: Comm, variables: list) -> None:
    """Rank 0's values of these shared variables on every rank, bit for bit."""
    for var in variables:
        value = var.get_value()
        comm.broadcast(value)
        var.set_value(value)


def anyone(comm: Comm, flag: bool) -> bool:
    """Whether any rank's flag is up: all ranks stop at the same step, or none does."""
    import numpy as np

    votes = np.array([float(flag)])
    comm.allreduce_sum(votes)
    return bool(votes[0])


def shard(columns: int, rank: int, size: int) -> slice:
    """Rank `rank`'s fixed, contiguous share of a batch's columns (sizes differ by at most 1).

    A rank gets no columns when the batch has fewer columns than there are ranks.
    """
    return slice(columns * rank // size, columns * (rank + 1) // size)


def train_step(model: Model, updates_for: UpdatesFn, comm: Comm) -> Callable[..., list]:
    """The step a trainer should use in `comm`'s world: fused for one rank, else `SyncStep`."""
    if comm.size == 1:
        return model.compile_train_step(updates_for)
    return SyncStep(model, updates_for, comm)


class SyncStep:
    """One synchronous update over a global batch, its columns split across the ranks.

    Called like `Model.compile_train_step`'s function, with the *global* batch and states:
    (x, y, mask, *states) -> [summed NLL, real tokens, *final states], all global and the same
    on every rank. The ranks sum one buffer laid out as
        [NLL, tokens, gradient sums of every parameter (flat, in order), final states]
    where each rank fills only its own columns of the final states (zeros elsewhere), so the
    sum gathers them exactly. Dropout masks are drawn for the global batch and sliced (see
    `Model.compile_gradient_sums`), so the caller must reseed the model identically on every
    rank before each step, as `Trainer` does.
    """

    NLL, TOKENS = 0, 1

    def __init__(self, model: Model, updates_for: UpdatesFn, comm: Comm) -> None:
        self.comm = comm
        self.dtype = model.config.dtype
        self.gradient_sums = model.compile_gradient_sums()
        self.apply = model.compile_apply_step(updates_for)
        self.shapes = [var.get_value(borrow=True).shape for var in model.params.values()]
        self.grads = slice(2, 2 + sum(math.prod(shape) for shape in self.shapes))

    def __call__(self, x, y, mask, *states) -> list:
        import numpy as np

        columns = x.shape[1]
        own = shard(columns, self.comm.rank, self.comm.size)
        buffer = np.zeros(self.grads.stop + sum(s.size for s in states), dtype=self.dtype)
        grads, finals = self._split(buffer, states)
        if own.stop > own.start:

            def local(a):
                return np.ascontiguousarray(a[:, own])

            out = self.gradient_sums(
                local(x),
                local(y),
                local(mask),
                np.int32(own.start),
                np.int32(columns),
                *(np.ascontiguousarray(s[own]) for s in states),
            )
            n = len(self.shapes)
            for target, value in zip(grads, out[:n], strict=True):
                target[...] = value
            buffer[self.NLL], buffer[self.TOKENS] = out[n], out[n + 1]
            for target, value in zip(finals, out[n + 2 :], strict=True):
                target[own] = value
        self.comm.allreduce_sum(buffer)
        self.apply(*grads, np.asarray(columns, dtype=self.dtype))
        return [buffer[self.NLL], buffer[self.TOKENS], *(f.copy() for f in finals)]

    def _split(self, buffer: np.ndarray, states) -> tuple[list, list]:
        """Views of `buffer`: each parameter's gradient sum, then each final state."""
        views, start = [], self.grads.start
        for shape in [*self.shapes, *(s.shape for s in states)]:
            size = math.prod(shape)
            views.append(buffer[start : start + size].reshape(shape))
            start += size
        return views[: len(self.shapes)], views[len(self.shapes) :]
