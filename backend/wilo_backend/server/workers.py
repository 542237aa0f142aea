"""A bounded thread pool for expensive commands: a full queue says 'busy' instead of growing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolBusyError(Exception):
    """Every worker is busy and the queue is full; the request is refused, not queued."""


class BoundedPool:
    """`workers` threads and at most `queue` jobs waiting; used from one event loop only."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.in_flight = 0
        self.refused_total = 0
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="wilo-expensive"
        )

    async def run(self, job: Callable[[], T]) -> T:
        """Run `job` on a worker; PoolBusyError at once when `capacity` jobs are in already."""
        if self.in_flight >= self.capacity:
            self.refused_total += 1
            raise PoolBusyError(
                f"busy: {self.in_flight} expensive requests queued or running; try again shortly"
            )
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        future = self._executor.submit(job)
        # Released when the thread is done, not when the waiting task is: a cancelled request
        # whose job is already running still holds its place until the worker is free.
        future.add_done_callback(lambda _: self._release_from_worker(loop))
        return await asyncio.wrap_future(future)

    def _release_from_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        # a job that ends after the loop closed (service stopping) has nobody left to tell
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self.in_flight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
