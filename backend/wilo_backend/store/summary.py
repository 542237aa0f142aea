"""In-memory multi-resolution history: raw samples, 100 ms and 1 s min/max points, decimation.

Each summary level keeps, per bucket, the real samples holding the bucket's minimum and maximum
acceleration (so a chart of any level shows true peaks), in fixed numpy rings: 100 ms for the
last 2 h, 1 s for the last 12 h, 10 s for the whole retention window, so memory hardly grows
with retention. "The last two hours" is answered from the 1 s level plus the finer levels' and
the raw tail's newest points, never by parsing CSV.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wilo_backend.model import OUTPUT_RATE_HZ, Float64Array, Int64Array
from wilo_backend.store.csvformat import magnitude
from wilo_backend.timestamps import iso_array

NS_PER_S = 1_000_000_000
MAX_RECENT_SECONDS = 10 * 366 * 86_400.0
POINT_DTYPE = np.dtype([("t", "<i8"), ("xyz", "<f8", (3,)), ("a", "<f8")])
Points = npt.NDArray[np.void]
# numpy copies a structured dtype with a sub-array field ('xyz') field by field, 3-10x slower
# than the same 40 bytes as one opaque record (a 2 h get_recent_data spent 5 ms of its 7 ms in
# one such copy). Every copy of points (ring writes, selections, joins) goes through these.
_RECORD = np.dtype((np.void, POINT_DTYPE.itemsize))


def join(parts: Iterable[Points]) -> Points:
    """The points of `parts` one after another (a copy)."""
    return np.concatenate([part.view(_RECORD) for part in parts]).view(POINT_DTYPE)


def pick(points: Points, index: npt.NDArray[np.bool_] | Int64Array) -> Points:
    """points[index] (a mask or indices), copied as whole records."""
    return points.view(_RECORD)[index].view(POINT_DTYPE)


def make_points(t_ns: Int64Array, xyz: Float64Array, accel: Float64Array | None = None) -> Points:
    points = np.empty(t_ns.shape[0], dtype=POINT_DTYPE)
    points["t"] = t_ns
    points["xyz"] = xyz
    points["a"] = magnitude(xyz) if accel is None else accel
    return points


class PointRing:
    """A fixed-capacity ring of points in arrival order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._buf = np.zeros(self.capacity, dtype=POINT_DTYPE)
        # np.zeros gets untouched pages; writing them now puts the whole ring in the resident set
        # at start-up (raw ring 9.6 MB, 100 ms level 5.9 MB), so RSS shows the real footprint
        # from the first minute instead of creeping up as the rings fill like a leak would
        self._buf.view(np.uint8).fill(0)
        self.total = 0  # points ever added

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def extend(self, points: Points) -> None:
        n = points.shape[0]
        if n == 0:
            return
        if n >= self.capacity:
            points = points[-self.capacity :]
            self.total += n - self.capacity
            n = self.capacity
        start = self.total % self.capacity
        first = min(n, self.capacity - start)
        records = self._buf.view(_RECORD)
        incoming = points.view(_RECORD)
        records[start : start + first] = incoming[:first]
        records[: n - first] = incoming[first:]
        self.total += n

    def _views(self, begin: int, end: int) -> tuple[Points, Points]:
        """Points numbered [begin, end) by `total` as two views of the buffer (no copy)."""
        begin = max(begin, self.total - len(self))
        end = min(end, self.total)
        if end <= begin:
            return self._buf[:0], self._buf[:0]
        first = begin % self.capacity
        last = first + (end - begin)
        if last <= self.capacity:
            return self._buf[first:last], self._buf[:0]
        return self._buf[first:], self._buf[: last - self.capacity]

    def slice_total(self, begin: int, end: int) -> Points:
        """Points numbered [begin, end) by `total`, as far as still held (a copy)."""
        return join(self._views(begin, end))

    def newer_than(self, t_ns: int) -> Points:
        """The held points with t > t_ns, in arrival order.

        Copies only those: a 60 s question to the full 300 s raw ring used to copy the whole
        ring (9.6 MB) and an index array for it before filtering, the largest transient the
        30-minute soak's RSS peaks caught.
        """
        older, newer = self._views(0, self.total)
        return join((pick(older, older["t"] > t_ns), pick(newer, newer["t"] > t_ns)))

    def tail_newer_than(self, t_ns: int, chunk: int = 4096) -> Points:
        """newer_than() for a time near the newest point: looks back from the newest point
        only until a chunk holds an older one, so it costs what it returns, not the ring.

        For the open buckets of a coarser level (recent()); a point behind a wall-clock step
        backwards can be missed, as the fixed raw tail used before did.
        """
        end = self.total
        begin = self.total - len(self)
        start = end
        while start > begin:
            start = max(begin, start - chunk)
            older, newer = self._views(start, min(start + chunk, end))
            if (older.shape[0] and older["t"].min() <= t_ns) or (
                newer.shape[0] and newer["t"].min() <= t_ns
            ):
                break
        points = self.slice_total(start, end)
        return pick(points, points["t"] > t_ns)

    def covers(self, since_t_ns: int) -> bool:
        """True if nothing at or after `since_t_ns` has been overwritten."""
        if self.total <= self.capacity:
            return True
        oldest = self._buf[self.total % self.capacity]["t"]
        return bool(oldest <= since_t_ns)

    def last_t(self) -> int | None:
        if self.total == 0:
            return None
        return int(self._buf[(self.total - 1) % self.capacity]["t"])


def minmax_indices(accel: Float64Array, keys: Int64Array) -> Int64Array:
    """Indices of the min and max of `accel` in each run of equal `keys`, in index order."""
    n = accel.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    run = np.repeat(np.arange(starts.shape[0]), np.diff(np.append(starts, n)))
    lo = np.minimum.reduceat(accel, starts)
    hi = np.maximum.reduceat(accel, starts)
    # first index in each run that attains the run's min / max
    lo_hits = np.flatnonzero(accel == lo[run])
    hi_hits = np.flatnonzero(accel == hi[run])
    # hits come in index order, so each run's first hit is where the run number changes
    lo_idx = lo_hits[np.flatnonzero(np.diff(run[lo_hits], prepend=-1))]
    hi_idx = hi_hits[np.flatnonzero(np.diff(run[hi_hits], prepend=-1))]
    pairs = np.sort(np.stack([lo_idx, hi_idx], axis=1), axis=1).ravel()
    keep = np.concatenate(([True], pairs[1:] != pairs[:-1]))
    return pairs[keep]


def decimate(points: Points, max_points: int) -> Points:
    """At most `max_points` points: each bucket's min and max acceleration (peaks survive)."""
    n = points.shape[0]
    if n <= max_points or max_points <= 0:
        return points if max_points > 0 else points[:0]
    buckets = max(1, max_points // 2)
    keys = (np.arange(n, dtype=np.int64) * buckets) // n
    idx = minmax_indices(points["a"], keys)
    return pick(points, idx[:max_points])


def decimate_chunks(chunks: Iterable[Points], total: int, max_points: int) -> Points:
    """decimate() of the chunks joined (`total` points in all), holding one chunk at a time.

    Each chunk keeps only its candidates, the first min and max of every bucket it touches; a last
    pass over the candidates picks exactly what decimate() would, since a bucket's first extreme
    is the first one in the earliest chunk that holds it. `total` may overcount (a damaged line
    counted but not parsed): the last buckets then hold fewer points, none is lost.
    """
    if max_points <= 0:
        return np.empty(0, dtype=POINT_DTYPE)
    if total <= max_points:
        parts = list(chunks)
        points = join(parts) if parts else np.empty(0, dtype=POINT_DTYPE)
        return decimate(points, max_points)
    buckets = max(1, max_points // 2)
    candidates: list[Points] = []
    candidate_keys: list[Int64Array] = []
    offset = 0
    for chunk in chunks:
        n = chunk.shape[0]
        if n == 0:
            continue
        keys = ((offset + np.arange(n, dtype=np.int64)) * buckets) // total
        picked = minmax_indices(chunk["a"], keys)
        candidates.append(pick(chunk, picked))
        candidate_keys.append(keys[picked])
        offset += n
    if not candidates:
        return np.empty(0, dtype=POINT_DTYPE)
    points = join(candidates)
    idx = minmax_indices(points["a"], np.concatenate(candidate_keys))
    return pick(points, idx[:max_points])


class MinMaxLevel:
    """Min/max points per `bucket_ns` of sample time; the newest bucket stays open until passed."""

    def __init__(self, bucket_ns: int, capacity: int) -> None:
        self.bucket_ns = bucket_ns
        self.ring = PointRing(capacity)
        self._pending = np.empty(0, dtype=POINT_DTYPE)

    def ingest(self, points: Points) -> Points:
        """Add points; returns (and keeps) the points of every bucket that is now complete."""
        if points.shape[0] == 0:
            return points
        merged = join((self._pending, points)) if self._pending.size else points
        keys = merged["t"] // self.bucket_ns
        open_start = int(np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))[-1])
        self._pending = merged[open_start:].copy()
        done = merged[:open_start]
        if done.shape[0] == 0:
            return done
        out = pick(done, minmax_indices(done["a"], keys[:open_start]))
        self.ring.extend(out)
        return out

    def flush(self) -> Points:
        """Close the open bucket (used when summarising a finished file)."""
        pending, self._pending = self._pending, np.empty(0, dtype=POINT_DTYPE)
        if pending.shape[0] == 0:
            return pending
        keys = pending["t"] // self.bucket_ns
        out = pick(pending, minmax_indices(pending["a"], keys))
        self.ring.extend(out)
        return out


def summarize_100ms(points: Points) -> Points:
    """The 100 ms level of a finished run of samples (e.g. one segment file)."""
    level = MinMaxLevel(NS_PER_S // 10, max(1, points.shape[0]))
    return join((level.ingest(points), level.flush()))


@dataclass(frozen=True, slots=True)
class SummarySizes:
    raw_points: int
    points_100ms: int
    points_1s: int
    points_10s: int = 0


# How far back each level reaches. A ring sized to the whole retention window made memory grow
# with it: 69 MB of 100 ms points alone at max_files = 1440 (24 h; issue 20). Older data is
# answered from a coarser level instead: a 24 h question at 3000 points reads ≤ 17,300 points
# of the 10 s level. Each level still covers a whole segment, for the sidecar (store.py).
SPAN_100MS_SECONDS = 2 * 3600.0
SPAN_1S_SECONDS = 12 * 3600.0
MARGIN_SECONDS = 120.0


class Summaries:
    """Raw tail + 100 ms (last 2 h) + 1 s (last 12 h) + 10 s (whole retention window) levels."""

    def __init__(
        self, window_seconds: float, raw_seconds: float, segment_seconds: float = 60.0
    ) -> None:
        def capacity(bucket_s: float, span_s: float) -> int:
            span = min(window_seconds, max(span_s, 2 * segment_seconds)) + MARGIN_SECONDS
            return int(span / bucket_s * 2)  # a min and a max per bucket

        self.raw = PointRing(int((max(raw_seconds, 2.0)) * OUTPUT_RATE_HZ) + 1024)
        self.level_100ms = MinMaxLevel(NS_PER_S // 10, capacity(0.1, SPAN_100MS_SECONDS))
        self.level_1s = MinMaxLevel(NS_PER_S, capacity(1.0, SPAN_1S_SECONDS))
        self.level_10s = MinMaxLevel(10 * NS_PER_S, capacity(10.0, window_seconds))
        self.newest_t_ns: int | None = None

    @property
    def _levels(self) -> tuple[MinMaxLevel, ...]:
        return (self.level_100ms, self.level_1s, self.level_10s)

    def ingest(self, t_ns: Int64Array, xyz: Float64Array) -> None:
        if t_ns.shape[0] == 0:
            return
        points = make_points(t_ns, xyz)
        self.raw.extend(points)
        self.level_10s.ingest(self.level_1s.ingest(self.level_100ms.ingest(points)))
        self._note_newest(int(t_ns[-1]))

    def load_100ms(self, points: Points) -> None:
        """Restore history from a segment's stored 100 ms points (start-up)."""
        if points.shape[0] == 0:
            return
        self.level_100ms.ring.extend(points)
        self.level_10s.ingest(self.level_1s.ingest(points))
        self._note_newest(int(points["t"][-1]))

    def _note_newest(self, t_ns: int) -> None:
        if self.newest_t_ns is None or t_ns > self.newest_t_ns:
            self.newest_t_ns = t_ns

    def sizes(self) -> SummarySizes:
        return SummarySizes(
            len(self.raw),
            len(self.level_100ms.ring),
            len(self.level_1s.ring),
            len(self.level_10s.ring),
        )

    def recent(self, seconds: float, max_points: int) -> Points:
        """The last `seconds` of sample time, min/max-decimated to `max_points`, in time order.

        From the finest level that reaches back far enough within a budget of points; the
        still-open buckets of that level come from the next finer levels and the raw tail.
        """
        return decimate(self.select(seconds, max_points), max_points)

    def select(self, seconds: float, max_points: int) -> Points:
        """recent() before its decimation: a copy, in time order, that the rings' writer may
        not touch. The store takes only this under its lock (the writer and get_status wait
        for it) and decimates after."""
        if self.newest_t_ns is None or seconds <= 0 or max_points <= 0:
            return np.empty(0, dtype=POINT_DTYPE)
        # no ring holds more than this; 1e308 s would overflow the ns arithmetic (fuzz-found)
        seconds = min(seconds, MAX_RECENT_SECONDS)
        since = self.newest_t_ns - int(seconds * NS_PER_S)
        budget = max(20 * max_points, 50_000)
        rings = (self.raw, *(level.ring for level in self._levels))
        estimates = (
            seconds * OUTPUT_RATE_HZ,
            *(seconds * 2 * NS_PER_S / level.bucket_ns for level in self._levels),
        )
        choice = len(rings) - 1
        for i, (ring, estimate) in enumerate(zip(rings, estimates, strict=True)):
            if estimate <= budget and ring.covers(since):
                choice = i
                break
        parts = [rings[choice].newer_than(since)]
        cut = since
        for finer in range(choice, 0, -1):
            # everything after the chosen level's last closed bucket, from the finer rings
            level = self._levels[finer - 1]
            last = rings[finer].last_t()
            if last is not None:
                cut = max(cut, (last // level.bucket_ns + 1) * level.bucket_ns - 1)
            parts.append(rings[finer - 1].tail_newer_than(cut))
        points = join(parts)
        t = points["t"]
        if np.any(t[1:] < t[:-1]):  # only after a wall-clock step backwards
            points = pick(points, np.argsort(t, kind="stable"))
        return points


def points_to_rows(points: Points) -> list[dict[str, object]]:
    """Reply rows {timestamp, acceleration, x, y, z} with ISO 8601 Z timestamps."""
    stamps = iso_array(points["t"])
    # six decimals, as in the CSV files
    xyz = np.round(points["xyz"], 6).tolist()
    accel = np.round(points["a"], 6).tolist()
    return [
        {"timestamp": f"{stamp}Z", "acceleration": a, "x": v[0], "y": v[1], "z": v[2]}
        for stamp, a, v in zip(stamps.tolist(), accel, xyz, strict=True)
    ]
