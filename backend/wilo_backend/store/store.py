"""The store: samples in, dated CSV segments + exact aggregate + summaries out (ReadingsView)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import zoneinfo
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wilo_backend.config import StorageConfig
from wilo_backend.durable import pwrite_all, remove_empty_parents
from wilo_backend.model import (
    OUTPUT_RATE_HZ,
    ExportResult,
    PathRejectedError,
    SampleBatch,
    StorageStatus,
)
from wilo_backend.store import export as export_mod
from wilo_backend.store import recovery, retention
from wilo_backend.store.aggregate import Aggregate, block_bytes
from wilo_backend.store.csvformat import HEADER, format_rows, pad_rows, padding_for
from wilo_backend.store.evictor import RETRY_SECONDS, TRIM_ERROR, Evictor
from wilo_backend.store.health import StorageHealth
from wilo_backend.store.layout import (
    AGGREGATE_NAME,
    EXPORTS_DIR,
    MAX_SUFFIX,
    READINGS_DIR,
    SUMMARIES_DIR,
    check_relative,
    resolve_segment,
    segment_name,
)
from wilo_backend.store.reader import SegmentReader, folder_tree
from wilo_backend.store.segments import NS_PER_S, OpenRun, Segment, SegmentIndex, split_points
from wilo_backend.store.sidecars import SummarySidecars
from wilo_backend.store.summary import Summaries, points_to_rows
from wilo_backend.timestamps import iso_z

log = logging.getLogger(__name__)

# While the disk refuses writes, keep at most this much unwritten data, then drop the oldest.
PENDING_LIMIT_SECONDS = 120.0


class Store:
    """Thread-safe; `append`/`tick` from the pump thread, the view calls from anywhere."""

    def __init__(
        self,
        config: StorageConfig,
        *,
        on_new_file: Callable[[str, int], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        free_bytes: Callable[[Path], int] = retention.free_bytes_of,
    ) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.readings_dir = self.data_dir / READINGS_DIR
        self.exports_dir = self.data_dir / EXPORTS_DIR
        self.summaries_dir = self.data_dir / SUMMARIES_DIR
        # told (relative, total) of each new segment, outside the lock; may be set after start
        self.on_new_file = on_new_file
        self._monotonic = monotonic
        self._free_bytes = free_bytes
        self._tz = zoneinfo.ZoneInfo(config.timezone)
        self._segment_ns = config.segment_seconds * NS_PER_S
        self._lock = threading.RLock()
        self._reader = SegmentReader()
        self._index = SegmentIndex()  # retained, oldest first (recording order)
        self._runs: list[OpenRun] = []  # unwritten data, oldest first; last one may be open
        self._open_fds: dict[str, int] = {}
        self._aggregate = Aggregate(self.readings_dir / AGGREGATE_NAME, HEADER, fsync=config.fsync)
        window_s = config.max_files * config.segment_seconds
        self.summaries = Summaries(window_s, config.raw_memory_seconds, config.segment_seconds)
        self._block = 4096
        self._last_flush = monotonic()
        self._health = StorageHealth()
        self._sidecars = SummarySidecars(self.summaries_dir)
        self._evictor = Evictor(
            config,
            self._index,
            self._aggregate,
            self._sidecars,
            self.readings_dir,
            self._lock,
            self._health,
            monotonic=monotonic,
            free_bytes=free_bytes,
        )
        self.rows_written = 0
        self.rows_dropped = 0
        self.clock_steps = 0
        self.write_errors = 0
        self.bytes_written = 0
        self.committed_t_ns = 0  # newest sample time known to be on disk (segment + aggregate)
        self._pending_limit_rows = int(
            max(PENDING_LIMIT_SECONDS, 2 * config.flush_seconds) * OUTPUT_RATE_HZ
        )
        self._notify_queue: list[str] = []
        self._needs_reconcile = False

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Create folders and recover what a previous run (or crash) left."""
        with self._lock:
            for folder in (self.readings_dir, self.exports_dir, self.summaries_dir):
                folder.mkdir(parents=True, exist_ok=True)
            self._block = self._evictor.block = block_bytes(self.readings_dir)
            (self.readings_dir / (AGGREGATE_NAME + ".tmp")).unlink(missing_ok=True)
            self._recover_segments()
            self._aggregate.open()
            self._reconcile()
            for points in self._sidecars.load(self._index.segments):
                self.summaries.load_100ms(points)
            self._evictor.enabled = True
            self._evictor.enforce(self._in_use())
            export_mod.prune_exports(self.exports_dir, self.config)
            self._last_flush = self._monotonic()
            log.info(
                "store: %d segment(s) retained in %s, aggregate %d bytes",
                len(self._index),
                self.readings_dir,
                self._aggregate.size,
            )

    def _reconcile(self) -> None:
        """Check and repair the aggregate against the segments (start-up, or after a failure)."""
        extents = [recovery.SegmentExtent(s.path, s.data_bytes) for s in self._index.segments]
        try:
            dropped = recovery.reconcile_aggregate(self._aggregate, extents)
        except OSError as exc:
            self._needs_reconcile = True
            self._degrade(f"cannot repair the aggregate: {exc}")
            return
        self._needs_reconcile = False
        for _ in range(dropped):
            self._evictor.delete_files(self._index.pop_oldest())

    def _recover_segments(self) -> None:
        found: list[Segment] = []
        for rel in recovery.scan_segment_files(self.readings_dir):
            path = self.readings_dir / rel
            size = path.stat().st_size
            if size < len(HEADER) or not recovery.header_ok(path):
                if size <= len(HEADER):
                    # a segment created but never written: nothing of it is in the aggregate
                    path.unlink(missing_ok=True)
                    remove_empty_parents(path, self.readings_dir)
                else:
                    log.error("segment %s has no CSV header; left alone, not retained", rel)
                continue
            size = recovery.repair_tail(path, size)
            if size <= len(HEADER):
                path.unlink(missing_ok=True)
                remove_empty_parents(path, self.readings_dir)
                continue
            try:
                size = recovery.pad_tail(path, size, self._block)
            except OSError as exc:  # a full disk: it stays unaligned (trimmed by a rewrite)
                log.error("segment %s: cannot pad its last rows: %s", rel, exc)
            first = recovery.first_timestamp_ns(path)
            if first is None:
                log.error("segment %s: first row has no valid timestamp; not retained", rel)
                continue
            found.append(Segment(rel, path, first, size, path.stat().st_mtime_ns))
        found.sort(key=lambda s: (s.first_t_ns, s.relative))
        self._index.reset(found)

    def close_segment(self) -> None:
        """Flush and close the open segment; the next append starts a new one."""
        with self._lock:
            if self._runs:
                self._runs[-1].final = True
            self._flush()
        self._notify()

    def close(self) -> None:
        """Final flush (SIGTERM); the aggregate is consistent afterwards."""
        self.close_segment()
        self.wait_idle()
        self._evictor.stop()
        with self._lock:
            for fd in self._open_fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._open_fds.clear()
            self._aggregate.close()
            self._evictor.enabled = False

    # ---------------------------------------------------------------- writing

    def append(self, batch: SampleBatch) -> None:
        """Buffer a batch; starts segments as needed and flushes when due."""
        n = len(batch)
        if n == 0:
            self.tick()
            return
        with self._lock:
            t_ns = np.asarray(batch.t_ns, dtype=np.int64)
            xyz = np.asarray(batch.xyz, dtype=np.float64).reshape(n, 3)
            self.summaries.ingest(t_ns, xyz)
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
        self._notify()

    def tick(self) -> None:
        """Flush if due, even without new samples."""
        with self._lock:
            if self._flush_due():
                self._flush()
        self._notify()

    def _flush_due(self) -> bool:
        # while the disk fails, retry less often: each attempt formats the whole backlog
        interval = self.config.flush_seconds
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
                and not (self.readings_dir / relative).exists()
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

    def _queue_notify(self, relative: str) -> None:
        self._notify_queue.append(relative)

    def _notify(self) -> None:
        """Run new-file callbacks outside the lock (the server may call back into the store)."""
        with self._lock:
            queue, self._notify_queue = self._notify_queue, []
            total = len(self._index)
        if self.on_new_file is None:
            return
        for relative in queue:
            try:
                self.on_new_file(relative, total)
            except Exception:
                log.exception("new-file callback failed for %s", relative)

    def _create_file(self, run: OpenRun) -> bool:
        """Create the run's segment file with its header; False (degraded) if the disk refuses."""
        if run.segment is not None:
            return True
        path = self.readings_dir / run.relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._degrade(f"cannot create {run.relative}: {exc}")
            return False
        try:
            pwrite_all(fd, HEADER, 0)
            if self.config.fsync:
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
            summary_total=self.summaries.level_100ms.ring.total,
        )
        run.segment = seg
        self._open_fds[run.relative] = fd
        self._index.add(seg)
        self._queue_notify(seg.relative)
        self._evictor.enforce(self._in_use())
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
        if self._needs_reconcile:
            self._reconcile()
            if self._needs_reconcile:
                return
        health = self._health
        if health.error and not health.error.startswith(TRIM_ERROR):
            log.warning("storage: writing again after: %s", health.error)
            health.error = ""
        if self._evictor.evicting and self._evictor.rebuild_due():
            self._evictor.wake()
        self._evictor.enforce(self._in_use())

    def _write_run(self, run: OpenRun) -> None:
        seg = run.segment
        assert seg is not None
        # an open segment keeps its newest row back so its final write always has a row to pad
        t, xyz = run.take(0 if run.final else 1)
        chunk = format_rows(t, xyz)
        if run.final:
            pad = padding_for(seg.data_bytes + len(chunk), self._block)
            if pad and chunk:
                chunk = pad_rows(chunk, pad)
        if chunk:
            fd = self._open_fds[seg.relative]
            try:
                pwrite_all(fd, chunk, seg.size)
                if self.config.fsync:
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
        ring = self.summaries.level_100ms.ring
        points = ring.slice_total(seg.summary_total, ring.total)
        points = points[(points["t"] >= seg.first_t_ns) & (points["t"] <= run.last_t_ns)]
        self._sidecars.write(seg.relative, points)

    def _degrade(self, message: str) -> None:
        self._health.degrade(message)

    # ---------------------------------------------------------------- retention (evictor.py)

    def _in_use(self) -> set[str]:
        return {r.relative for r in self._runs}

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the background worker has nothing left it can do now (tests, shutdown)."""
        return self._evictor.wait_idle(timeout)

    @property
    def evictions(self) -> int:
        return self._evictor.evictions

    @property
    def eviction_seconds(self) -> deque[float]:
        """Time each eviction took on the writer's path."""
        return self._evictor.eviction_seconds

    @property
    def rebuild_seconds(self) -> deque[float]:
        """Time each background rewrite of the aggregate took."""
        return self._evictor.rebuild_seconds

    # ---------------------------------------------------------------- ReadingsView

    def file_list(self) -> list[str]:
        with self._lock:
            return [s.relative for s in reversed(self._index.segments)]

    def folder_structure(self) -> dict[str, Any]:
        with self._lock:
            entries = [(s.relative, s.size, s.mtime_ns) for s in self._index.segments]
        return folder_tree(entries)

    def resolve(self, relative: str) -> Path:
        check_relative(relative)
        with self._lock:
            if relative not in self._index.by_relative:
                raise PathRejectedError(f"file {relative!r} is not a retained segment")
        return resolve_segment(self.readings_dir, relative)

    def read_csv(self, relative: str, max_points: int) -> list[dict[str, Any]]:
        path = self.resolve(relative)
        with self._lock:
            seg = self._index.by_relative.get(relative)
            committed = seg.size if seg else 0
        return self._reader.read(path, relative, committed, max_points)

    def recent(self, seconds: float, max_points: int) -> list[dict[str, Any]]:
        with self._lock:
            points = self.summaries.recent(seconds, max_points)
        return points_to_rows(points)

    def export_zip(self) -> ExportResult:
        with self._lock:
            retained = [(s.relative, s.path, s.size) for s in self._index.segments]
        return export_mod.write_export(self.data_dir, self.config, retained)

    def export_path(self, filename: str) -> Path:
        return export_mod.resolve_export(self.exports_dir, filename)

    def status(self) -> StorageStatus:
        with self._lock:
            segments = self._index.segments
            try:
                free = self._free_bytes(self.readings_dir)
            except OSError:
                free = 0
            return StorageStatus(
                healthy=not self._health.error,
                error=self._health.error,
                file_count=len(self._index),
                latest_file=segments[-1].relative if segments else None,
                bytes_retained=sum(s.size for s in segments) + self._aggregate.size,
                free_bytes=free,
                rows_written=self.rows_written,
                clock_steps=self.clock_steps,
                rows_dropped=self.rows_dropped,
            )

    # ---------------------------------------------------------------- introspection (tests, bench)

    def segment_sizes(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(s.relative, s.size) for s in self._index.segments]

    @property
    def pending_rows(self) -> int:
        """Rows received but not yet on disk."""
        with self._lock:
            return sum(run.rows for run in self._runs)

    @property
    def block_bytes(self) -> int:
        return self._block

    @property
    def collapse_supported(self) -> bool:
        return self._aggregate.collapse_supported

    @property
    def aggregate_stats(self) -> tuple[int, int]:
        """(collapses, rebuilds) done since open."""
        return self._aggregate.collapses, self._aggregate.rebuilds

    @property
    def aggregate_bytes_written(self) -> tuple[int, int]:
        """(bytes appended, bytes written by rebuilds) since open."""
        return self._aggregate.bytes_appended, self._aggregate.bytes_rebuilt
