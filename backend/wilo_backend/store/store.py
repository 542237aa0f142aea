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
from wilo_backend.model import (
    OUTPUT_RATE_HZ,
    ExportResult,
    PathRejectedError,
    SampleBatch,
    StorageStatus,
)
from wilo_backend.store import export as export_mod
from wilo_backend.store import recovery, retention
from wilo_backend.store.aggregate import Aggregate, block_bytes, pwrite_all
from wilo_backend.store.csvformat import (
    HEADER,
    format_rows,
    iter_row_blocks,
    pad_rows,
    padding_for,
    parse_rows_lenient,
)
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
from wilo_backend.store.segments import NS_PER_S, OpenRun, Segment, split_points
from wilo_backend.store.summary import (
    POINT_DTYPE,
    Points,
    Summaries,
    decimate_chunks,
    make_points,
    points_to_rows,
    summarize_100ms,
)
from wilo_backend.timestamps import iso_z

log = logging.getLogger(__name__)

# While the disk refuses writes, keep at most this much unwritten data, then drop the oldest.
PENDING_LIMIT_SECONDS = 120.0
_TRIM_ERROR = "cannot trim the aggregate"
RETRY_SECONDS = 5.0


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
        self._on_new_file = on_new_file
        self._monotonic = monotonic
        self._free_bytes = free_bytes
        self._tz = zoneinfo.ZoneInfo(config.timezone)
        self._segment_ns = config.segment_seconds * NS_PER_S
        self._lock = threading.RLock()
        # One segment parse at a time: each holds ~12 MB of temporaries for a 60 s segment, and
        # several dashboards clicking at once would otherwise stack them (RSS ≤ 100 MB, SPEC §8).
        self._csv_read_slot = threading.Lock()
        self._segments: list[Segment] = []  # retained, oldest first (recording order)
        self._by_relative: dict[str, Segment] = {}
        self._runs: list[OpenRun] = []  # unwritten data, oldest first; last one may be open
        self._open_fds: dict[str, int] = {}
        self._aggregate = Aggregate(self.readings_dir / AGGREGATE_NAME, HEADER, fsync=config.fsync)
        window_s = config.max_files * config.segment_seconds
        self.summaries = Summaries(window_s, config.raw_memory_seconds, config.segment_seconds)
        self._block = 4096
        self._last_flush = monotonic()
        self._error = ""
        self._opened = False
        self.rows_written = 0
        self.rows_dropped = 0
        self.clock_steps = 0
        self.evictions = 0
        self.eviction_seconds: deque[float] = deque(maxlen=1024)  # time on the writer's path
        self.rebuild_seconds: deque[float] = deque(maxlen=1024)  # background rewrites
        self._evicting: list[Segment] = []  # out of the index, still at the aggregate's head
        self._to_delete: list[Segment] = []  # out of the index and the aggregate, file remains
        self._worker: threading.Thread | None = None
        self._worker_busy = False
        self._stopping = False
        self._rebuild_failed_at = -1e18
        self._wake = threading.Condition(self._lock)
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
            self._block = block_bytes(self.readings_dir)
            (self.readings_dir / (AGGREGATE_NAME + ".tmp")).unlink(missing_ok=True)
            self._recover_segments()
            self._aggregate.open()
            self._by_relative = {s.relative: s for s in self._segments}
            self._reconcile()
            self._load_summaries()
            self._opened = True
            self._enforce_retention(extra=0)
            export_mod.prune_exports(self.exports_dir, self.config)
            self._last_flush = self._monotonic()
            log.info(
                "store: %d segment(s) retained in %s, aggregate %d bytes",
                len(self._segments),
                self.readings_dir,
                self._aggregate.size,
            )

    def _reconcile(self) -> None:
        """Check and repair the aggregate against the segments (start-up, or after a failure)."""
        extents = [recovery.SegmentExtent(s.path, s.data_bytes) for s in self._segments]
        try:
            dropped = recovery.reconcile_aggregate(self._aggregate, extents)
        except OSError as exc:
            self._needs_reconcile = True
            self._degrade(f"cannot repair the aggregate: {exc}")
            return
        self._needs_reconcile = False
        for seg in self._segments[:dropped]:
            self._delete_segment_files(seg)
            self._by_relative.pop(seg.relative, None)
        del self._segments[:dropped]

    def _recover_segments(self) -> None:
        found: list[Segment] = []
        for rel in recovery.scan_segment_files(self.readings_dir):
            path = self.readings_dir / rel
            size = path.stat().st_size
            if size < len(HEADER) or not recovery.header_ok(path):
                if size <= len(HEADER):
                    # a segment created but never written: nothing of it is in the aggregate
                    path.unlink(missing_ok=True)
                    retention.remove_empty_parents(path, self.readings_dir)
                else:
                    log.error("segment %s has no CSV header; left alone, not retained", rel)
                continue
            size = recovery.repair_tail(path, size)
            if size <= len(HEADER):
                path.unlink(missing_ok=True)
                retention.remove_empty_parents(path, self.readings_dir)
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
        self._segments = found

    def _sidecar(self, relative: str) -> Path:
        return self.summaries_dir / (relative.replace("/", "_") + ".npy")

    def _load_summaries(self) -> None:
        for seg in self._segments:
            sidecar = self._sidecar(seg.relative)
            points: Points | None = None
            try:
                loaded = np.load(sidecar, allow_pickle=False)
                if loaded.dtype == POINT_DTYPE:
                    points = loaded
            except (OSError, ValueError, EOFError):
                points = None  # missing or torn: rebuilt from the CSV below
            if points is None:
                points = self._summarize_file(seg)
                self._write_sidecar(seg.relative, points)
            self.summaries.load_100ms(points)
        for stray in [*self.summaries_dir.glob("*.npy"), *self.summaries_dir.glob("*.tmp")]:
            rel = stray.name[: -len(".npy")]
            if not any(self._sidecar(s.relative).name == stray.name for s in self._segments):
                log.debug("removing stale summary %s", rel)
                stray.unlink(missing_ok=True)

    def _summarize_file(self, seg: Segment) -> Points:
        try:
            data = seg.path.read_bytes()[len(HEADER) : seg.size]
        except OSError as exc:
            log.error("segment %s unreadable (%s); its history is not shown", seg.relative, exc)
            return np.empty(0, dtype=POINT_DTYPE)
        t, xyz, accel = parse_rows_lenient(data)
        return summarize_100ms(make_points(t, xyz, accel))

    def _write_sidecar(self, relative: str, points: Points) -> None:
        target = self._sidecar(relative)
        tmp = target.with_name(target.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                np.save(f, points, allow_pickle=False)
            tmp.replace(target)
        except OSError as exc:
            log.warning(
                "summary for %s not saved (%s); it is rebuilt from CSV at start-up", relative, exc
            )

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
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(timeout=30)
        with self._lock:
            for fd in self._open_fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._open_fds.clear()
            self._aggregate.close()
            self._opened = False

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
            if (rotated and not self._error) or self._flush_due():
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
        if self._error:
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
                relative not in self._by_relative
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
            total = len(self._segments)
        if self._on_new_file is None:
            return
        for relative in queue:
            try:
                self._on_new_file(relative, total)
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
        self._segments.append(seg)
        self._by_relative[seg.relative] = seg
        self._queue_notify(seg.relative)
        self._enforce_retention(extra=0)
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
        if self._error and not self._error.startswith(_TRIM_ERROR):
            log.warning("storage: writing again after: %s", self._error)
            self._error = ""
        if self._evicting and self._rebuild_due():
            self._start_background()
        self._enforce_retention(extra=0)

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
        self._write_sidecar(seg.relative, points)

    def _degrade(self, message: str) -> None:
        if message != self._error:
            log.error("storage degraded: %s; samples are kept in memory and retried", message)
        self._error = message

    # ---------------------------------------------------------------- retention

    def _in_use(self) -> set[str]:
        return {r.relative for r in self._runs}

    def _enforce_retention(self, extra: int) -> None:
        if not self._opened:
            return
        in_use = self._in_use()
        while retention.excess_files(len(self._segments) + extra, self.config.max_files):
            if not self._evict_oldest(in_use, defer_delete=True):
                return
        # (a background trim frees its space only when done: wait for it before evicting more)
        while not self._evicting and retention.below_floor(
            self._free_bytes(self.readings_dir), self.config.min_free_mb
        ):
            if not self._evict_oldest(in_use, defer_delete=False):
                return

    def _evict_oldest(self, in_use: set[str], *, defer_delete: bool) -> bool:
        """Drop the oldest retained segment from the aggregate, then from disk.

        O(1) by COLLAPSE_RANGE where possible, the file then deleted by the background thread
        (or at once when space is short); otherwise the segment leaves the index now and the
        background thread rewrites the aggregate without it, deleting its file afterwards.
        Start-up finishes either if the process dies in between.
        """
        if not self._segments or self._segments[0].relative in in_use:
            return False
        seg = self._segments[0]
        started = time.perf_counter()
        if (
            not self._evicting
            and self._aggregate.can_collapse(seg.data_bytes, self._block)
            and self._collapse(seg)
        ):
            self._segments.pop(0)
            self._by_relative.pop(seg.relative, None)
            if defer_delete:
                self._to_delete.append(seg)
                self._start_background()
            else:
                self._delete_segment_files(seg)
            self.evictions += 1
            self.eviction_seconds.append(time.perf_counter() - started)
            return True
        if self._error.startswith(_TRIM_ERROR) and not self._rebuild_due():
            return False
        self._segments.pop(0)
        self._by_relative.pop(seg.relative, None)
        self._evicting.append(seg)
        self._start_background()
        self.eviction_seconds.append(time.perf_counter() - started)
        return True

    def _collapse(self, seg: Segment) -> bool:
        try:
            return self._aggregate.collapse_head(seg.data_bytes)
        except OSError as exc:
            self._degrade(f"{_TRIM_ERROR}: {exc}")
            return False

    def _rebuild_due(self) -> bool:
        return self._monotonic() - self._rebuild_failed_at >= RETRY_SECONDS

    def _start_background(self) -> None:
        """Wake the background worker (started on first use, then kept: no thread per eviction)."""
        if self._worker is None and self._opened:
            self._worker = threading.Thread(
                target=self._background_worker, name="wilo-store-background", daemon=True
            )
            self._worker.start()
        self._wake.notify_all()

    def _has_background_work(self) -> bool:
        return bool(self._to_delete) or (bool(self._evicting) and self._rebuild_due())

    def _background_worker(self) -> None:
        """Delete evicted files; where the aggregate cannot collapse, trim evicted segments off
        it by a streaming copy. All off the writer's path."""
        with self._lock:
            while True:
                self._wake.wait_for(lambda: self._has_background_work() or self._stopping)
                if self._stopping:
                    return
                self._worker_busy = True
                try:
                    self._background_step()
                finally:
                    self._worker_busy = False
                    self._wake.notify_all()

    def _background_step(self) -> None:
        """One round of background work; called and returns with the lock held."""
        doomed, self._to_delete = self._to_delete, []
        self._lock.release()
        try:
            for seg in doomed:
                self._unlink_segment(seg)
        finally:
            self._lock.acquire()
        for seg in doomed:
            retention.remove_empty_parents(seg.path, self.readings_dir)
        batch = list(self._evicting)
        if not batch or not self._rebuild_due():
            return
        drop_bytes = sum(s.data_bytes for s in batch)
        end = self._aggregate.size
        started = time.perf_counter()
        self._lock.release()
        try:
            job = self._aggregate.trim_copy(drop_bytes, end)
        except OSError as exc:
            self._lock.acquire()
            self._rebuild_failed(exc)
            return
        self._lock.acquire()
        try:
            self._aggregate.trim_finish(job)
        except OSError as exc:
            self._rebuild_failed(exc)
            return
        for seg in batch:
            self._delete_segment_files(seg)
            self._evicting.remove(seg)
            self.evictions += 1
        self.rebuild_seconds.append(time.perf_counter() - started)
        if self._error.startswith(_TRIM_ERROR):
            self._error = ""

    def _rebuild_failed(self, exc: OSError) -> None:
        self._degrade(f"{_TRIM_ERROR}: {exc}")
        self._rebuild_failed_at = self._monotonic()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the background worker has nothing left it can do now (tests, shutdown)."""
        with self._lock:
            return self._wake.wait_for(
                lambda: not self._worker_busy and not self._has_background_work(), timeout
            )

    def _delete_segment_files(self, seg: Segment) -> None:
        self._unlink_segment(seg)
        retention.remove_empty_parents(seg.path, self.readings_dir)

    def _unlink_segment(self, seg: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        self._sidecar(seg.relative).unlink(missing_ok=True)

    # ---------------------------------------------------------------- ReadingsView

    def file_list(self) -> list[str]:
        with self._lock:
            return [s.relative for s in reversed(self._segments)]

    def folder_structure(self) -> dict[str, Any]:
        with self._lock:
            entries = [(s.relative, s.size, s.mtime_ns) for s in self._segments]
        tree: dict[str, Any] = {}
        for relative, size, mtime_ns in entries:
            year, month, week, day, filename = relative.split("/")
            files = tree.setdefault(year, {}).setdefault(month, {}).setdefault(week, {})
            files.setdefault(day, []).append(
                {
                    "filename": filename,
                    "path": relative,
                    "size": size,
                    # Unix seconds, a number: the dashboard multiplies it by 1000 (SPEC §5)
                    "modified": round(mtime_ns / 1e9, 3),
                }
            )
        return tree

    def resolve(self, relative: str) -> Path:
        check_relative(relative)
        with self._lock:
            if relative not in self._by_relative:
                raise PathRejectedError(f"file {relative!r} is not a retained segment")
        return resolve_segment(self.readings_dir, relative)

    def read_csv(self, relative: str, max_points: int) -> list[dict[str, Any]]:
        path = self.resolve(relative)
        with self._lock:
            seg = self._by_relative.get(relative)
            committed = seg.size if seg else 0
        length = max(0, committed - len(HEADER))
        # One 256 KiB block at a time, counted in a first pass so the decimation buckets are
        # those of the whole file: parsing the whole file at once held 7.2 MiB for a moment per
        # request on a 3.2 MB segment (3.2 MiB now; bench/transients.py), which showed in the
        # soak's RSS peaks.
        with self._csv_read_slot:
            try:
                with path.open("rb") as f:
                    f.seek(len(HEADER))
                    rows = sum(block.count(b"\n") for block in iter_row_blocks(f, length))
                    f.seek(len(HEADER))
                    chunks = (
                        make_points(*parse_rows_lenient(block))
                        for block in iter_row_blocks(f, length)
                    )
                    points = decimate_chunks(chunks, rows, max(1, max_points))
            except FileNotFoundError:
                raise PathRejectedError(f"file {relative!r} was rotated out") from None
        return points_to_rows(points)

    def recent(self, seconds: float, max_points: int) -> list[dict[str, Any]]:
        with self._lock:
            points = self.summaries.recent(seconds, max_points)
        return points_to_rows(points)

    def export_zip(self) -> ExportResult:
        with self._lock:
            retained = [(s.relative, s.path, s.size) for s in self._segments]
        return export_mod.write_export(self.data_dir, self.config, retained)

    def export_path(self, filename: str) -> Path:
        return export_mod.resolve_export(self.exports_dir, filename)

    def status(self) -> StorageStatus:
        with self._lock:
            try:
                free = self._free_bytes(self.readings_dir)
            except OSError:
                free = 0
            return StorageStatus(
                healthy=not self._error,
                error=self._error,
                file_count=len(self._segments),
                latest_file=self._segments[-1].relative if self._segments else None,
                bytes_retained=sum(s.size for s in self._segments) + self._aggregate.size,
                free_bytes=free,
                rows_written=self.rows_written,
                clock_steps=self.clock_steps,
                rows_dropped=self.rows_dropped,
            )

    # ---------------------------------------------------------------- introspection (tests, bench)

    def segment_sizes(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(s.relative, s.size) for s in self._segments]

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
