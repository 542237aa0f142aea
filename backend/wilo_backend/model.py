"""Data types that cross layer boundaries: sample batches, sampler counters, the readings view."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

STANDARD_GRAVITY_MS2 = 9.80665
OUTPUT_RATE_HZ = 800.0

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Consecutive output samples (800 Hz) as arrays, never per-sample objects.

    `first_index` numbers samples since the sampler started; a jump between batches is a gap
    that the sampler has counted as lost. `t_ns` is UTC (Unix epoch) nanoseconds, derived from
    the sensor clock; `xyz` is (n, 3) acceleration in m/s².
    """

    first_index: int
    t_ns: Int64Array
    xyz: Float64Array

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])


@dataclass(slots=True)
class SamplerStats:
    """Counters of the acquisition process, as reported in status and /metrics."""

    connected: bool = False
    running: bool = False
    mode: str = ""
    samples: int = 0
    rate_hz: float = 0.0
    lost_overflow: int = 0
    lost_missed_deadlines: int = 0
    lost_handoff: int = 0
    i2c_errors: int = 0
    reconnects: int = 0
    fifo_resets: int = 0
    clock_error_ppm: float = 0.0
    deviation_us_p50: float = 0.0
    deviation_us_p99: float = 0.0
    deviation_us_max: float = 0.0
    # deadline deviation histogram (polled mode): counts per bucket, upper bounds in µs
    deviation_hist_bounds_us: list[float] = field(default_factory=list)
    deviation_hist_counts: list[int] = field(default_factory=list)
    realtime: bool = False
    cpu: int | None = None
    last_error: str = ""
    alive: bool = False

    @property
    def lost(self) -> int:
        return self.lost_overflow + self.lost_missed_deadlines + self.lost_handoff


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """Health and counters of the on-disk store, as reported in status, /healthz and /metrics."""

    healthy: bool
    error: str
    file_count: int
    latest_file: str | None
    bytes_retained: int
    free_bytes: int
    rows_written: int
    clock_steps: int
    # samples dropped while the disk refused writes for longer than the store's backlog holds
    rows_dropped: int = 0
    # received, not yet on disk: the backlog that grows while the disk refuses writes
    rows_pending: int = 0
    # newest sample time known to be on disk (segment and aggregate), 0 before the first write
    committed_t_ns: int = 0
    write_errors: int = 0
    evictions: int = 0
    # bytes written since start (SD-card wear): segment rows, aggregate appends, and the
    # aggregate rewrites of a filesystem without FALLOC_FL_COLLAPSE_RANGE
    segment_bytes_written: int = 0
    aggregate_bytes_appended: int = 0
    aggregate_bytes_rebuilt: int = 0
    # how evictions trimmed the aggregate: in place (collapse) or by a background rewrite
    aggregate_collapses: int = 0
    aggregate_rebuilds: int = 0
    # durations of the latest evictions on the writer's path and of the latest background
    # rewrites, oldest first (at most the last 1024 of each)
    eviction_seconds: tuple[float, ...] = ()
    rebuild_seconds: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class ExportResult:
    """A finished ZIP export on disk."""

    path: Path
    filename: str
    file_count: int


class PathRejectedError(ValueError):
    """A requested file name is not a segment inside the readings hierarchy."""


class ReadingsView(Protocol):
    """What the server may ask of the store. All paths are relative to readings/, '/'-separated."""

    def file_list(self) -> list[str]:
        """Segment paths, newest first, e.g. '2026/11/Week_4/27/152200.csv'."""

    def folder_structure(self) -> dict[str, Any]:
        """{YYYY: {MM: {Week_N: {DD: [{filename, path, size, modified}]}}}}."""

    def resolve(self, relative: str) -> Path:
        """The absolute path of a retained segment; raises PathRejectedError for anything else."""

    def read_csv(self, relative: str, max_points: int) -> list[dict[str, Any]]:
        """Rows {timestamp, acceleration, x, y, z} of one segment, min/max-decimated."""

    def recent(self, seconds: float, max_points: int) -> list[dict[str, Any]]:
        """The last `seconds` from memory, min/max-decimated, in time order."""

    def export_zip(self) -> ExportResult:
        """Build a ZIP of the retained segments on disk (blocking; call from a thread)."""

    def export_path(self, filename: str) -> Path:
        """The absolute path of a finished export; raises PathRejectedError for anything else."""

    def status(self) -> StorageStatus:
        """Current health and counts."""


class ServiceControl(Protocol):
    """What the server may ask of the running service (implemented in service.py)."""

    def start_collection(self) -> None:
        """Store and stream samples again; a new segment starts."""

    def stop_collection(self) -> None:
        """Stop storing and streaming; the open segment is flushed and closed."""

    def pause_collection(self) -> None:
        """Stop storing and streaming but keep the open segment."""

    def resume_collection(self) -> None:
        """Undo pause_collection."""

    def status_data(self) -> dict[str, Any]:
        """The `data` of a status reply: connected, running, paused, sampling_rate,
        total_samples, csv_files, latest_file, plus sampler/storage details."""

    def collection_state(self) -> tuple[bool, bool]:
        """(running, paused) as status_data() says them, without the rest of it."""

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): sampling alive and connected, storage not degraded."""

    def sampler_stats(self) -> SamplerStats:
        """The latest sampler counters."""
