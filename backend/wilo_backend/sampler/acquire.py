"""The acquisition loop body: connect (and reconnect) the sensor, run its stream, keep counters."""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable

from wilo_backend.config import SensorConfig
from wilo_backend.model import SampleBatch, SamplerStats
from wilo_backend.sensor.bus import Bus
from wilo_backend.sensor.clock import Clock
from wilo_backend.sensor.mpu6050 import Mpu6050, SensorError, plan_setup
from wilo_backend.sensor.pacing import DeviationHistogram
from wilo_backend.sensor.stream import FifoStream, PolledStream, WallOffset

log = logging.getLogger("wilo_backend.sampler")

IDLE_SLICE_NS = 100_000_000  # while disconnected, wake this often (to notice a stop request)
RATE_WINDOW_NS = 10_000_000_000  # effective rate over the last 10 s


class Acquisition:
    """Owns the sensor connection; `step()` returns the next batches (blocking ≤ ~100 ms).

    Output numbering continues across reconnects (a reconnect is a gap in time, not lost samples
    that were ever produced); every counter survives reconnects.
    """

    def __init__(self, sensor: SensorConfig, open_bus: Callable[[], Bus], clock: Clock) -> None:
        self.config = sensor
        self.open_bus = open_bus
        self.clock = clock
        self.setup = plan_setup(sensor.mode, sensor.fifo_rate_mode, sensor.accel_range_g)
        self.stats = SamplerStats(mode=self._mode_name(), running=True)
        self.wall = WallOffset(clock)
        self.connect_attempts = 0
        self._bus: Bus | None = None
        self._stream: FifoStream | PolledStream | None = None
        self._next_attempt_ns = clock.now_ns()
        self._next_output = 0
        self._ever_connected = False
        self._rate_points: deque[tuple[int, int]] = deque()
        self._deviation_steps = 0
        self.histogram = DeviationHistogram()  # survives reconnects

    def _mode_name(self) -> str:
        if self.config.mode == "fifo":
            return f"fifo/{self.config.fifo_rate_mode}"
        return "polled"

    @property
    def connected(self) -> bool:
        return self._stream is not None

    def step(self) -> list[SampleBatch]:
        if self._stream is None and not self._connect():
            self._update_rate()
            return []
        assert self._stream is not None
        try:
            batches = self._stream.step()
        except SensorError as exc:
            self._disconnect(str(exc))
            return []
        if batches:
            last = batches[-1]
            self._next_output = last.first_index + len(last)
        self._update_rate()
        if isinstance(self._stream, PolledStream):
            self._update_deviation()
        return batches

    def drain(self) -> list[SampleBatch]:
        """At a clean stop: what the sensor's FIFO still holds (up to a poll interval of
        samples that would otherwise be lost with the process)."""
        if self._stream is None:
            return []
        try:
            return self._stream.drain()
        except SensorError as exc:
            log.warning("final FIFO read at stop failed: %s", exc)
            return []

    def _connect(self) -> bool:
        now = self.clock.now_ns()
        if now < self._next_attempt_ns:
            self.clock.sleep_ns(min(self._next_attempt_ns - now, IDLE_SLICE_NS))
            return False
        self.connect_attempts += 1
        bus: Bus | None = None
        try:
            bus = self.open_bus()
            driver = Mpu6050(bus, self.clock, self.config.address)
            driver.configure(self.setup)
        except (OSError, SensorError) as exc:
            if bus is not None:
                bus.close()
            retry = self.config.retry_seconds
            message = f"sensor not available on I2C bus {self.config.i2c_bus}: {exc}"
            if message != self.stats.last_error or self.connect_attempts == 1:
                log.warning("%s; retrying every %.1f s", message, retry)
            else:
                log.info("%s; retrying in %.1f s", message, retry)
            self.stats.last_error = message
            self._next_attempt_ns = self.clock.now_ns() + int(retry * 1e9)
            return False
        self._bus = bus
        if self.config.mode == "fifo":
            self._stream = FifoStream(
                driver,
                self.setup,
                self.clock,
                self.wall,
                self.stats,
                int(self.config.fifo_poll_ms * 1e6),
                resample=self.config.fifo_rate_mode == "resample",
                first_output=self._next_output,
            )
        else:
            self._stream = PolledStream(
                driver,
                self.clock,
                self.wall,
                self.stats,
                first_output=self._next_output,
                histogram=self.histogram,
            )
        if self._ever_connected:
            self.stats.reconnects += 1
            log.warning(
                "sensor reconnected (%s mode, reconnect #%d)",
                self._mode_name(),
                self.stats.reconnects,
            )
        else:
            log.info(
                "sensor connected (%s mode, %.0f Hz sample clock)",
                self._mode_name(),
                self.setup.sample_rate_hz,
            )
        self._ever_connected = True
        self.stats.connected = True
        self.stats.last_error = ""
        return True

    def _disconnect(self, reason: str) -> None:
        log.warning("sensor lost: %s; reconnecting", reason)
        self.stats.last_error = f"sensor lost: {reason}"
        self.stats.connected = False
        self._stream = None
        if self._bus is not None:
            with contextlib.suppress(OSError):
                self._bus.close()
            self._bus = None
        self._next_attempt_ns = self.clock.now_ns()  # try once at once, then every retry_seconds

    def _update_rate(self) -> None:
        now = self.clock.now_ns()
        points = self._rate_points
        if not points or now - points[-1][0] >= 250_000_000:
            points.append((now, self.stats.samples))
            while now - points[0][0] > RATE_WINDOW_NS:
                points.popleft()
        if len(points) >= 2 and points[-1][0] > points[0][0]:
            (t0, n0), (t1, n1) = points[0], points[-1]
            self.stats.rate_hz = (n1 - n0) / ((t1 - t0) / 1e9)
        elif not self.connected:
            self.stats.rate_hz = 0.0

    def _update_deviation(self) -> None:
        histogram = self.histogram
        self._deviation_steps += 1
        if self._deviation_steps % 10:
            return  # percentiles ten times a second are plenty
        self.stats.deviation_us_p50 = histogram.percentile_us(0.50)
        self.stats.deviation_us_p99 = histogram.percentile_us(0.99)
        self.stats.deviation_us_max = histogram.max_us
        bounds, counts = histogram.coarse()
        self.stats.deviation_hist_bounds_us = bounds
        self.stats.deviation_hist_counts = counts
