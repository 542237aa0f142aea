"""The bounded pool for expensive commands: a full pool refuses at once, a place frees on finish."""

from __future__ import annotations

import asyncio
import threading

import pytest

from wilo_backend.server.workers import BoundedPool, PoolBusyError


async def test_a_full_pool_refuses_and_a_cancelled_job_keeps_its_place_until_it_ends() -> None:
    pool = BoundedPool(workers=1, queue=1)
    release = threading.Event()
    running = asyncio.ensure_future(pool.run(lambda: release.wait(10)))
    queued = asyncio.ensure_future(pool.run(lambda: "queued"))
    await asyncio.sleep(0)
    with pytest.raises(PoolBusyError, match="busy"):
        await pool.run(lambda: "third")
    assert pool.refused_total == 1
    running.cancel()  # the client went away: its job still holds the worker
    await asyncio.sleep(0)
    with pytest.raises(PoolBusyError):
        await pool.run(lambda: "fourth")
    release.set()
    assert await queued == "queued"  # both places were released before this reply came
    assert pool.in_flight == 0
    assert await pool.run(lambda: 42) == 42
    pool.shutdown()
