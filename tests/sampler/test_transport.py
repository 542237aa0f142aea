"""The shared-memory ring between the acquisition process and its parent (in one process)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os

import numpy as np
import pytest

from wilo_backend.model import SampleBatch, SamplerStats
from wilo_backend.sampler.transport import RingReader, RingWriter, ring_bytes


def _ring(capacity: int) -> tuple[RingWriter, RingReader]:
    buffer = multiprocessing.get_context("spawn").RawArray("B", ring_bytes(capacity))
    return RingWriter(buffer, capacity), RingReader(buffer, capacity)


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


def test_samples_being_overwritten_during_the_copy_are_dropped() -> None:
    writer, reader = _ring(100)
    writer.write(_batch(0, 100))
    writer.control[1] = 130  # the writer has reserved 30 more slots (it is writing them now)
    batches = reader.read()
    assert _numbers(batches) == list(range(30, 100))
    assert reader.lost_handoff == 30


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
        buffer = multiprocessing.get_context("spawn").RawArray("B", ring_bytes(10))
        writer = RingWriter(buffer, 10, write_fd)
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
        RingReader(buffer, 10)
