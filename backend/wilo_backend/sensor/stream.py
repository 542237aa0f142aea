"""Sample streams per mode: the configured sensor in, timestamped 800 Hz SampleBatches out."""

from __future__ import annotations

import numpy as np

from wilo_backend.model import OUTPUT_RATE_HZ, Float64Array, Int64Array, SampleBatch, SamplerStats
from wilo_backend.sensor.clock import Clock
from wilo_backend.sensor.fifo import FAILED_POLLS_BEFORE_LOST, FifoReader
from wilo_backend.sensor.mpu6050 import Mpu6050, SensorError, SensorSetup
from wilo_backend.sensor.pacing import DeviationHistogram, Pacer
from wilo_backend.sensor.resample import Resampler
from wilo_backend.sensor.timebase import Timebase

STEP_NS = 1_000_000_000  # an offset change larger than this is a wall-clock step
SLEW = 500e-6  # smaller changes are followed at most 500 µs per second, like adjtime
SMOOTH_STEP_NS = 1_000.0  # sample times follow timebase refits by at most 1 µs per batch
SMOOTH_LIMIT_NS = 1_000_000.0  # beyond 1 ms of disagreement the fit is taken as is


class WallOffset:
    """CLOCK_REALTIME − CLOCK_MONOTONIC as used for UTC timestamps.

    Steady, so timestamps do not jitter with each measurement; a step of more than a second (the
    Pi has no RTC and NTP may set the clock late) is taken at once, and the store counts it;
    smaller differences are slewed in so timestamps never go backwards.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.offset_ns = clock.wall_offset_ns()
        self._updated_ns = clock.now_ns()
        self.steps = 0

    def update(self) -> int:
        now = self.clock.now_ns()
        measured = self.clock.wall_offset_ns()
        difference = measured - self.offset_ns
        if abs(difference) > STEP_NS:
            self.offset_ns = measured
            self.steps += 1
        elif difference:
            limit = int((now - self._updated_ns) * SLEW)
            self.offset_ns += max(-limit, min(limit, difference))
        self._updated_ns = now
        return self.offset_ns


def _monotonic(t_ns: Int64Array, last_ns: int) -> Int64Array:
    """Keep timestamps strictly increasing across refits of the timebase."""
    if t_ns.shape[0] and t_ns[0] <= last_ns:
        t_ns = np.maximum(t_ns, last_ns + 1 + np.arange(t_ns.shape[0], dtype=np.int64))
    return t_ns


class FifoStream:
    """fifo mode: poll every `poll_ns`, timestamp by the timebase, resample 1 kHz → 800 Hz."""

    def __init__(
        self,
        driver: Mpu6050,
        setup: SensorSetup,
        clock: Clock,
        wall: WallOffset,
        stats: SamplerStats,
        poll_ns: int,
        resample: bool,
        first_output: int = 0,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.stats = stats
        self.poll_ns = poll_ns
        self.scale_ms2 = driver.scale_ms2
        self.timebase = Timebase(setup.sample_rate_hz)
        self.reader = FifoReader(driver, clock, self.timebase)
        self.resampler = Resampler(setup.sample_rate_hz, OUTPUT_RATE_HZ) if resample else None
        self.output_base = first_output
        self.next_output = 0
        self._next_poll_ns = clock.now_ns() + poll_ns
        self._last_t_ns = -1
        self._step = 1.0 if self.resampler is None else setup.sample_rate_hz / OUTPUT_RATE_HZ
        self._seen = (0, 0, 0)  # reader counters already copied into stats

    def step(self) -> list[SampleBatch]:
        """Sleep to the next poll, poll once, return what came out (maybe nothing)."""
        now = self.clock.now_ns()
        if self._next_poll_ns > now:
            self.clock.sleep_ns(self._next_poll_ns - now)
        self._next_poll_ns += self.poll_ns
        now = self.clock.now_ns()
        if now > self._next_poll_ns:
            self._next_poll_ns = now + self.poll_ns  # late: poll again a full interval from now
        return self.drain()

    def drain(self) -> list[SampleBatch]:
        """Poll now, without waiting for the next poll time (also: the last poll at a stop, so
        the samples still in the sensor's FIFO are kept)."""
        try:
            poll = self.reader.poll()
        finally:
            self._sync_counters()
        if poll is None:
            return []
        xyz: Float64Array = poll.samples.astype(np.float64) * self.scale_ms2
        if self.resampler is not None:
            first, positions, xyz = self.resampler.process(
                poll.first_index, xyz, self.timebase.rate_hz
            )
        else:
            first = poll.first_index
            positions = np.arange(first, first + xyz.shape[0], dtype=np.float64)
        if xyz.shape[0] == 0:
            return []
        contiguous = first == self.next_output and self._last_t_ns >= 0
        if first > self.next_output:
            self.stats.lost_overflow += first - self.next_output
        self.next_output = first + xyz.shape[0]
        t_ns = self.timebase.times_ns(positions)
        if contiguous:
            t_ns = self._smooth(t_ns, positions)
        t_ns = _monotonic(t_ns, self._last_t_ns)
        self._last_t_ns = int(t_ns[-1])
        self.stats.samples += xyz.shape[0]
        self.stats.clock_error_ppm = self.timebase.clock_error_ppm
        return [SampleBatch(self.output_base + first, t_ns + self.wall.update(), xyz)]

    def _smooth(self, fitted_ns: Int64Array, positions: Float64Array) -> Int64Array:
        """Continue the previous batch's time grid, following the fit by ≤ 1 µs per batch.

        Each poll refits the timebase, which moves the line by a few µs; stamping every batch
        from the fresh fit would put that jitter into the sample spacing. Outputs are uniform
        in host time (the step is trimmed to the fitted rate), so the grid is continued and only
        nudged toward the fit; a large disagreement (start-up, a reset) takes the fit as is.
        """
        step_inputs = positions[1] - positions[0] if positions.shape[0] > 1 else self._step
        self._step = step_inputs
        period_ns = step_inputs * 1e9 / self.timebase.rate_hz
        grid = self._last_t_ns + period_ns * np.arange(1, positions.shape[0] + 1)
        error_ns = float(np.mean(fitted_ns - grid))
        if abs(error_ns) > SMOOTH_LIMIT_NS:
            return fitted_ns
        grid += max(-SMOOTH_STEP_NS, min(SMOOTH_STEP_NS, error_ns))
        smoothed: Int64Array = np.rint(grid).astype(np.int64)
        return smoothed

    def _sync_counters(self) -> None:
        counters = self.reader.counters
        errors, resets, _ = self._seen
        self.stats.i2c_errors += counters.i2c_errors - errors
        self.stats.fifo_resets += counters.resets - resets
        self._seen = (counters.i2c_errors, counters.resets, 0)


class PolledStream:
    """polled mode: one 6-byte read at 0x3B per 1.25 ms deadline; misses counted, not caught up."""

    def __init__(
        self,
        driver: Mpu6050,
        clock: Clock,
        wall: WallOffset,
        stats: SamplerStats,
        batch_samples: int = 8,
        first_output: int = 0,
        histogram: DeviationHistogram | None = None,
    ) -> None:
        self.driver = driver
        self.clock = clock
        self.wall = wall
        self.stats = stats
        self.batch_samples = batch_samples
        self.output_base = first_output
        self.pacer = Pacer(clock, round(1e9 / OUTPUT_RATE_HZ), histogram=histogram)
        self.next_output = 0
        self._missed_seen = 0
        self._failed_reads = 0
        self._index = np.zeros(batch_samples, dtype=np.int64)
        self._t_ns = np.zeros(batch_samples, dtype=np.int64)
        self._lsb = np.zeros((batch_samples, 3), dtype=np.float64)

    def step(self) -> list[SampleBatch]:
        """Take `batch_samples` deadlines; return the samples read, split where some were lost."""
        got = 0
        for _ in range(self.batch_samples):
            index, released_ns = self.pacer.wait()
            try:
                x, y, z = self.driver.read_accel()
            except OSError as exc:
                self.stats.i2c_errors += 1
                self.stats.lost_missed_deadlines += 1  # this deadline's sample was not taken
                self._failed_reads += 1
                if self._failed_reads >= FAILED_POLLS_BEFORE_LOST * 10:
                    raise SensorError(f"{self._failed_reads} reads in a row failed: {exc}") from exc
                continue
            self._failed_reads = 0
            self._index[got] = index
            self._t_ns[got] = (released_ns + self.clock.now_ns()) // 2
            self._lsb[got] = (x, y, z)
            got += 1
        self.stats.lost_missed_deadlines += self.pacer.missed - self._missed_seen
        self._missed_seen = self.pacer.missed
        self.stats.samples += got
        return self._batches(got)

    def drain(self) -> list[SampleBatch]:
        """Nothing waits in a FIFO in polled mode: each sample was read at its deadline."""
        return []

    def _batches(self, got: int) -> list[SampleBatch]:
        if got == 0:
            return []
        index = self._index[:got]
        offset = self.wall.update()
        cuts = np.flatnonzero(np.diff(index) != 1) + 1
        batches = []
        for start, stop in zip(
            np.concatenate(([0], cuts)), np.concatenate((cuts, [got])), strict=True
        ):
            batches.append(
                SampleBatch(
                    self.output_base + int(index[start]),
                    self._t_ns[start:stop] + offset,
                    self._lsb[start:stop] * self.driver.scale_ms2,
                )
            )
        self.next_output = int(index[-1]) + 1
        return batches
