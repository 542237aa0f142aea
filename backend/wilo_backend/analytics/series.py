"""Columnar feature series in memory: growable numpy columns per tier, and the decimation of
trend queries over them (one reduceat per bucket, no per-row Python)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from wilo_backend.analytics.features import COLUMNS, N_COLUMNS
from wilo_backend.analytics.zones import zone_name
from wilo_backend.timestamps import iso_array


class Series:
    """Growable columns of (time, windows, worst zone, largest velocity, feature sums).

    Sums (mean × windows) rather than means, so that a trend bucket is one reduceat over the
    rows with no per-query conversion; float32 keeps 30 days of minutes at ~4 MB.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.t_ns = np.empty(capacity, np.int64)
        self.count = np.empty(capacity, np.int32)
        self.zone = np.empty(capacity, np.int8)
        self.vmax = np.empty(capacity, np.float32)
        self.sums = np.empty((capacity, N_COLUMNS), np.float32)
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, t_ns: int, count: int, zone: int, vmax: float, means: Any) -> None:
        if self.end == self.t_ns.shape[0]:
            self._make_room()
        i = self.end
        self.t_ns[i], self.count[i], self.zone[i], self.vmax[i] = t_ns, count, zone, vmax
        self.sums[i] = np.asarray(means) * count
        self.end += 1

    def _make_room(self, force_grow: bool = False) -> None:
        # New arrays rather than in-place moves: a query may still hold views of the old ones.
        live = len(self)
        capacity = self.t_ns.shape[0]
        if force_grow or live * 2 > capacity:
            capacity *= 2
        for name in ("t_ns", "count", "zone", "vmax", "sums"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), old.dtype)
            new[:live] = old[self.start : self.end]
            setattr(self, name, new)
        self.start, self.end = 0, live

    def add(self, t_ns: int, count: int, zone: int, vmax: float, means: Any) -> None:
        """Append, or fold into the last row when it has the same time (a minute rolled up in
        two parts around a restart)."""
        last = self.end - 1
        if self.end > self.start and self.t_ns[last] == t_ns:
            self.sums[last] += np.asarray(means, np.float32) * count
            self.count[last] += count
            self.zone[last] = max(int(self.zone[last]), zone)
            self.vmax[last] = max(float(self.vmax[last]), vmax)
            return
        self.append(t_ns, count, zone, vmax, means)

    def extend(self, t_ns: Any, count: Any, zone: Any, vmax: Any, sums: Any) -> None:
        """Append many rows (sums = mean × count), rows of equal time folded into one."""
        order = np.argsort(t_ns, kind="stable")
        t_ns, count, zone, vmax, sums = (a[order] for a in (t_ns, count, zone, vmax, sums))
        firsts = np.flatnonzero(np.r_[True, t_ns[1:] != t_ns[:-1]])
        t_ns = t_ns[firsts]
        count = np.add.reduceat(count, firsts)
        zone = np.maximum.reduceat(zone, firsts)
        vmax = np.maximum.reduceat(vmax, firsts)
        sums = np.add.reduceat(sums, firsts, axis=0)
        if len(self) and t_ns.shape[0] and self.t_ns[self.end - 1] == t_ns[0]:
            self.add(int(t_ns[0]), int(count[0]), int(zone[0]), float(vmax[0]), sums[0] / count[0])
            t_ns, count, zone, vmax, sums = (a[1:] for a in (t_ns, count, zone, vmax, sums))
        n = t_ns.shape[0]
        while self.end + n > self.t_ns.shape[0]:
            self._make_room(force_grow=True)
        rows = slice(self.end, self.end + n)
        self.t_ns[rows], self.count[rows], self.zone[rows] = t_ns, count, zone
        self.vmax[rows], self.sums[rows] = vmax, sums
        self.end += n

    def drop_before(self, t_ns: int) -> None:
        times = self.t_ns[self.start : self.end]
        self.start += int(np.searchsorted(times, t_ns, side="left"))

    def last_t_ns(self) -> int | None:
        return int(self.t_ns[self.end - 1]) if self.end > self.start else None

    def since(self, t_ns: int) -> tuple[npt.NDArray[Any], ...]:
        """The rows at or after t_ns, in time order: views, valid while the caller holds the
        store's lock (appends only write past `end`; growing makes new arrays)."""
        sl = slice(self.start, self.end)
        cols: list[npt.NDArray[Any]] = [self.t_ns[sl], self.count[sl], self.zone[sl]]
        cols += [self.vmax[sl], self.sums[sl]]
        times = cols[0]
        if times.shape[0] > 1 and bool(np.any(times[1:] < times[:-1])):
            order = np.argsort(times, kind="stable")  # a wall-clock step put rows out of order
            cols = [c[order] for c in cols]
        first = int(np.searchsorted(cols[0], t_ns, side="left"))
        return tuple(c[first:] for c in cols)


def decimate(
    columns: tuple[npt.NDArray[Any], ...], since_ns: int, until_ns: int, max_points: int
) -> list[dict[str, Any]]:
    """At most max_points trend points over [since, until): count-weighted means per time
    bucket, with the largest velocity and the worst zone of each bucket kept."""
    t_ns, count, zone, vmax, sums = columns
    if t_ns.shape[0] > max_points:
        edges = since_ns + (until_ns - since_ns) * np.arange(max_points, dtype=np.int64) // max(
            max_points, 1
        )
        starts = np.searchsorted(t_ns, edges, side="left")
        starts[0] = 0  # a roll-up that began just before `since` belongs to the first bucket
        starts = np.unique(starts)
        starts = starts[starts < t_ns.shape[0]]
        sums = np.add.reduceat(sums, starts, axis=0)
        count = np.add.reduceat(count, starts)
        vmax = np.maximum.reduceat(vmax, starts)
        zone = np.maximum.reduceat(zone, starts)
        t_ns = t_ns[starts]
    means = sums / count[:, None].astype(np.float32)
    values = np.round(means.astype(np.float64), 4).tolist()
    vmax_list = np.round(vmax.astype(np.float64), 4).tolist()
    stamps = iso_array(t_ns).tolist()
    zones = [zone_name(z) for z in zone.tolist()]
    counts = count.tolist()
    points = []
    for i, row in enumerate(values):
        point: dict[str, Any] = dict(zip(COLUMNS, row, strict=True))
        point["timestamp"] = f"{stamps[i]}Z"
        point["windows"] = counts[i]
        point["zone"] = zones[i]
        point["vrms_mms_max"] = vmax_list[i]
        points.append(point)
    return points
