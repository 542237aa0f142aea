"""heap.py: the free pages in the middle of glibc's heap really go back to the OS."""

from __future__ import annotations

import asyncio
import json
import platform
import subprocess
import sys
import textwrap

import pytest

from wilo_backend import heap

# A fresh interpreter, so the test's own heap history does not matter: 120 MiB of 1–200 KiB
# blocks (below the fixed 256 KiB mmap threshold, so they come from the heap), then 90 % of them
# freed while every tenth, spread over the whole heap, stays: the top cannot be trimmed, only
# the interior can.
FRAGMENT = textwrap.dedent(
    """
    import json, random, psutil
    from wilo_backend import heap
    tuned = heap.tune_malloc()
    rng = random.Random(3)
    blocks = [bytearray(rng.randint(1_000, 200_000)) for _ in range(1_200)]
    kept = blocks[::10]
    del blocks
    rss = psutil.Process().memory_info().rss
    released = heap.release_free_memory()
    after = psutil.Process().memory_info().rss
    print(json.dumps({"tuned": tuned, "released": released, "before": rss, "after": after,
                      "kept": sum(len(b) for b in kept)}))
    """
)


pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's; the Pi runs glibc"
)


def test_release_free_memory_returns_the_heaps_interior() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT], check=True, capture_output=True, text=True
    ).stdout
    figures = json.loads(out)
    assert figures["tuned"] is True
    assert figures["released"] is True
    freed_mib = (figures["before"] - figures["after"]) / 2**20
    # ~108 MiB were freed in between kept blocks; most of it must leave the resident set
    assert freed_mib > 60, figures


async def test_trim_periodically_runs_until_cancelled() -> None:
    task = asyncio.create_task(heap.trim_periodically(interval_seconds=0.01))
    await asyncio.sleep(0.05)
    assert not task.done()  # still looping: a failed trim would have ended it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
