"""The dynamic batcher on its own: requests that arrive together make one call, a call never
exceeds the batch bound, the queue is bounded, closing drains, and failures reach everyone."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rnnlm.serve.batcher import Batcher, Busy, Closed


class Recorder:
    """A stand-in for a compiled call: doubles each item, remembers each batch."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list] = []
        self.threads: set[str] = set()
        self.delay, self.fail = delay, fail

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model fell over")
        return [2 * item for item in items]


def batcher(run, **settings):
    options = {"max_batch": 100, "max_wait_s": 0.05, "max_queue": 1000, **settings}
    return Batcher(run, ThreadPoolExecutor(1, "model"), **options)


def test_requests_that_arrive_together_share_one_call():
    run = Recorder()

    async def main():
        b = batcher(run)
        results = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.close()
        return results

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert run.batches == [list(range(10))]
    assert run.threads == {"model_0"}


def test_a_call_never_exceeds_the_batch_bound_counted_in_sentences():
    run = Recorder()

    async def main():
        b = batcher(run, max_batch=5)
        await asyncio.gather(*(b.submit(i, size=2) for i in range(6)))
        await b.close()

    asyncio.run(main())
    assert [len(batch) for batch in run.batches] == [2, 2, 2]  # 2 items = 4 sentences each
    assert sorted(item for batch in run.batches for item in batch) == list(range(6))


def test_what_arrives_while_the_model_is_busy_forms_the_next_batch():
    run = Recorder(delay=0.2)

    async def main():
        b = batcher(run, max_wait_s=0.0)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.05)  # the first call is running now
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]
        await asyncio.gather(first, *rest)
        await b.close()

    asyncio.run(main())
    assert run.batches == [[0], [1, 2, 3, 4, 5]]


def test_an_oversized_item_still_runs_alone():
    run = Recorder()

    async def main():
        b = batcher(run, max_batch=3)
        result = await b.submit(7, size=10)
        await b.close()
        return result

    assert asyncio.run(main()) == 14


def test_the_queue_is_bounded():
    run = Recorder(delay=0.2)

    async def main():
        b = batcher(run, max_queue=4, max_wait_s=0.0)
        running = asyncio.ensure_future(b.submit(0, size=4))
        await asyncio.sleep(0.05)  # taken off the queue: room again
        waiting = asyncio.ensure_future(b.submit(1, size=4))
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await b.submit(2)
        await asyncio.gather(running, waiting)
        await b.close()

    asyncio.run(main())


def test_closing_finishes_what_waits_and_refuses_new_work():
    run = Recorder(delay=0.1)

    async def main():
        b = batcher(run)
        pending = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        await b.close()
        assert all(task.done() for task in pending)
        with pytest.raises(Closed):
            await b.submit(9)
        return [task.result() for task in pending]

    assert asyncio.run(main()) == [0, 2, 4]


def test_a_failed_call_fails_each_request_in_it_and_the_batcher_goes_on():
    run = Recorder(fail=True)

    async def main():
        b = batcher(run)
        results = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
        run.fail = False
        after = await b.submit(5)
        await b.close()
        return results, after

    results, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert after == 10


def test_a_client_that_left_is_not_computed_for():
    run = Recorder(delay=0.1)

    async def main():
        b = batcher(run, max_wait_s=0.0)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(b.submit(1))
        stays = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(first, stays)
        await b.close()

    asyncio.run(main())
    assert run.batches == [[0], [2]]
