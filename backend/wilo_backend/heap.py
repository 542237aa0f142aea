"""Keeps the main process's resident memory at what it uses: glibc malloc tuning and trimming."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import time

log = logging.getLogger("wilo_backend.heap")

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# How often the free pages inside the heap go back to the OS. The slowest pass measured under
# dashboard load was 8.7 ms (BENCHMARKS.md, "service"); every 5 s keeps the resident set within
# a few seconds' worth of request churn of what is really in use.
TRIM_INTERVAL_SECONDS = 5.0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): their allocators behave differently anyway
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold so big temporaries (CSV parses, JSON replies) are unmapped.

    By default glibc raises the threshold after each large free (up to 32 MiB), so later large
    arrays come from the heap and the heap keeps its peak: the soak saw RSS settle at 200+ MiB
    after a few concurrent get_csv_data calls. A fixed threshold also disables that adjustment.
    Returns False when the C library is not glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 1024 * 1024)
    # each worker thread (exports, CSV reads) would otherwise get an arena of its own that
    # keeps its high-water mark; two are plenty for a pump thread and a few request threads
    libc.mallopt(M_ARENA_MAX, 2)
    return True


def release_free_memory() -> bool:
    """Give the free pages inside glibc's heaps back to the OS (`malloc_trim(0)`).

    The trim threshold only returns free memory at the top of a heap. Replies, parses and
    per-client buffers of 1–256 KiB are freed in between longer-lived blocks, so the heap's
    interior fills with free pages that stay resident: the 30-minute soak saw 20–27 MiB of them
    (mallinfo2 `fordblks`); trimming took ~10 MiB off its RSS. `malloc_trim(0)` madvises
    those pages away; they cost a page fault each when reused. Returns True if any were released.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


async def trim_periodically(interval_seconds: float = TRIM_INTERVAL_SECONDS) -> None:
    """Run `release_free_memory` every `interval_seconds` until cancelled."""
    if _glibc() is None:
        return
    slowest_seconds = 0.0
    while True:
        await asyncio.sleep(interval_seconds)
        started = time.perf_counter()
        # on the event loop rather than a thread: it is short, and it takes the arenas' locks
        # whichever thread calls it
        release_free_memory()
        elapsed = time.perf_counter() - started
        if elapsed > slowest_seconds:
            slowest_seconds = elapsed
            log.debug("malloc_trim took %.2f ms (slowest so far)", elapsed * 1e3)
