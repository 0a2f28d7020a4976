"""Dynamic micro-batching: concurrent requests wait briefly in a queue and run as one model call.

Every model call runs on one dedicated thread, so the event loop keeps accepting requests while the
model works and torch's intra-op threads are not oversubscribed by competing calls. While a batch runs,
new requests pile up in the queue; the next batch takes up to `max_batch` of them at once. The first
request of a batch waits up to `max_wait_ms` for company only when there is traffic (others queued, or
the previous batch had several requests): a lone request at light load goes straight to the model,
so batching costs it no latency. With batching off,
each request is its own model call on the same thread (the baseline that batching is measured against).

If a batch fails, its requests are retried one by one, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self, process: Callable[[list[T]], list[R]], enabled: bool = True, max_batch: int = 64, max_wait_ms: float = 2.0
    ) -> None:
        self.process, self.enabled = process, enabled
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recstack-model")
        self._queue: asyncio.Queue[tuple[T, float, asyncio.Future[tuple[R, float]]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._last_size = 0

    async def start(self) -> None:
        if self.enabled:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._loop(), name="recstack-micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self.executor.shutdown(wait=True)

    async def submit(self, item: T) -> tuple[R, float]:
        """(the result of `item`, seconds it waited before its model call started)."""
        loop = asyncio.get_running_loop()
        if self._queue is None:
            queued = time.perf_counter()
            results = await loop.run_in_executor(self.executor, self._timed, [item], [queued])
            return results[0]
        future: asyncio.Future[tuple[R, float]] = loop.create_future()
        await self._queue.put((item, time.perf_counter(), future))
        return await future

    def _timed(self, items: list[T], queued: list[float]) -> list[tuple[R, float]]:
        started = time.perf_counter()
        return [(result, started - q) for result, q in zip(self.process(items), queued)]

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            jobs = [await queue.get()]
            if (queue.qsize() or self._last_size > 1) and queue.qsize() < self.max_batch - 1 and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
            while len(jobs) < self.max_batch and not queue.empty():
                jobs.append(queue.get_nowait())
            self._last_size = len(jobs)
            await self._run(jobs)

    async def _run(self, jobs: list[tuple[T, float, asyncio.Future[tuple[R, float]]]]) -> None:
        loop = asyncio.get_running_loop()
        items, queued = [j[0] for j in jobs], [j[1] for j in jobs]
        try:
            results = await loop.run_in_executor(self.executor, self._timed, items, queued)
        except Exception as exc:
            if len(jobs) > 1:  # isolate the failing request: the others still get their pages
                for job in jobs:
                    await self._run([job])
            elif not jobs[0][2].done():
                jobs[0][2].set_exception(exc)
            return
        for (_, _, future), result in zip(jobs, results):
            if not future.done():  # done: the client went away
                future.set_result(result)
