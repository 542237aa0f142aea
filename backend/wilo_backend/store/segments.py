"""Segment records and the pure rotation rule: where each sample of a batch starts a new file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wilo_backend.model import OUTPUT_RATE_HZ, Float64Array, Int64Array
from wilo_backend.store.csvformat import HEADER

NS_PER_S = 1_000_000_000
PERIOD_NS = round(NS_PER_S / OUTPUT_RATE_HZ)
CLOCK_STEP_NS = NS_PER_S  # SPEC §4: a step is the realtime − monotonic offset moving by > 1 s


@dataclass(slots=True)
class Segment:
    """A segment file in the index. `size` is what has been committed (written and synced)."""

    relative: str
    path: Path
    first_t_ns: int
    size: int
    mtime_ns: int
    summary_total: int = 0  # 100 ms points counter when the segment started (for its sidecar)

    @property
    def data_bytes(self) -> int:
        return self.size - len(HEADER)


@dataclass(slots=True)
class SegmentIndex:
    """The retained segments: oldest first (recording order), and by relative path."""

    segments: list[Segment] = field(default_factory=list)
    by_relative: dict[str, Segment] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.segments)

    def reset(self, found: list[Segment]) -> None:
        self.segments = found
        self.by_relative = {s.relative: s for s in found}

    def add(self, seg: Segment) -> None:
        self.segments.append(seg)
        self.by_relative[seg.relative] = seg

    def pop_oldest(self) -> Segment:
        seg = self.segments.pop(0)
        self.by_relative.pop(seg.relative, None)
        return seg


@dataclass(slots=True)
class OpenRun:
    """Samples gathered for one segment that are not yet on disk."""

    relative: str
    first_t_ns: int
    key: int
    last_t_ns: int
    next_index: int
    segment: Segment | None = None
    final: bool = False
    t_parts: list[Int64Array] = field(default_factory=list)
    xyz_parts: list[Float64Array] = field(default_factory=list)
    rows: int = 0
    last_written_t_ns: int = 0

    def add(self, t_ns: Int64Array, xyz: Float64Array) -> None:
        self.t_parts.append(t_ns)
        self.xyz_parts.append(xyz)
        self.rows += int(t_ns.shape[0])

    def take(self, keep_last: int) -> tuple[Int64Array, Float64Array]:
        """Remove and return all rows but the last `keep_last`."""
        t = np.concatenate(self.t_parts) if self.t_parts else np.empty(0, dtype=np.int64)
        xyz = np.concatenate(self.xyz_parts) if self.xyz_parts else np.empty((0, 3))
        cut = max(0, t.shape[0] - keep_last)
        self.t_parts = [t[cut:]] if cut < t.shape[0] else []
        self.xyz_parts = [xyz[cut:]] if cut < t.shape[0] else []
        self.rows = t.shape[0] - cut
        return t[:cut], xyz[:cut]

    def drop_oldest(self, count: int) -> int:
        """Forget up to `count` of the oldest rows (memory bound while the disk fails)."""
        t, xyz = self.take(0)
        count = min(count, t.shape[0])
        if count < t.shape[0]:
            self.add(t[count:], xyz[count:])
        return count


def split_points(
    t_ns: Int64Array,
    first_index: int,
    segment_ns: int,
    previous: tuple[int, int, int] | None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(starts_segment, clock_step) per sample.

    A sample starts a new segment when its wall-time slot (multiples of `segment_ns`) differs
    from the previous sample's, when time runs backwards (never out-of-order rows in a file),
    or on a clock step: the time between samples differs from what their indices say by > 1 s.
    `previous` = (key, last_t_ns, next_index) of the open segment, or None.
    """
    n = t_ns.shape[0]
    keys = t_ns // segment_ns
    idx = first_index + np.arange(n, dtype=np.int64)
    if previous is None:
        prev_key, prev_t, prev_next = int(keys[0]), int(t_ns[0]), first_index
    else:
        prev_key, prev_t, prev_next = previous
    prev_keys = np.concatenate(([prev_key], keys[:-1]))
    prev_ts = np.concatenate(([prev_t], t_ns[:-1]))
    prev_idx = np.concatenate(([prev_next - 1], idx[:-1]))
    dt = t_ns - prev_ts
    expected = (idx - prev_idx) * PERIOD_NS
    step = np.abs(dt - expected) > CLOCK_STEP_NS
    starts = (keys != prev_keys) | (dt < 0) | step
    if previous is None:
        starts[0] = True
        step[0] = False
    return starts, step
