"""The store: samples in, dated CSV segments + exact aggregate + summaries out (ReadingsView)."""

from __future__ import annotations

import logging
import threading
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wilo_backend.config import StorageConfig
from wilo_backend.durable import remove_empty_parents
from wilo_backend.model import (
    ExportResult,
    PathRejectedError,
    SampleBatch,
    StorageStatus,
)
from wilo_backend.store import export as export_mod
from wilo_backend.store import recovery, retention
from wilo_backend.store.aggregate import Aggregate, block_bytes
from wilo_backend.store.csvformat import HEADER
from wilo_backend.store.evictor import Evictor
from wilo_backend.store.health import StorageHealth
from wilo_backend.store.layout import (
    AGGREGATE_NAME,
    EXPORTS_DIR,
    READINGS_DIR,
    SUMMARIES_DIR,
    check_relative,
    resolve_segment,
)
from wilo_backend.store.reader import SegmentReader, folder_tree
from wilo_backend.store.segments import NS_PER_S, Segment, SegmentIndex
from wilo_backend.store.sidecars import SummarySidecars
from wilo_backend.store.summary import Summaries, decimate, points_to_rows
from wilo_backend.store.writer import SegmentWriter

log = logging.getLogger(__name__)


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
        self._aggregate = Aggregate(self.readings_dir / AGGREGATE_NAME, HEADER, fsync=config.fsync)
        window_s = config.max_files * config.segment_seconds
        self.summaries = Summaries(window_s, config.raw_memory_seconds, config.segment_seconds)
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
        self._writer = SegmentWriter(
            config,
            self.readings_dir,
            self._index,
            self._aggregate,
            self.summaries,
            self._sidecars,
            self._evictor,
            self._health,
            monotonic=monotonic,
            reconcile=self._reconcile,
        )

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Create folders and recover what a previous run (or crash) left."""
        with self._lock:
            for folder in (self.readings_dir, self.exports_dir, self.summaries_dir):
                folder.mkdir(parents=True, exist_ok=True)
            self._writer.block = self._evictor.block = block_bytes(self.readings_dir)
            (self.readings_dir / (AGGREGATE_NAME + ".tmp")).unlink(missing_ok=True)
            self._recover_segments()
            self._aggregate.open()
            self._reconcile()
            for points in self._sidecars.load(self._index.segments):
                self.summaries.load_100ms(points)
            self._evictor.enabled = True
            self._evictor.enforce(self._writer.in_use())
            export_mod.prune_exports(self.exports_dir, self.config)
            self._writer.restart_flush_clock()
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
            self._writer.needs_reconcile = True
            self._degrade(f"cannot repair the aggregate: {exc}")
            return
        self._writer.needs_reconcile = False
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
                size = recovery.pad_tail(path, size, self._writer.block)
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
            self._writer.close_open_run()
        self._notify()

    def close(self) -> None:
        """Final flush (SIGTERM); the aggregate is consistent afterwards."""
        self.close_segment()
        self.wait_idle()
        self._evictor.stop()
        with self._lock:
            self._writer.close_files()
            self._aggregate.close()
            self._evictor.enabled = False

    # ---------------------------------------------------------------- writing

    def append(self, batch: SampleBatch) -> None:
        """Buffer a batch; starts segments as needed and flushes when due."""
        if len(batch) == 0:
            self.tick()
            return
        with self._lock:
            self._writer.append(batch)
        self._notify()

    def tick(self) -> None:
        """Flush if due, even without new samples."""
        with self._lock:
            self._writer.tick()
        self._notify()

    def _notify(self) -> None:
        """Run new-file callbacks outside the lock (the server may call back into the store)."""
        with self._lock:
            queue = self._writer.take_new_files()
            total = len(self._index)
        if self.on_new_file is None:
            return
        for relative in queue:
            try:
                self.on_new_file(relative, total)
            except Exception:
                log.exception("new-file callback failed for %s", relative)

    def _degrade(self, message: str) -> None:
        self._health.degrade(message)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the background worker has nothing left it can do now (shutdown, tests)."""
        return self._evictor.wait_idle(timeout)

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
        # only the copy under the lock: the pump's append and the loop's get_status wait for it
        # (a flood of 100,000-point requests held get_status at 50 ms p50 in the abuse bench)
        with self._lock:
            points = self.summaries.select(seconds, max_points)
        return points_to_rows(decimate(points, max_points))

    def export_zip(self) -> ExportResult:
        with self._lock:
            retained = [(s.relative, s.path, s.size) for s in self._index.segments]
        return export_mod.write_export(self.data_dir, self.config, retained)

    def export_path(self, filename: str) -> Path:
        return export_mod.resolve_export(self.exports_dir, filename)

    def status(self) -> StorageStatus:
        """Health and counters in one snapshot, taken under the lock (status, /metrics)."""
        with self._lock:
            segments = self._index.segments
            try:
                free = self._free_bytes(self.readings_dir)
            except OSError:
                free = 0
            writer, aggregate = self._writer, self._aggregate
            return StorageStatus(
                healthy=not self._health.error,
                error=self._health.error,
                file_count=len(self._index),
                latest_file=segments[-1].relative if segments else None,
                bytes_retained=sum(s.size for s in segments) + aggregate.size,
                free_bytes=free,
                rows_written=writer.rows_written,
                clock_steps=writer.clock_steps,
                rows_dropped=writer.rows_dropped,
                rows_pending=writer.pending_rows,
                committed_t_ns=writer.committed_t_ns,
                write_errors=writer.write_errors,
                evictions=self._evictor.evictions,
                segment_bytes_written=writer.bytes_written,
                aggregate_bytes_appended=aggregate.bytes_appended,
                aggregate_bytes_rebuilt=aggregate.bytes_rebuilt,
                aggregate_collapses=aggregate.collapses,
                aggregate_rebuilds=aggregate.rebuilds,
                eviction_seconds=tuple(self._evictor.eviction_seconds),
                rebuild_seconds=tuple(self._evictor.rebuild_seconds),
            )
