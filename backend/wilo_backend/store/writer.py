"""The rotating segment writer (in the manner of python-can's rotating loggers): where each
sample goes (segments.split_points decides the rollover, layout.segment_name names the file),
buffering while the disk refuses, and the write itself: segment first, then the aggregate, each
synced; a closed segment padded to a block and its summary sidecar saved."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wilo_backend.config import StorageConfig
from wilo_backend.durable import pwrite_all
from wilo_backend.model import OUTPUT_RATE_HZ, SampleBatch
from wilo_backend.store.aggregate import Aggregate
from wilo_backend.store.csvformat import HEADER, format_rows, pad_rows, padding_for
from wilo_backend.store.evictor import RETRY_SECONDS, TRIM_ERROR, Evictor
from wilo_backend.store.health import StorageHealth
from wilo_backend.store.layout import MAX_SUFFIX, segment_name
from wilo_backend.store.segments import NS_PER_S, OpenRun, Segment, SegmentIndex, split_points
from wilo_backend.store.sidecars import SummarySidecars
from wilo_backend.store.summary import Summaries
from wilo_backend.timestamps import iso_z

log = logging.getLogger("wilo_backend.store.store")

# While the disk refuses writes, keep at most this much unwritten data, then drop the oldest.
PENDING_LIMIT_SECONDS = 120.0


class SegmentWriter:
    """Runs of samples not yet on disk and their segment files. Called with the store's lock."""

    def __init__(
        self,
        config: StorageConfig,
        readings_dir: Path,
        index: SegmentIndex,
        aggregate: Aggregate,
        summaries: Summaries,
        sidecars: SummarySidecars,
        evictor: Evictor,
        health: StorageHealth,
        *,
        monotonic: Callable[[], float],
        reconcile: Callable[[], None],
    ) -> None:
        self._config = config
        self._readings_dir = readings_dir
        self._index = index
        self._aggregate = aggregate
        self._summaries = summaries
        self._sidecars = sidecars
        self._evictor = evictor
        self._health = health
        self._monotonic = monotonic
        self._reconcile = reconcile
        self._tz = zoneinfo.ZoneInfo(config.timezone)
        self._segment_ns = config.segment_seconds * NS_PER_S
        self._runs: list[OpenRun] = []  # unwritten data, oldest first; last one may be open
        self._open_fds: dict[str, int] = {}
        self._new_files: list[str] = []
        self.block = 4096
        self._last_flush = monotonic()
        self._pending_limit_rows = int(
            max(PENDING_LIMIT_SECONDS, 2 * config.flush_seconds) * OUTPUT_RATE_HZ
        )
        self.needs_reconcile = False  # set by the store when the aggregate needs a repair
        self.rows_written = 0
        self.rows_dropped = 0
        self.clock_steps = 0
        self.write_errors = 0
        self.bytes_written = 0
        self.committed_t_ns = 0  # newest sample time known to be on disk (segment + aggregate)

    def append(self, batch: SampleBatch) -> None:
        """Buffer a (non-empty) batch; starts segments as needed and flushes when due."""
        n = len(batch)
        t_ns = np.asarray(batch.t_ns, dtype=np.int64)
        xyz = np.asarray(batch.xyz, dtype=np.float64).reshape(n, 3)
        self._summaries.ingest(t_ns, xyz)
        run = self._runs[-1] if self._runs and not self._runs[-1].final else None
        previous = (run.key, run.last_t_ns, run.next_index) if run else None
        starts, steps = split_points(t_ns, batch.first_index, self._segment_ns, previous)
        for i in np.flatnonzero(steps):
            self.clock_steps += 1
            prev_t = int(t_ns[i - 1]) if i else (run.last_t_ns if run else 0)
            log.warning(
                "wall-clock step of %.3f s at %s; starting a new segment (steps so far: %d)",
                (int(t_ns[i]) - prev_t) / NS_PER_S,
                iso_z(int(t_ns[i])),
                self.clock_steps,
            )
        bounds = [*np.flatnonzero(starts).tolist(), n]
        rotated = False
        if bounds[0] != 0:
            assert run is not None
            self._extend_run(run, t_ns[: bounds[0]], xyz[: bounds[0]], batch.first_index)
        for a, b in itertools.pairwise(bounds):
            if run is not None:
                run.final = True
                rotated = True
            run = self._start_run(int(t_ns[a]))
            self._extend_run(run, t_ns[a:b], xyz[a:b], batch.first_index + a)
        self._bound_pending()
        if (rotated and not self._health.error) or self._flush_due():
            self._flush()

    def _flush_due(self) -> bool:
        # while the disk fails, retry less often: each attempt formats the whole backlog
        interval = self._config.flush_seconds
        if self._health.error:
            interval = max(interval, RETRY_SECONDS)
        return self._monotonic() - self._last_flush >= interval

    def _extend_run(self, run: OpenRun, t_ns: Any, xyz: Any, first_index: int) -> None:
        run.add(t_ns.copy(), xyz.copy())
        run.last_t_ns = int(t_ns[-1])
        run.next_index = first_index + int(t_ns.shape[0])

    def _start_run(self, first_t_ns: int) -> OpenRun:
        name = segment_name(first_t_ns, self._tz)
        planned = {r.relative for r in self._runs}
        for suffix in range(MAX_SUFFIX + 1):
            relative = name.relative(suffix)
            if (
                relative not in self._index.by_relative
                and relative not in planned
                and not (self._readings_dir / relative).exists()
            ):
                break
        else:
            raise RuntimeError(f"no free file name for a segment at {name.relative()}")
        run = OpenRun(
            relative=relative,
            first_t_ns=first_t_ns,
            key=first_t_ns // self._segment_ns,
            last_t_ns=first_t_ns,
            next_index=0,
        )
        self._runs.append(run)
        self._create_file(run)
        return run

    def _bound_pending(self) -> None:
        excess = sum(r.rows for r in self._runs) - self._pending_limit_rows
        for run in self._runs:
            if excess <= 0:
                break
            dropped = run.drop_oldest(excess)
            excess -= dropped
            self.rows_dropped += dropped
        # runs that lost all their rows and were never created are forgotten
        self._runs = [
            r for r in self._runs if r.rows or r.segment is not None or r is self._runs[-1]
        ]

    def _create_file(self, run: OpenRun) -> bool:
        """Create the run's segment file with its header; False (degraded) if the disk refuses."""
        if run.segment is not None:
            return True
        path = self._readings_dir / run.relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._degrade(f"cannot create {run.relative}: {exc}")
            return False
        try:
            pwrite_all(fd, HEADER, 0)
            if self._config.fsync:
                os.fdatasync(fd)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            self._degrade(f"cannot write {run.relative}: {exc}")
            return False
        seg = Segment(
            run.relative,
            path,
            run.first_t_ns,
            len(HEADER),
            time.time_ns(),
            summary_total=self._summaries.level_100ms.ring.total,
        )
        run.segment = seg
        self._open_fds[run.relative] = fd
        self._index.add(seg)
        self._new_files.append(seg.relative)
        self._evictor.enforce(self.in_use())
        return True

    def _flush(self) -> None:
        """Write every run's due rows: segment first, then aggregate, each synced."""
        self._last_flush = self._monotonic()
        try:
            for run in list(self._runs):
                if not self._create_file(run):
                    return
                self._write_run(run)
        except OSError as exc:
            self.write_errors += 1
            self._degrade(str(exc))
            return
        if self.needs_reconcile:
            self._reconcile()
            if self.needs_reconcile:
                return
        health = self._health
        if health.error and not health.error.startswith(TRIM_ERROR):
            log.warning("storage: writing again after: %s", health.error)
            health.error = ""
        if self._evictor.evicting and self._evictor.rebuild_due():
            self._evictor.wake()
        self._evictor.enforce(self.in_use())

    def _write_run(self, run: OpenRun) -> None:
        seg = run.segment
        assert seg is not None
        # an open segment keeps its newest row back so its final write always has a row to pad
        t, xyz = run.take(0 if run.final else 1)
        chunk = format_rows(t, xyz)
        if run.final:
            pad = padding_for(seg.data_bytes + len(chunk), self.block)
            if pad and chunk:
                chunk = pad_rows(chunk, pad)
        if chunk:
            fd = self._open_fds[seg.relative]
            try:
                pwrite_all(fd, chunk, seg.size)
                if self._config.fsync:
                    os.fdatasync(fd)
                self._aggregate.append(chunk)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, seg.size)
                run.t_parts.insert(0, t)
                run.xyz_parts.insert(0, xyz)
                run.rows += int(t.shape[0])
                raise
            seg.size += len(chunk)
            seg.mtime_ns = time.time_ns()
            self.rows_written += int(t.shape[0])
            self.bytes_written += len(chunk)
            run.last_written_t_ns = int(t[-1])
            self.committed_t_ns = max(self.committed_t_ns, int(t[-1]))
        if run.final and run.rows == 0:
            os.close(self._open_fds.pop(seg.relative))
            self._runs.remove(run)
            self._finish_sidecar(seg, run)

    def _finish_sidecar(self, seg: Segment, run: OpenRun) -> None:
        ring = self._summaries.level_100ms.ring
        points = ring.slice_total(seg.summary_total, ring.total)
        points = points[(points["t"] >= seg.first_t_ns) & (points["t"] <= run.last_t_ns)]
        self._sidecars.write(seg.relative, points)

    def _degrade(self, message: str) -> None:
        self._health.degrade(message)

    # ---------------------------------------------------------------- the facade's helpers

    def tick(self) -> None:
        """Flush if due, even without new samples (with the lock held)."""
        if self._flush_due():
            self._flush()

    def close_open_run(self) -> None:
        """Mark the open run final and flush: its segment is closed, padded to a block."""
        if self._runs:
            self._runs[-1].final = True
        self._flush()

    def close_files(self) -> None:
        for fd in self._open_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open_fds.clear()

    def restart_flush_clock(self) -> None:
        """The first flush comes flush_seconds after opening, not after construction."""
        self._last_flush = self._monotonic()

    def in_use(self) -> set[str]:
        """Segments still being written: never evicted."""
        return {r.relative for r in self._runs}

    def take_new_files(self) -> list[str]:
        """Segments created since the last call, for the new-file callback."""
        queue, self._new_files = self._new_files, []
        return queue

    @property
    def pending_rows(self) -> int:
        return sum(run.rows for run in self._runs)
