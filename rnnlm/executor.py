"""Where `rnnlm prepare` runs its tasks: on a Dask cluster, or one after another in this
process (`workers=0`), behind one interface (`Runner`) so the stages never ask which.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rnnlm.errors import RnnlmError, SettingError
from rnnlm.workers import Failed

INSTALL_HINT = "pip install 'rnnlm[distributed]'"


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of `scheduler`, or of a new LocalCluster of `workers` processes; None (no
    Dask at all) when `workers` is 0."""
    if scheduler is None and workers == 0:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise SettingError(
            f"preparing on Dask needs dask.distributed ({INSTALL_HINT}); without Dask:",
            {"workers": 0},
        ) from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as error:
            raise RnnlmError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
        with client:
            yield client
        return
    # One thread per worker: tokenizing is pure Python, so only processes run it in parallel.
    with (
        LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            # No dashboard, and its HTTP port (which the scheduler opens even so) picked
            # freely, so a second cluster on the machine is not warned about port 8787.
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


class Later:
    """The in-process stand-in for a Dask future: the call runs when its result is first
    needed, once; arguments that are themselves `Later` are resolved first."""

    def __init__(self, func: Callable, args: tuple, kwargs: dict[str, Any]) -> None:
        self._func, self._args, self._kwargs = func, args, kwargs
        self._done, self._value = False, None

    def result(self) -> Any:
        if not self._done:
            args = [arg.result() if isinstance(arg, Later) else arg for arg in self._args]
            self._value, self._done = self._func(*args, **self._kwargs), True
            self._args = ()  # let the inputs go
        return self._value


class Runner:
    """The stages' one interface to Dask futures, or to plain calls in this process."""

    def __init__(self, client: Any, show_progress: bool) -> None:
        self.client, self.show_progress = client, show_progress
        self.workers = len(client.scheduler_info()["workers"]) if client is not None else 0

    def describe(self) -> str:
        if self.client is None:
            return "in this process (no Dask)"
        return f"{self.workers} Dask workers at {self.client.scheduler.address}"

    def submit(self, func: Callable, *columns: Sequence, **shared: Any) -> list:
        """One task per row of `columns`, `shared` sent to every worker once; a column may
        hold earlier tasks, whose results the task then receives."""
        if self.client is None:
            return [Later(func, row, shared) for row in zip(*columns, strict=True)]
        sent = {key: self.client.scatter(value, broadcast=True) for key, value in shared.items()}
        return self.client.map(func, *columns, pure=False, **sent)

    def wait(self, tasks: list, desc: str) -> list:
        """Results in task order, with a bar as tasks finish; the first failure stops all."""
        results: dict[int, Any] = {}
        with self.bar(len(tasks), desc) as bar:
            for i, value in self._as_completed(tasks):
                if isinstance(value, Failed):
                    # Closing the client on the way out releases the tasks still queued.
                    raise RnnlmError(value.message)
                results[i] = value
                bar.update(1)
        return [results[i] for i in range(len(tasks))]

    def _as_completed(self, tasks: list) -> Iterator[tuple[int, Any]]:
        if self.client is None:
            yield from ((i, task.result()) for i, task in enumerate(tasks))
            return
        from dask.distributed import as_completed

        position = {task.key: i for i, task in enumerate(tasks)}
        for future in as_completed(tasks):
            yield position[future.key], self.result(future)

    def result(self, task: Any) -> Any:
        """A task's value; a worker that kept dying is an RnnlmError, a bug a traceback."""
        if self.client is None:
            return task.result()
        from distributed import KilledWorker

        try:
            return task.result()
        except KilledWorker as error:
            raise RnnlmError(
                f"Dask workers kept dying while running {error.task} (out of memory?)"
            ) from None

    def bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit="file",
            disable=not self.show_progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
