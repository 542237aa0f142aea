"""Wires sampler → store → server together; systemd readiness, watchdog and clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from wilo_backend import __version__
from wilo_backend.analytics import Analytics, ZoneChange
from wilo_backend.analytics.serving import attach
from wilo_backend.config import Config
from wilo_backend.heap import trim_periodically, tune_malloc
from wilo_backend.model import OUTPUT_RATE_HZ, SampleBatch, SamplerStats
from wilo_backend.release import release_name
from wilo_backend.sampler.process import LOG_FORMAT, Sampler
from wilo_backend.sdnotify import Notifier
from wilo_backend.server.app import WiloServer
from wilo_backend.server.metrics import ServiceState, render_service_state
from wilo_backend.store.datalock import DataDirLock
from wilo_backend.store.store import Store

log = logging.getLogger("wilo_backend.service")

# How long the pump waits for a batch before it ticks the store anyway.
PUMP_WAIT_SECONDS = 0.05
# With no live subscriber nobody needs a batch sooner than the store's 1 s flush: the pump then
# takes what arrived every this often, one batch per read instead of one per FIFO poll (~67 a
# second), which was most of the idle main process's CPU (BENCHMARKS.md, "efficiency").
PUMP_IDLE_SECONDS = 0.25
# A dead sampler is restarted after this pause; the watchdog stays silent meanwhile.
SAMPLER_RESTART_SECONDS = 2.0
# A store that raises on every batch logs its traceback at most this often (the rest is counted).
STORE_ERROR_LOG_SECONDS = 60.0


class ListenError(Exception):
    """The server could not bind its address."""


class Service:
    """The running appliance; implements model.ServiceControl for the server."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sampler = Sampler(config.sensor, config.sampler)
        self.store = Store(config.storage, on_new_file=self._on_new_file)
        self.server = WiloServer(config.server, self.store, self)
        self.analytics: Analytics | None = None
        if config.analytics.enabled:
            self.analytics = Analytics(
                config.analytics,
                Path(config.storage.data_dir),
                timezone=config.storage.timezone,
                fsync=config.storage.fsync,
                on_zone_change=self._on_zone_change,
            )
            attach(self.server, self.analytics)
        self._collecting = True
        self._paused = False
        self._state_lock = threading.Lock()
        self._stop_pump = threading.Event()
        self._pump_thread: threading.Thread | None = None
        self._pump_error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sampler_restarts = 0
        self._samples_stored = 0
        self._samples_store_failed = 0  # samples in batches the store raised on: counted
        self._store_error_logged = -STORE_ERROR_LOG_SECONDS
        self._stopping = False  # shutting down: a sampler that exits is not restarted
        self._nominal_rate_hz = int(OUTPUT_RATE_HZ)
        self._release = release_name()
        self.server.add_metrics(self._state_metrics)
        self.port: int | None = None

    # --- ServiceControl -------------------------------------------------------------------

    def start_collection(self) -> None:
        with self._state_lock:
            self._collecting, self._paused = True, False
        log.info("collection started")

    def stop_collection(self) -> None:
        with self._state_lock:
            self._collecting, self._paused = False, False
        self.store.close_segment()
        log.info("collection stopped; open segment closed")

    def pause_collection(self) -> None:
        with self._state_lock:
            self._paused = True
        log.info("collection paused")

    def resume_collection(self) -> None:
        with self._state_lock:
            self._paused = False
        log.info("collection resumed")

    def sampler_stats(self) -> SamplerStats:
        return self.sampler.stats()

    def _state_metrics(self) -> str:
        return render_service_state(
            ServiceState(
                version=__version__,
                release=self._release,
                sampler_restarts=self._sampler_restarts,
                min_free_bytes=self.config.storage.min_free_mb * 1024 * 1024,
            )
        )

    def collection_state(self) -> tuple[bool, bool]:
        with self._state_lock:
            return self._collecting, self._paused

    def status_data(self) -> dict[str, Any]:
        stats = self.sampler.stats()
        storage = self.store.status()
        running, paused = self.collection_state()
        return {
            "connected": stats.connected,
            "running": running,
            "paused": paused,
            # the nominal rate, a number, as the original sent it (the dashboard prints it)
            "sampling_rate": self._nominal_rate_hz,
            "measured_rate_hz": round(stats.rate_hz, 3),
            "total_samples": stats.samples,
            "csv_files": storage.file_count,
            "latest_file": storage.latest_file,
            **(self.analytics.status_data() if self.analytics else {}),
            "samples_stored": self._samples_stored,
            "samples_store_failed": self._samples_store_failed,
            "version": __version__,
            "sampler": {
                "alive": stats.alive,
                "mode": stats.mode,
                "lost_samples": stats.lost,
                "lost_overflow": stats.lost_overflow,
                "lost_missed_deadlines": stats.lost_missed_deadlines,
                "lost_handoff": stats.lost_handoff,
                "i2c_errors": stats.i2c_errors,
                "reconnects": stats.reconnects,
                "fifo_resets": stats.fifo_resets,
                "clock_error_ppm": stats.clock_error_ppm,
                "deviation_us_p99": stats.deviation_us_p99,
                "realtime": stats.realtime,
                "cpu": stats.cpu,
                "restarts": self._sampler_restarts,
                "last_error": stats.last_error,
            },
            "storage": {
                "state": "ok" if storage.healthy else "degraded",
                "error": storage.error,
                "bytes_retained": storage.bytes_retained,
                "free_bytes": storage.free_bytes,
                "clock_steps": storage.clock_steps,
                "rows_dropped": storage.rows_dropped,
            },
        }

    def health(self) -> tuple[bool, str]:
        stats = self.sampler.stats()
        if not stats.alive:
            return False, "sampler process not running"
        if not stats.connected:
            return False, f"sensor not connected: {stats.last_error or 'no data'}"
        if self._pump_error:
            return False, f"pump: {self._pump_error}"
        storage = self.store.status()
        if not storage.healthy:
            return False, f"storage degraded: {storage.error}"
        with self._state_lock:
            collecting, paused = self._collecting, self._paused
        if not collecting:
            return False, "collection stopped by a client (stop_collection)"
        if paused:
            return False, "collection paused by a client (pause_collection)"
        return True, "ok"

    # --- wiring ----------------------------------------------------------------------------

    def _on_new_file(self, filename: str, total_files: int) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.server.notify_new_file, filename, total_files)

    def _on_zone_change(self, change: ZoneChange) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.server.notify_event, "alert", change.as_message())

    def _analyse(self, batch: SampleBatch) -> None:
        if self.analytics is None:
            return
        try:
            self.analytics.feed(batch)
        except Exception:  # features are secondary: never cost the store or the live stream
            log.exception("analytics failed on a batch; continuing")

    def _publish(self, batch: SampleBatch) -> None:
        loop = self._loop
        # no subscriber, no wake-up of the event loop (it cost ~1 % of a core at idle)
        if loop is not None and not loop.is_closed() and self.server.live_subscribers:
            loop.call_soon_threadsafe(self.server.publish, batch)

    def _store_batches(self, batches: list[SampleBatch]) -> None:
        """Store, stream and analyse each batch; one that fails costs only itself, counted."""
        with self._state_lock:
            keep = self._collecting and not self._paused
        if not keep:
            return
        for batch in batches:
            try:
                self.store.append(batch)
            except Exception as exc:  # a bug or an I/O error the store did not absorb
                self._samples_store_failed += len(batch)
                self._pump_error = f"{type(exc).__name__}: {exc}"
                now = time.monotonic()
                if now - self._store_error_logged >= STORE_ERROR_LOG_SECONDS:
                    # one traceback per interval: a failure on every batch must not fill the card
                    self._store_error_logged = now
                    log.exception(
                        "storing %d samples failed; counted (%d so far), going on",
                        len(batch),
                        self._samples_store_failed,
                    )
                continue
            self._samples_stored += len(batch)
            self._publish(batch)
            self._analyse(batch)

    def _pump(self) -> None:
        """Moves batches from the sampler to the store and the live stream; never blocks sampling.

        Runs in its own thread so that fdatasync and eviction never stall the event loop. At a
        stop it runs once more after the sampler has exited, to store its last hand-over (the
        samples drained from the sensor's FIFO).
        """
        dead_since: float | None = None
        while True:
            stopping = self._stop_pump.is_set()
            try:
                failed_before = self._samples_store_failed
                wait_s = 0 if stopping else PUMP_WAIT_SECONDS
                if not stopping and not self.server.live_subscribers:
                    self._stop_pump.wait(PUMP_IDLE_SECONDS)
                    wait_s = 0
                self._store_batches(self.sampler.read(wait_s))
                self.store.tick()
                if self._samples_store_failed == failed_before:
                    self._pump_error = ""
                if stopping:
                    return
                if self._stopping or self.sampler.is_alive():
                    dead_since = None
                elif dead_since is None:
                    dead_since = time.monotonic()
                    log.error("sampler process died; restarting in %.0f s", SAMPLER_RESTART_SECONDS)
                elif time.monotonic() - dead_since >= SAMPLER_RESTART_SECONDS:
                    self._sampler_restarts += 1
                    self.sampler.stop()
                    self.sampler = Sampler(self.config.sensor, self.config.sampler)
                    self.sampler.start()
                    dead_since = None
            except Exception as exc:  # the pump must outlive any one bad batch or I/O error
                self._pump_error = f"{type(exc).__name__}: {exc}"
                log.exception("pump error; continuing")
                if stopping:
                    return
                self._stop_pump.wait(0.5)

    async def _watchdog(self, notifier: Notifier) -> None:
        assert notifier.watchdog_seconds is not None
        interval = notifier.watchdog_seconds / 3
        while True:
            # Only a live sampler earns a ping: a hung acquisition must get us restarted.
            if self.sampler.is_alive() and self._pump_thread and self._pump_thread.is_alive():
                notifier.watchdog()
            await asyncio.sleep(interval)

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, wait for `stop`, then shut down in reverse order."""
        self._loop = asyncio.get_running_loop()
        notifier = Notifier()
        await asyncio.to_thread(self.store.open)
        # the feature history loads beside the rest of start-up; analytics skips samples until then
        analytics_open = (
            asyncio.ensure_future(asyncio.to_thread(self.analytics.open))
            if self.analytics is not None
            else None
        )
        self.sampler.start()
        self._pump_thread = threading.Thread(target=self._pump, name="pump", daemon=True)
        self._pump_thread.start()
        watchdog_task: asyncio.Task[None] | None = None
        trim_task = asyncio.create_task(trim_periodically(), name="heap-trim")
        try:
            try:
                self.port = await self.server.start()
            except OSError as exc:  # port taken, address not ours: one line, not a traceback
                host, port = self.config.server.host, self.config.server.port
                raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
            log.info(
                "wilo-backend %s up: sensor=%s mode=%s, data in %s, listening on %s:%d",
                __version__,
                self.config.sensor.driver,
                self.config.sensor.mode,
                self.config.storage.data_dir,
                self.config.server.host,
                self.port,
            )
            notifier.ready(f"sampling, serving on port {self.port}")
            if notifier.watchdog_seconds:
                watchdog_task = asyncio.create_task(self._watchdog(notifier))
            await stop.wait()
        finally:
            notifier.stopping()
            log.info("shutting down: final flush")
            for task in (watchdog_task, trim_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self.server.stop()
            # the sampler first: it drains the sensor's FIFO into the ring as it exits, and the
            # pump's last round stores that before the store closes
            self._stopping = True
            await asyncio.to_thread(self.sampler.stop)
            self._stop_pump.set()
            await asyncio.to_thread(self._pump_thread.join, 10)
            await asyncio.to_thread(self.store.close)
            if self.analytics is not None and analytics_open is not None:
                await analytics_open
                await asyncio.to_thread(self.analytics.close)
            notifier.close()
            log.info(
                "stopped cleanly: %d samples stored (%d delivered by the sampler since its start)",
                self._samples_stored,
                self.sampler.stats().samples,
            )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format=LOG_FORMAT,
    )
    # websockets' DEBUG output dumps request lines, headers and frames: the auth token with them
    logging.getLogger("websockets").setLevel(max(logging.INFO, getattr(logging, level)))


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run the service until SIGTERM/SIGINT (or until `stop` is set)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Service(config).run(stop)


def run_service(config: Config) -> int:
    """Entry point of `wilo-backend run`. Raises DataDirError (exit 2) when another process
    holds the data folder: checked before anything in it is read or repaired."""
    _configure_logging(config.log.level)
    with DataDirLock(Path(config.storage.data_dir)):
        tune_malloc()
        try:
            asyncio.run(serve(config))
        except ListenError as exc:
            log.error("%s; stopped", exc)
            return 1
    return 0
