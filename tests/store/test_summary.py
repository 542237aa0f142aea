"""Min/max summaries: exact per-bucket extremes, rings that wrap, decimation that keeps peaks."""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import examples
from wilo_backend.store.summary import (
    POINT_DTYPE,
    PointRing,
    Summaries,
    decimate,
    decimate_chunks,
    make_points,
    minmax_indices,
    summarize_100ms,
)

T0_NS = 1_795_792_920_000_000_000


@settings(max_examples=examples(80), deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=200),
    st.lists(st.integers(1, 9), min_size=1, max_size=60),
)
def test_minmax_indices_match_a_brute_force(values: list[int], run_lengths: list[int]) -> None:
    accel = np.array(values, dtype=np.float64)  # small integers: many ties
    keys = np.repeat(np.arange(len(run_lengths)), run_lengths)[: len(values)]
    keys = np.concatenate((keys, np.full(len(values) - keys.shape[0], len(run_lengths))))
    expected: list[int] = []
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        lo = members[np.argmin(accel[members])]
        hi = members[np.argmax(accel[members])]
        expected += sorted({int(lo), int(hi)})
    assert minmax_indices(accel, keys).tolist() == expected


def test_decimate_keeps_the_extremes_in_time_order() -> None:
    n = 100_000
    t = T0_NS + np.arange(n, dtype=np.int64) * 1_250_000
    xyz = np.random.default_rng(3).normal(0, 1, (n, 3))
    xyz[54_321] = [0, 0, 200.0]
    points = make_points(t, xyz)
    out = decimate(points, 1000)
    assert 900 <= out.shape[0] <= 1000
    assert np.all(np.diff(out["t"]) > 0)
    assert out["a"].max() == points["a"].max()
    assert out["a"].min() == points["a"].min()
    assert decimate(points[:10], 1000).shape[0] == 10


def test_ring_wraps_and_reports_what_it_still_covers() -> None:
    ring = PointRing(10)
    t = T0_NS + np.arange(25, dtype=np.int64)
    for start in range(0, 25, 7):
        ring.extend(make_points(t[start : start + 7], np.ones((len(t[start : start + 7]), 3))))
    assert len(ring) == 10 and ring.total == 25
    assert ring.slice_total(0, ring.total)["t"].tolist() == t[15:].tolist()
    assert ring.slice_total(20, 23)["t"].tolist() == t[20:23].tolist()
    assert ring.covers(int(t[15])) and not ring.covers(int(t[14]))
    assert ring.last_t() == int(t[-1])


@settings(max_examples=examples(200), deadline=None)
@given(
    capacity=st.integers(1, 12),
    batches=st.lists(st.lists(st.integers(-50, 50), max_size=15), max_size=8),
    begin=st.integers(-5, 80),
    length=st.integers(-3, 30),
    since=st.integers(-60, 60),
)
def test_ring_reads_match_a_list_of_everything_it_was_given(
    capacity: int, batches: list[list[int]], begin: int, length: int, since: int
) -> None:
    # timestamps in any order, as after a wall-clock step backwards
    ring = PointRing(capacity)
    given_t: list[int] = []
    for batch in batches:
        t = np.array(batch, dtype=np.int64)
        ring.extend(make_points(t, np.ones((t.shape[0], 3))))
        given_t += batch
    held = given_t[len(given_t) - len(ring) :]
    first_held = len(given_t) - len(held)
    assert ring.slice_total(0, ring.total)["t"].tolist() == held
    wanted = [
        t for i, t in enumerate(given_t) if i >= max(begin, first_held) and i < begin + length
    ]
    assert ring.slice_total(begin, begin + length)["t"].tolist() == wanted
    assert ring.newer_than(since)["t"].tolist() == [t for t in held if t > since]


def test_levels_answer_long_windows_and_raw_answers_short_ones() -> None:
    summaries = Summaries(window_seconds=600, raw_seconds=10)
    rng = np.random.default_rng(0)
    seconds = 300
    for s in range(seconds):
        t = T0_NS + (s * 800 + np.arange(800, dtype=np.int64)) * 1_250_000
        xyz = rng.normal(0, 1, (800, 3))
        if s == 17:
            xyz[400] = [-90.0, 0.0, 0.0]
        summaries.ingest(t, xyz)
    short = summaries.recent(2, 100_000)
    assert short.shape[0] == 1600  # raw, every sample
    long = summaries.recent(seconds, 600)
    assert long.shape[0] <= 600
    assert long["a"].max() == 90.0
    assert long["t"][0] < T0_NS + 2 * 10**9 and np.all(np.diff(long["t"]) > 0)
    assert summaries.sizes().points_100ms <= 2 * seconds * 10


def test_summarize_a_finished_file_closes_the_last_bucket() -> None:
    t = T0_NS + np.arange(250, dtype=np.int64) * 1_250_000  # 312.5 ms: 4 buckets
    xyz = np.zeros((250, 3))
    xyz[-1] = [5.0, 0, 0]
    out = summarize_100ms(make_points(t, xyz))
    assert out["t"][-1] == t[-1] and out["a"][-1] == 5.0
    assert out.shape[0] <= 8


def test_a_new_ring_is_resident_at_once_so_rss_does_not_creep_as_it_fills() -> None:
    ring = PointRing(1_000_000)  # 40 MB of points
    # the ring's own pages, by mincore(2): the process's RSS delta was 0 when the allocation
    # reused pages earlier tests had freed (already resident), failing a ring that was fine
    buf = ring._buf.view(np.uint8)
    page = mmap.PAGESIZE
    start = buf.ctypes.data // page * page
    length = buf.ctypes.data + buf.nbytes - start
    vec = (ctypes.c_ubyte * ((length + page - 1) // page))()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(start, length, vec) == 0, os.strerror(ctypes.get_errno())
    resident = sum(v & 1 for v in vec) * page
    assert resident >= 35 * 2**20, f"only {resident / 2**20:.1f} MiB of the ring resident"
    assert len(ring) == 0


@settings(max_examples=examples(200), deadline=None)
@given(
    values=st.lists(st.integers(0, 6), max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    max_points=st.integers(0, 40),
)
def test_decimating_chunk_by_chunk_picks_what_decimating_all_at_once_picks(
    values: list[int], cuts: list[int], max_points: int
) -> None:
    # few distinct values, so buckets have ties and the first-hit rule matters
    n = len(values)
    t = T0_NS + np.arange(n, dtype=np.int64)
    points = make_points(t, np.zeros((n, 3)), np.array(values, dtype=np.float64))
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    chunks = [points[a:b] for a, b in itertools.pairwise(bounds)]
    got = decimate_chunks(iter(chunks), n, max_points)
    assert got["t"].tolist() == decimate(points, max_points)["t"].tolist()


def test_memory_hardly_grows_with_retention_and_a_day_is_answered_from_coarser_levels() -> None:
    """Rings sized to the whole window made RSS grow linearly (132 MB at 24 h, issue 20)."""
    two_hours = Summaries(window_seconds=2 * 3600, raw_seconds=300)
    a_day = Summaries(window_seconds=24 * 3600, raw_seconds=300)
    a_week = Summaries(window_seconds=7 * 24 * 3600, raw_seconds=300)

    def ring_bytes(summaries: Summaries) -> int:
        rings = (summaries.raw, summaries.level_100ms.ring, summaries.level_1s.ring)
        return sum(r._buf.nbytes for r in (*rings, summaries.level_10s.ring))

    assert ring_bytes(a_day) < 1.3 * ring_bytes(two_hours)
    assert ring_bytes(a_week) < 1.6 * ring_bytes(two_hours)
    # a day of 100 ms points as start-up restores them from the sidecars, one peak early on
    t = T0_NS + np.arange(24 * 3600 * 20, dtype=np.int64) * 50_000_000
    a = np.full(t.shape[0], 9.8)
    a[1000] = 50.0
    points = np.zeros(t.shape[0], dtype=POINT_DTYPE)
    points["t"], points["a"] = t, a
    points["xyz"][:, 2] = a
    for chunk in np.array_split(points, 1440):
        a_day.load_100ms(chunk)
    day = a_day.recent(24 * 3600, 3000)
    assert day.shape[0] <= 3000
    assert day["a"].max() == 50.0  # the 10 s level kept the peak of the first minutes
    assert day["t"][0] <= T0_NS + 10 * 10**9 and day["t"][-1] >= t[-1] - 20 * 10**9
    assert np.all(np.diff(day["t"]) > 0)
    # the last hour still comes from a finer level, up to the newest point
    hour = a_day.recent(3600, 100_000)
    assert hour.shape[0] > 3600 * 2 and hour["t"][-1] == t[-1]
