"""Retention and eviction: which segments go, and the background worker that deletes their files
and trims the aggregate where it cannot collapse, off the writer's path.

The worker's rounds run in three steps each: a snapshot under the store's lock, the slow work
(unlinks, the aggregate's streaming copy) with the lock released, the commit under the lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from wilo_backend.config import StorageConfig
from wilo_backend.durable import remove_empty_parents
from wilo_backend.store import retention
from wilo_backend.store.aggregate import Aggregate, TrimJob
from wilo_backend.store.health import StorageHealth
from wilo_backend.store.segments import Segment, SegmentIndex
from wilo_backend.store.sidecars import SummarySidecars

TRIM_ERROR = "cannot trim the aggregate"
RETRY_SECONDS = 5.0


class Evictor:
    """Keeps the index within max_files and the disk above its free-space floor.

    Every method but `wait_idle` and `stop` is called with the store's lock held.
    """

    def __init__(
        self,
        config: StorageConfig,
        index: SegmentIndex,
        aggregate: Aggregate,
        sidecars: SummarySidecars,
        readings_dir: Path,
        lock: threading.RLock,
        health: StorageHealth,
        *,
        monotonic: Callable[[], float],
        free_bytes: Callable[[Path], int],
    ) -> None:
        self._config = config
        self._index = index
        self._aggregate = aggregate
        self._sidecars = sidecars
        self._readings_dir = readings_dir
        self._lock = lock
        self._health = health
        self._monotonic = monotonic
        self._free_bytes = free_bytes
        self.block = 4096
        self.enabled = False  # the store is open: its index is complete
        self.evictions = 0
        self.eviction_seconds: deque[float] = deque(maxlen=1024)  # time on the writer's path
        self.rebuild_seconds: deque[float] = deque(maxlen=1024)  # background rewrites
        self.evicting: list[Segment] = []  # out of the index, still at the aggregate's head
        self._to_delete: list[Segment] = []  # out of the index and the aggregate, file remains
        self._worker: threading.Thread | None = None
        self._worker_busy = False
        self._stopping = False
        self._rebuild_failed_at = -1e18
        self._wake = threading.Condition(lock)

    # --- the writer's side ----------------------------------------------------------------

    def enforce(self, in_use: set[str], extra: int = 0) -> None:
        """Evict the oldest segments (never those in `in_use`) over max_files or the floor."""
        if not self.enabled:
            return
        while retention.excess_files(len(self._index) + extra, self._config.max_files):
            if not self._evict_oldest(in_use, defer_delete=True):
                return
        # (a background trim frees its space only when done: wait for it before evicting more)
        while not self.evicting and retention.below_floor(
            self._free_bytes(self._readings_dir), self._config.min_free_mb
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
        segments = self._index.segments
        if not segments or segments[0].relative in in_use:
            return False
        seg = segments[0]
        started = time.perf_counter()
        if (
            not self.evicting
            and self._aggregate.can_collapse(seg.data_bytes, self.block)
            and self._collapse(seg)
        ):
            self._index.pop_oldest()
            if defer_delete:
                self._to_delete.append(seg)
                self.wake()
            else:
                self.delete_files(seg)
            self.evictions += 1
            self.eviction_seconds.append(time.perf_counter() - started)
            return True
        if self._health.error.startswith(TRIM_ERROR) and not self.rebuild_due():
            return False
        self._index.pop_oldest()
        self.evicting.append(seg)
        self.wake()
        self.eviction_seconds.append(time.perf_counter() - started)
        return True

    def _collapse(self, seg: Segment) -> bool:
        try:
            return self._aggregate.collapse_head(seg.data_bytes)
        except OSError as exc:
            self._health.degrade(f"{TRIM_ERROR}: {exc}")
            return False

    def rebuild_due(self) -> bool:
        return self._monotonic() - self._rebuild_failed_at >= RETRY_SECONDS

    def delete_files(self, seg: Segment) -> None:
        """A segment's file and sidecar, then its folders while empty."""
        self._unlink(seg)
        remove_empty_parents(seg.path, self._readings_dir)

    def _unlink(self, seg: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        self._sidecars.remove(seg.relative)

    # --- the worker -----------------------------------------------------------------------

    def wake(self) -> None:
        """Wake the background worker (started on first use, then kept: no thread per eviction)."""
        if self._worker is None and self.enabled:
            self._worker = threading.Thread(
                target=self._run, name="wilo-store-background", daemon=True
            )
            self._worker.start()
        self._wake.notify_all()

    def _has_work(self) -> bool:
        return bool(self._to_delete) or (bool(self.evicting) and self.rebuild_due())

    def _run(self) -> None:
        with self._lock:
            while True:
                self._wake.wait_for(lambda: self._has_work() or self._stopping)
                if self._stopping:
                    return
                self._worker_busy = True
                try:
                    self._delete_round()
                    self._trim_round()
                finally:
                    self._worker_busy = False
                    self._wake.notify_all()

    @contextlib.contextmanager
    def _unlocked(self) -> Iterator[None]:
        """The slow part of a round, with the writer free to go on."""
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()

    def _delete_round(self) -> None:
        """Files of segments already out of the aggregate."""
        doomed, self._to_delete = self._to_delete, []
        with self._unlocked():
            for seg in doomed:
                self._unlink(seg)
        for seg in doomed:
            remove_empty_parents(seg.path, self._readings_dir)

    def _trim_round(self) -> None:
        """The aggregate without the evicted segments at its head, by a streaming copy."""
        batch = list(self.evicting)
        if not batch or not self.rebuild_due():
            return
        drop_bytes = sum(s.data_bytes for s in batch)
        end = self._aggregate.size
        started = time.perf_counter()
        job: TrimJob | None = None
        failure: OSError | None = None
        with self._unlocked():
            try:
                job = self._aggregate.trim_copy(drop_bytes, end)
            except OSError as exc:
                failure = exc
        try:
            if job is None:
                raise failure or OSError("trim copy made no job")
            self._aggregate.trim_finish(job)
        except OSError as exc:
            self._health.degrade(f"{TRIM_ERROR}: {exc}")
            self._rebuild_failed_at = self._monotonic()
            return
        for seg in batch:
            self.delete_files(seg)
            self.evicting.remove(seg)
            self.evictions += 1
        self.rebuild_seconds.append(time.perf_counter() - started)
        if self._health.error.startswith(TRIM_ERROR):
            self._health.error = ""

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the worker has nothing left it can do now (tests, shutdown)."""
        with self._lock:
            return self._wake.wait_for(
                lambda: not self._worker_busy and not self._has_work(), timeout
            )

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(timeout=30)
