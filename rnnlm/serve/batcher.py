"""Dynamic batching: concurrent requests for one model merged into one compiled call.

    requests --submit(item)--> pending [a, b, c] --(model idle: wait <= max_wait for more;
    busy: everything that came meanwhile, <= max_batch)--> run([a, b, c]) in the model's
    own thread --> each request's future gets its own result

One thread per model runs its compiled functions, one call at a time (a compiled function
keeps its buffers between calls, so it must not run twice at once); the event loop keeps
accepting requests meanwhile, and they form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class Busy(Exception):
    """Too much is waiting already: the client should try again later (429)."""


class Closed(Exception):
    """The service is shutting down and takes no new work (503)."""


@dataclass
class _Job:
    item: Any
    size: int  # sentences, for the batch and queue bounds
    future: asyncio.Future


class Batcher:
    """Collects items and hands them to `run(items) -> results` (one result per item)."""

    def __init__(
        self,
        run: Callable[[Sequence[Any]], Sequence[Any]],
        executor: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        name: str = "batch",
    ) -> None:
        self.run, self.executor, self.name = run, executor, name
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._pending: list[_Job] = []
        self._queued = 0
        self._arrived = asyncio.Event()
        self._closed = False
        self._running = False  # a batch is in the model's thread now
        self._task: asyncio.Task | None = None
        self.batches = 0  # calls made, and the items they held: for /v1/info and tests
        self.items = 0

    async def submit(self, item: Any, size: int = 1) -> Any:
        """The result of `item`, once the batch holding it has run."""
        if self._closed:
            raise Closed("the service is shutting down")
        if self._queued + size > self.max_queue:
            raise Busy(f"{self._queued} sentences are waiting already; try again shortly")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve(), name=self.name)
        job = _Job(item, size, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._queued += size
        self._arrived.set()
        return await job.future

    async def close(self) -> None:
        """Take no new items, finish the ones waiting, then stop."""
        self._closed = True
        while self._pending or self._running:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            # The model is idle and something arrived: give others a moment to join.
            deadline = loop.time() + self.max_wait_s
            while self._queued < self.max_batch and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            jobs = self._take()
            self._arrived.clear()
            if self._pending:
                self._arrived.set()  # more than one batch waiting: go round again at once
            live = [job for job in jobs if not job.future.done()]  # clients that left
            if not live:
                continue
            self._running = True
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run, [job.item for job in live]
                )
            except Exception as error:  # noqa: BLE001 (each waiting request hears of it)
                log.exception("%s: a batch of %d failed", self.name, len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            finally:
                self._running = False
            self.batches += 1
            self.items += len(live)
            for job, result in zip(live, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)

    def _take(self) -> list[_Job]:
        """The oldest jobs up to `max_batch` sentences (always at least one)."""
        taken, size = [], 0
        while self._pending and (not taken or size + self._pending[0].size <= self.max_batch):
            job = self._pending.pop(0)
            taken.append(job)
            size += job.size
        self._queued -= size
        return taken
