"""Batches and counters from the acquisition process to its parent through shared memory.

A single-producer/single-consumer ring of samples that never blocks the producer: when the
consumer falls more than a ring behind, the oldest samples are overwritten and the consumer
counts exactly how many it missed. Counters travel in a block beside it.

Ordering. The Pi's Cortex-A72 is ARMv8, whose stores may become visible to another core out of
program order: a reader that sees the new head may still read old slot contents, and plain
Python has no memory fence to prevent it. So publication is ordered by construction: every
access to the head, the slots and the counters happens while holding one process-shared lock
(a POSIX semaphore: the unnamed one of shm.py in the service, a multiprocessing Lock in some
tests). POSIX (XBD 4.12, "Memory Synchronization")
requires sem_wait/sem_trywait/sem_post to synchronise memory; glibc implements them with
acquire/release atomics on every architecture, aarch64 included. What the writer stored before
its sem_post is therefore visible to a reader after its sem_wait. The lone heartbeat word is
written outside the lock: an aligned 64-bit store is single-copy atomic on ARMv8 and its
ordering against other data does not matter.

The writer only ever *tries* the lock (sem_trywait): when the reader holds it (a copy takes
microseconds, but the parent may be descheduled mid-copy) the batch waits in a bounded queue
and goes out with the next write, so the sampler never blocks on its consumer. The reader waits
for the lock with a timeout, so a child killed while holding it cannot hang the parent.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections import deque
from dataclasses import fields
from typing import Any, Protocol

import numpy as np

from wilo_backend.model import Float64Array, Int64Array, SampleBatch, SamplerStats
from wilo_backend.sensor.pacing import HIST_BOUNDS_US

# control words (int64)
_HEAD = 0  # samples published (monotonic count of ring writes); under the lock
_DROPPED = 1  # samples the writer dropped while the lock stayed taken; under the lock
_STOP = 2  # parent asks the child to stop
_HEARTBEAT = 4  # child's CLOCK_MONOTONIC ns at its last loop
_CONTROL_WORDS = 8
# how long the reader waits for the lock before giving up on this read
_READ_LOCK_TIMEOUT_S = 0.5


class SharedLock(Protocol):
    """A process-shared lock on a POSIX semaphore (shm.py's, or multiprocessing's Lock)."""

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...

    def release(self) -> None: ...


# counters block (float64): the numeric SamplerStats fields, then the histogram counts
_STAT_FIELDS = (
    "connected",
    "running",
    "samples",
    "rate_hz",
    "lost_overflow",
    "lost_missed_deadlines",
    "i2c_errors",
    "reconnects",
    "fifo_resets",
    "clock_error_ppm",
    "deviation_us_p50",
    "deviation_us_p99",
    "deviation_us_max",
    "realtime",
    "cpu",
)
_INT_FIELDS = {f.name for f in fields(SamplerStats) if f.type in ("int", "int | None")}
_BOOL_FIELDS = {"connected", "running", "realtime"}
_HIST_SLOTS = len(HIST_BOUNDS_US)
_STAT_WORDS = len(_STAT_FIELDS) + _HIST_SLOTS
_ERROR_BYTES = 256
_SAMPLE_BYTES = 8 + 8 + 3 * 8  # index, t_ns, xyz


def ring_bytes(capacity: int) -> int:
    """Shared memory needed for a ring of `capacity` samples."""
    return 8 * _CONTROL_WORDS + 8 * _STAT_WORDS + _ERROR_BYTES + capacity * _SAMPLE_BYTES


class _Shared:
    """Typed numpy views onto one shared buffer (shm.py's mapping or a multiprocessing RawArray)."""

    def __init__(self, buffer: Any, capacity: int) -> None:
        self.capacity = capacity
        memory = memoryview(buffer).cast("B")
        if len(memory) < ring_bytes(capacity):
            raise ValueError(f"shared buffer of {len(memory)} bytes is too small for {capacity}")
        offset = 0

        def view(dtype: Any, count: int) -> Any:
            nonlocal offset
            array = np.frombuffer(memory, dtype=dtype, count=count, offset=offset)
            offset += array.nbytes
            return array

        self.control: Int64Array = view(np.int64, _CONTROL_WORDS)
        self.counters: Float64Array = view(np.float64, _STAT_WORDS)
        self.error = view(np.uint8, _ERROR_BYTES)
        self.index: Int64Array = view(np.int64, capacity)
        self.t_ns: Int64Array = view(np.int64, capacity)
        self.xyz: Float64Array = view(np.float64, capacity * 3).reshape(capacity, 3)


class RingWriter(_Shared):
    """The acquisition process's end: `write` never waits for the reader."""

    def __init__(
        self, buffer: Any, capacity: int, lock: SharedLock, notify_fd: int | None = None
    ) -> None:
        super().__init__(buffer, capacity)
        self.lock = lock
        self.notify_fd = notify_fd
        if notify_fd is not None:
            os.set_blocking(notify_fd, False)
        self._queued: deque[SampleBatch] = deque()  # batches waiting for the lock
        self._queued_samples = 0
        self._dropped = 0  # dropped from the queue, not yet told to the reader

    def write(self, batch: SampleBatch) -> None:
        """Publish `batch` now, or with the next write if the reader holds the lock."""
        if len(batch):
            self._queued.append(batch)
            self._queued_samples += len(batch)
            while self._queued_samples - len(self._queued[0]) >= self.capacity:
                # more than a ring is waiting: the oldest would be overwritten anyway
                dropped = self._queued.popleft()
                self._queued_samples -= len(dropped)
                self._dropped += len(dropped)
        self.flush(block=False)

    def flush(self, block: bool = False, timeout_s: float = 1.0) -> bool:
        """Publish every queued batch; False if the lock was not had (they stay queued)."""
        if not self._queued and not self._dropped:
            return True
        if not self.lock.acquire(block, timeout_s if block else None):
            return False
        try:
            while self._queued:
                self._put(self._queued.popleft())
            self._queued_samples = 0
            self.control[_DROPPED] += self._dropped
            self._dropped = 0
        finally:
            self.lock.release()
        self._notify()
        return True

    def _put(self, batch: SampleBatch) -> None:
        """Copy one batch into the slots and advance the head (the lock is held)."""
        n = len(batch)
        head = int(self.control[_HEAD])
        skip = max(0, n - self.capacity)  # a batch larger than the ring keeps its newest part
        head += skip
        n -= skip
        start = head % self.capacity
        first = min(n, self.capacity - start)
        rows = np.arange(batch.first_index + skip, batch.first_index + skip + n, dtype=np.int64)
        self.index[start : start + first] = rows[:first]
        self.t_ns[start : start + first] = batch.t_ns[skip : skip + first]
        self.xyz[start : start + first] = batch.xyz[skip : skip + first]
        if first < n:
            rest = n - first
            self.index[:rest] = rows[first:]
            self.t_ns[:rest] = batch.t_ns[skip + first :]
            self.xyz[:rest] = batch.xyz[skip + first :]
        self.control[_HEAD] = head + n

    def _notify(self) -> None:
        if self.notify_fd is None:
            return
        # a full pipe already says "data waiting"; never wait for the reader
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.notify_fd, b"\x01")

    def publish_stats(self, stats: SamplerStats, block: bool = False) -> bool:
        """Copy the counters into the shared block; skipped (False) if the lock is taken."""
        if not self.lock.acquire(block, 1.0 if block else None):
            return False
        try:
            values = self.counters
            for slot, name in enumerate(_STAT_FIELDS):
                value = getattr(stats, name)
                values[slot] = -1.0 if value is None else float(value)
            counts = stats.deviation_hist_counts
            for slot in range(_HIST_SLOTS):
                values[len(_STAT_FIELDS) + slot] = counts[slot] if slot < len(counts) else 0.0
            encoded = stats.last_error.encode("utf-8", "replace")[: _ERROR_BYTES - 1]
            self.error[: len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
            self.error[len(encoded)] = 0
        finally:
            self.lock.release()
        return True

    def heartbeat(self, now_ns: int) -> None:
        self.control[_HEARTBEAT] = now_ns

    @property
    def stop_requested(self) -> bool:
        return bool(self.control[_STOP])


class RingReader(_Shared):
    """The parent's end: `read` returns what arrived since last time, split at gaps."""

    def __init__(self, buffer: Any, capacity: int, lock: SharedLock) -> None:
        super().__init__(buffer, capacity)
        self.lock = lock
        self.tail = 0
        self.lost_handoff = 0
        self._values: Float64Array = self.counters.copy()  # the last consistent counters
        self._error = bytes(self.error)

    def request_stop(self) -> None:
        self.control[_STOP] = 1

    @property
    def pending(self) -> int:
        """Samples published since the last read: a hint for waiting (read() takes the lock)."""
        return int(self.control[_HEAD]) - self.tail

    def read(self) -> list[SampleBatch]:
        if not self.lock.acquire(True, _READ_LOCK_TIMEOUT_S):
            return []  # the writer died holding it; the parent notices the dead child
        try:
            head = int(self.control[_HEAD])
            dropped = int(self.control[_DROPPED])
            self.control[_DROPPED] = 0
            if head == self.tail:
                index, t_ns, xyz = _EMPTY
            else:
                start = max(self.tail, head - self.capacity)
                index, t_ns, xyz = self._copy(start, head)
                self.lost_handoff += start - self.tail
        finally:
            self.lock.release()
        self.lost_handoff += dropped
        self.tail = head
        return _split(index, t_ns, xyz)

    def _copy(self, start: int, stop: int) -> tuple[Int64Array, Int64Array, Float64Array]:
        a, b = start % self.capacity, stop % self.capacity
        if a < b:
            return self.index[a:b].copy(), self.t_ns[a:b].copy(), self.xyz[a:b].copy()
        return (
            np.concatenate((self.index[a:], self.index[:b])),
            np.concatenate((self.t_ns[a:], self.t_ns[:b])),
            np.concatenate((self.xyz[a:], self.xyz[:b])),
        )

    def heartbeat_age_s(self) -> float:
        beat = int(self.control[_HEARTBEAT])
        return math.inf if beat == 0 else (time.monotonic_ns() - beat) / 1e9

    def stats(self) -> SamplerStats:
        """A consistent copy of the child's counters (the previous copy if the lock is busy)."""
        if self.lock.acquire(True, _READ_LOCK_TIMEOUT_S):
            try:
                self._values = self.counters.copy()
                self._error = bytes(self.error)
            finally:
                self.lock.release()
        values, error = self._values, self._error
        result = SamplerStats()
        for slot, name in enumerate(_STAT_FIELDS):
            value = float(values[slot])
            if name in _BOOL_FIELDS:
                setattr(result, name, value != 0.0)
            elif name == "cpu":
                result.cpu = None if value < 0 else int(value)
            elif name in _INT_FIELDS:
                setattr(result, name, int(value))
            else:
                setattr(result, name, value)
        counts = [int(v) for v in values[len(_STAT_FIELDS) :]]
        if any(counts):
            result.deviation_hist_bounds_us = list(HIST_BOUNDS_US)
            result.deviation_hist_counts = counts
        result.last_error = error.split(b"\0", 1)[0].decode("utf-8", "replace")
        result.lost_handoff = self.lost_handoff
        return result


_EMPTY: tuple[Int64Array, Int64Array, Float64Array] = (
    np.zeros(0, np.int64),
    np.zeros(0, np.int64),
    np.zeros((0, 3)),
)


def _split(index: Int64Array, t_ns: Int64Array, xyz: Float64Array) -> list[SampleBatch]:
    """One SampleBatch per run of consecutive sample numbers."""
    if index.shape[0] == 0:
        return []
    cuts = (np.flatnonzero(np.diff(index) != 1) + 1).tolist()
    bounds = [0, *cuts, index.shape[0]]
    return [SampleBatch(int(index[a]), t_ns[a:b], xyz[a:b]) for a, b in itertools.pairwise(bounds)]
