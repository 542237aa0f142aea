"""The shared-memory ring between the acquisition process and its parent (in one process)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os

import numpy as np
import pytest

from wilo_backend.model import SampleBatch, SamplerStats
from wilo_backend.sampler.transport import RingReader, RingWriter, ring_bytes

_SPAWN = multiprocessing.get_context("spawn")


def _ring(capacity: int) -> tuple[RingWriter, RingReader]:
    buffer = _SPAWN.RawArray("B", ring_bytes(capacity))
    lock = _SPAWN.Lock()
    return RingWriter(buffer, capacity, lock), RingReader(buffer, capacity, lock)


def _batch(first: int, n: int) -> SampleBatch:
    index = np.arange(first, first + n)
    xyz = np.stack([index * 1.0, index * 2.0, index * 3.0], axis=1)
    return SampleBatch(first, index.astype(np.int64) * 1_250_000, xyz)


def _numbers(batches: list[SampleBatch]) -> list[int]:
    out: list[int] = []
    for batch in batches:
        assert np.array_equal(
            batch.xyz[:, 0], np.arange(batch.first_index, batch.first_index + len(batch))
        )
        assert np.array_equal(batch.t_ns, batch.xyz[:, 0].astype(np.int64) * 1_250_000)
        out.extend(range(batch.first_index, batch.first_index + len(batch)))
    return out


def test_batches_arrive_in_order_across_the_wrap() -> None:
    writer, reader = _ring(100)
    seen: list[int] = []
    first = 0
    for size in [30, 50, 40, 70, 1, 99]:
        writer.write(_batch(first, size))
        first += size
        seen += _numbers(reader.read())
    assert seen == list(range(first))
    assert reader.lost_handoff == 0
    assert reader.read() == []


def test_gaps_in_numbering_split_batches() -> None:
    writer, reader = _ring(100)
    writer.write(_batch(0, 10))
    writer.write(_batch(15, 10))  # 5 lost upstream
    batches = reader.read()
    assert [(b.first_index, len(b)) for b in batches] == [(0, 10), (15, 10)]
    assert reader.lost_handoff == 0


def test_a_reader_more_than_a_ring_behind_loses_the_oldest_counted() -> None:
    writer, reader = _ring(100)
    for k in range(25):
        writer.write(_batch(k * 10, 10))  # 250 samples into a ring of 100
    batches = reader.read()
    assert _numbers(batches) == list(range(150, 250))
    assert reader.lost_handoff == 150
    assert batches[0].first_index == 150  # the gap shows in the numbering


def test_a_writer_that_finds_the_lock_taken_defers_and_never_waits() -> None:
    writer, reader = _ring(100)
    assert reader.lock.acquire(False)  # the reader is mid-copy (or descheduled holding it)
    try:
        writer.write(_batch(0, 10))  # returns at once: queued, not published
        writer.write(_batch(10, 10))
        assert writer.control[0] == 0  # the head did not move while the lock was held
        assert not writer.flush()  # both batches still wait for the lock
    finally:
        reader.lock.release()
    writer.write(_batch(20, 5))  # the next write publishes the queue first, in order
    assert _numbers(reader.read()) == list(range(25))
    assert reader.lost_handoff == 0


def test_a_queue_longer_than_the_ring_drops_its_oldest_counted() -> None:
    writer, reader = _ring(100)
    assert reader.lock.acquire(False)
    try:
        for k in range(25):
            writer.write(_batch(k * 10, 10))  # 250 samples wait for a ring of 100
    finally:
        reader.lock.release()
    assert writer.flush()
    batches = reader.read()
    assert _numbers(batches) == list(range(150, 250))
    assert reader.lost_handoff == 150


def test_batch_larger_than_the_ring_keeps_its_newest_part() -> None:
    writer, reader = _ring(50)
    writer.write(_batch(0, 120))
    assert _numbers(reader.read()) == list(range(70, 120))
    assert reader.lost_handoff == 70


def test_counters_round_trip() -> None:
    writer, reader = _ring(10)
    stats = SamplerStats(
        connected=True,
        running=True,
        samples=123_456_789,
        rate_hz=800.01,
        lost_overflow=3,
        lost_missed_deadlines=4,
        i2c_errors=5,
        reconnects=6,
        fifo_resets=7,
        clock_error_ppm=-9876.5,
        deviation_us_p99=42.0,
        deviation_hist_counts=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        realtime=True,
        cpu=None,
        last_error="sensor lost: ü" * 40,
    )
    writer.publish_stats(stats)
    got = reader.stats()
    assert got.samples == 123_456_789 and got.rate_hz == pytest.approx(800.01)
    assert (got.lost_overflow, got.lost_missed_deadlines, got.i2c_errors) == (3, 4, 5)
    assert (got.reconnects, got.fifo_resets, got.cpu) == (6, 7, None)
    assert got.connected and got.realtime and got.clock_error_ppm == pytest.approx(-9876.5)
    assert got.deviation_hist_counts == list(range(1, 12))
    assert got.last_error.startswith("sensor lost: ü") and len(got.last_error.encode()) < 256
    writer.publish_stats(SamplerStats(cpu=3, last_error=""))
    assert reader.stats().cpu == 3 and reader.stats().last_error == ""


def test_writer_never_blocks_on_a_full_notify_pipe() -> None:
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)  # one page: quick to fill
    try:
        buffer = _SPAWN.RawArray("B", ring_bytes(10))
        writer = RingWriter(buffer, 10, _SPAWN.Lock(), write_fd)
        for k in range(10_000):  # more wake-ups than the pipe holds
            writer.write(_batch(k, 1))
        assert len(os.read(read_fd, 65536)) == 4096  # full, and the writer went on regardless
        assert writer.control[0] == 10_000
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_too_small_buffer_is_refused() -> None:
    buffer = multiprocessing.get_context("spawn").RawArray("B", 100)
    with pytest.raises(ValueError, match="too small"):
        RingReader(buffer, 10, _SPAWN.Lock())


def _race_writer(buffer: object, capacity: int, lock: object, total: int) -> None:
    """Child process: write `total` samples in batches of 1..37 as fast as it can."""
    writer = RingWriter(buffer, capacity, lock)  # type: ignore[arg-type]
    first, size = 0, 1
    while first < total:
        n = min(size, total - first)
        writer.write(_batch(first, n))
        first += n
        size = size % 37 + 1
    while not writer.flush(block=True):
        pass
    writer.publish_stats(SamplerStats(samples=total), block=True)


def test_writer_and_reader_racing_in_two_processes_never_tear_a_sample() -> None:
    """The writer (its own process, its own core where there are two) against a reader that
    copies as often as it can: every sample read is whole (its index, time and x,y,z agree), in
    order, and what is missing is exactly what was counted lost."""
    capacity, total = 512, 400_000
    buffer, lock = _SPAWN.RawArray("B", ring_bytes(capacity)), _SPAWN.Lock()
    reader = RingReader(buffer, capacity, lock)
    child = _SPAWN.Process(target=_race_writer, args=(buffer, capacity, lock, total))
    child.start()
    seen: list[int] = []
    while child.is_alive() or reader.pending:
        seen.extend(_numbers(reader.read()))  # _numbers checks every sample is consistent
    child.join()
    seen.extend(_numbers(reader.read()))
    assert child.exitcode == 0
    assert seen == sorted(set(seen)) and seen[-1] == total - 1
    assert len(seen) + reader.lost_handoff == total
    assert reader.stats().samples == total
