"""The acquisition loop with the real driver against the simulator, on a manual clock."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import numpy as np
import pytest

from clocks import ManualClock
from wilo_backend.config import SensorConfig
from wilo_backend.model import SampleBatch
from wilo_backend.sampler.acquire import Acquisition
from wilo_backend.sensor.bus import Bus
from wilo_backend.sensor.sim import SimMpu6050, SimSignal

SECOND = 1_000_000_000


class Run:
    """An Acquisition over a simulated sensor, stepped on a manual clock."""

    def __init__(
        self,
        mode: str = "fifo",
        rate_mode: str = "resample",
        clock_error: float = 0.0,
        signal: SimSignal | None = None,
        open_bus: Callable[[], Bus] | None = None,
        **config: object,
    ) -> None:
        self.clock = ManualClock()
        self.sim = SimMpu6050(self.clock, signal, clock_error=clock_error)
        sensor = SensorConfig(driver="sim", mode=mode, fifo_rate_mode=rate_mode, **config)  # type: ignore[arg-type]
        self.acq = Acquisition(sensor, open_bus or (lambda: self.sim), self.clock)
        self.batches: list[SampleBatch] = []

    def for_seconds(self, seconds: float, between: Callable[[], None] | None = None) -> None:
        end = self.clock.t_ns + int(seconds * SECOND)
        while self.clock.t_ns < end:
            self.batches.extend(self.acq.step())
            if between:
                between()

    @property
    def delivered(self) -> int:
        return sum(len(b) for b in self.batches)

    def assert_gaps_are_counted(self) -> None:
        """Numbering has no overlap, and its jumps add up to exactly the counted losses."""
        expected, gaps = self.batches[0].first_index, 0
        for batch in self.batches:
            assert batch.first_index >= expected
            gaps += batch.first_index - expected
            expected = batch.first_index + len(batch)
        assert gaps == self.acq.stats.lost
        stamps = np.concatenate([b.t_ns for b in self.batches])
        assert np.all(np.diff(stamps) > 0)


@pytest.mark.parametrize("error", [0.01, -0.01])
def test_clock_error_still_gives_800_per_host_second_over_60_s(error: float) -> None:
    run = Run(clock_error=error)
    run.for_seconds(1.0)  # start-up: let the filter and the first fit settle
    t0, n0 = run.clock.t_ns, run.delivered
    run.for_seconds(60.0)
    rate = (run.delivered - n0) / ((run.clock.t_ns - t0) / SECOND)
    assert rate == pytest.approx(800.0, abs=0.1)
    assert run.acq.stats.clock_error_ppm == pytest.approx(error * 1e6, abs=50)
    assert run.acq.stats.rate_hz == pytest.approx(800.0, abs=0.5)
    assert run.acq.stats.lost == 0
    run.assert_gaps_are_counted()
    # timestamps: 1.25 ms apart in host time (sensor clock corrected), without drift
    stamps = np.concatenate([b.t_ns for b in run.batches])
    span_s = (stamps[-1] - stamps[1000]) / SECOND
    assert (stamps.shape[0] - 1001) / span_s == pytest.approx(800.0, abs=0.01)
    spacing = np.diff(stamps[1000:])
    assert spacing.min() >= 1_248_000 and spacing.max() <= 1_252_000  # no refit jitter


def test_i2c_error_bursts_are_counted_and_sampling_goes_on() -> None:
    run = Run()
    run.for_seconds(2.0)
    for _ in range(5):
        run.sim.fail_next(4)  # a burst: the next four transfers fail
        run.for_seconds(1.0)
    stats = run.acq.stats
    assert stats.i2c_errors >= 5 * 2  # each burst costs at least two polls' transfers
    assert stats.connected and stats.reconnects == 0
    assert stats.samples == run.delivered
    assert run.delivered >= 800 * 6.5
    run.assert_gaps_are_counted()


def test_random_i2c_errors_are_counted() -> None:
    run = Run()
    run.sim.i2c_error_rate = 0.02
    run.for_seconds(10.0)
    assert run.acq.stats.i2c_errors >= 0.5 * run.sim.failed_transfers
    assert run.acq.stats.i2c_errors <= run.sim.failed_transfers
    assert run.delivered >= 800 * 9
    run.assert_gaps_are_counted()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_error_burst_during_fifo_resets_costs_counted_samples_not_a_reconnect(seed: int) -> None:
    """4 s of 30 % failed transfers (the soak test's burst): failed data reads force FIFO resets,
    and some of those resets fail part-way. The FIFO must come back on, every sample the burst
    cost must be counted, and the device, which kept answering, must not be reconnected."""
    run = Run()
    run.sim.rng = np.random.default_rng(seed)
    run.for_seconds(2.0)
    start_ns, delivered_before, lost_before = run.clock.t_ns, run.delivered, run.acq.stats.lost
    run.sim.i2c_error_rate = 0.3
    run.for_seconds(4.0)
    run.sim.i2c_error_rate = 0.0
    run.for_seconds(2.0)
    stats = run.acq.stats
    assert stats.connected and stats.reconnects == 0
    assert stats.fifo_resets >= 10 and stats.i2c_errors >= 100
    run.assert_gaps_are_counted()
    expected = 800 * (run.clock.t_ns - start_ns) / SECOND
    missing = expected - (run.delivered - delivered_before)
    lost = stats.lost - lost_before
    assert abs(missing - lost) <= 20  # what is missing is what was counted, bar the last poll
    assert lost <= 800 * 4.0 * 0.9  # sampling went on through the burst


def test_device_vanishes_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wilo_backend.sampler")
    run = Run(retry_seconds=1.0)
    run.for_seconds(2.0)
    run.sim.vanish()
    run.for_seconds(3.0)
    assert not run.acq.stats.connected
    assert "Remote I/O error" in run.acq.stats.last_error
    during = run.delivered
    attempts = run.acq.connect_attempts
    run.for_seconds(2.0)
    assert run.delivered == during  # nothing invented while it is gone
    assert run.acq.connect_attempts - attempts in (2, 3)  # every retry_seconds
    run.sim.reappear()  # powered on again: asleep, FIFO off; the driver must set it up anew
    run.for_seconds(3.0)
    stats = run.acq.stats
    assert stats.connected and stats.reconnects == 1
    assert run.delivered - during >= 800 * 1.5
    assert any("reconnected" in r.message for r in caplog.records)
    run.assert_gaps_are_counted()


def test_power_cycle_without_bus_errors_is_noticed() -> None:
    run = Run(retry_seconds=1.0)
    run.for_seconds(1.0)
    run.sim.reappear()  # a brown-out: the chip silently back at power-on defaults
    run.for_seconds(2.0)
    assert run.acq.stats.reconnects == 1
    assert run.acq.stats.connected


def test_slow_reader_overflow_is_counted_in_output_samples() -> None:
    run = Run()
    run.for_seconds(2.0)
    run.clock.advance(SECOND // 2)  # the loop is held up for 0.5 s: the FIFO overflows
    run.for_seconds(2.0)
    stats = run.acq.stats
    assert stats.fifo_resets == 1
    # ~0.5 s of 800 Hz output is missing and counted; no more than that plus the filter refill
    assert 380 <= stats.lost_overflow <= 440
    run.assert_gaps_are_counted()


def test_no_device_reports_not_connected_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wilo_backend.sampler")

    def no_device() -> Bus:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/dev/i2c-1")

    run = Run(open_bus=no_device, retry_seconds=2.0)
    run.for_seconds(9.0)
    stats = run.acq.stats
    assert not stats.connected
    assert run.acq.connect_attempts == 5  # at 0, 2, 4, 6, 8 s
    assert "/dev/i2c-1" in stats.last_error
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "retrying every 2.0 s" in warnings[0].message
    assert run.batches == []


@pytest.mark.parametrize(("mode", "rate_mode"), [("fifo", "direct"), ("polled", "resample")])
def test_other_modes_deliver_800_hz(mode: str, rate_mode: str) -> None:
    run = Run(mode, rate_mode)
    run.for_seconds(0.5)
    t0, n0 = run.clock.t_ns, run.delivered
    run.for_seconds(5.0)
    rate = (run.delivered - n0) / ((run.clock.t_ns - t0) / SECOND)
    assert rate == pytest.approx(800.0, abs=1.0)
    assert run.acq.stats.lost == 0
    run.assert_gaps_are_counted()


def test_polled_stall_counts_missed_deadlines() -> None:
    run = Run("polled")
    run.for_seconds(1.0)
    run.clock.advance(10_000_000)  # 10 ms stall = 8 deadlines
    run.for_seconds(1.0)
    stats = run.acq.stats
    assert 7 <= stats.lost_missed_deadlines <= 8
    assert sum(stats.deviation_hist_counts) > 1500
    run.assert_gaps_are_counted()


def test_wall_clock_step_is_taken_at_once_and_small_drift_slewed() -> None:
    run = Run()
    run.for_seconds(1.0)
    before = run.batches[-1].t_ns[-1]
    run.clock.offset_ns += 3600 * SECOND  # NTP sets the clock an hour later
    run.for_seconds(0.1)
    after = run.batches[-1].t_ns[-1]
    assert after - before == pytest.approx(3600 * SECOND + 0.1 * SECOND, abs=0.03 * SECOND)
    run.clock.offset_ns += 50_000_000  # a 50 ms correction: slewed at ≤ 0.5 ms/s
    n = len(run.batches)
    run.for_seconds(2.0)
    stamps = np.concatenate([b.t_ns for b in run.batches[n:]])
    assert np.all(np.diff(stamps) > 0)
    assert np.diff(stamps).max() < 1_250_000 + 50_000
    assert run.acq.wall.offset_ns < run.clock.offset_ns  # still converging, no jump


@pytest.mark.parametrize("slow_polls", [1, 5, 40])
def test_slow_first_polls_are_stamped_near_the_wall_clock_of_their_poll(slow_polls: int) -> None:
    """A loaded boot: the first FIFO_COUNT reads take 3 ms each, longer than the timebase trusts.

    Their samples used to be stamped with an unanchored timebase (the monotonic clock's origin,
    i.e. boot time); they must carry the time of their poll whatever its duration.
    """
    run = Run(fifo_poll_ms=15.0)  # the bounds below are in 15 ms poll intervals
    run.clock.read_cost_ns = 3_000_000  # every clock read inside the poll costs 3 ms
    polls = 0
    while polls < slow_polls:
        before_wall = run.clock.t_ns + run.clock.offset_ns
        got = run.acq.step()
        after_wall = run.clock.t_ns + run.clock.offset_ns
        polls += 1
        for batch in got:
            # the poll happened inside step(); its samples were gathered since the previous one
            assert before_wall - 50_000_000 < int(batch.t_ns[0]), before_wall - batch.t_ns[0]
            assert int(batch.t_ns[-1]) < after_wall, batch.t_ns[-1] - after_wall
            run.batches.append(batch)
    run.clock.read_cost_ns = 1_000  # the load goes away: reads are quick again
    run.for_seconds(2.0)
    assert run.batches, "no sample delivered"
    assert run.acq.stats.lost == 0
    run.assert_gaps_are_counted()  # stamps strictly increasing across the re-anchoring
    last = run.batches[-1]
    lag_ns = run.clock.t_ns + run.clock.offset_ns - int(last.t_ns[-1])
    assert 0 < lag_ns < 20_000_000  # the newest sample is from the last poll interval


def test_a_clean_stop_drains_what_the_fifo_still_holds() -> None:
    """The stop comes between two polls: the samples gathered since the last one are read out
    at once instead of dying with the process."""
    run = Run(fifo_poll_ms=15.0)
    run.for_seconds(2.0)
    last_poll_lag_ns = run.clock.t_ns + run.clock.offset_ns - int(run.batches[-1].t_ns[-1])
    delivered = run.delivered
    run.clock.advance(12_000_000)  # 12 ms into the 15 ms poll interval: ~12 samples waiting
    drained = run.acq.drain()
    assert drained, "the FIFO's content was not read at the stop"
    got = sum(len(b) for b in drained)
    assert 8 <= got <= 11  # 12 ms at 800 Hz, less what the resampler still holds back
    run.batches.extend(drained)
    assert run.delivered == delivered + got
    run.assert_gaps_are_counted()
    stop_wall_ns = run.clock.t_ns + run.clock.offset_ns
    lag_ns = stop_wall_ns - int(drained[-1].t_ns[-1])
    assert abs(lag_ns - last_poll_lag_ns) < 2_000_000  # as fresh as after any poll


def test_drain_in_polled_mode_and_without_a_sensor_returns_nothing() -> None:
    run = Run(mode="polled")
    run.for_seconds(0.2)
    assert run.acq.drain() == []
    absent = Run(open_bus=lambda: (_ for _ in ()).throw(OSError(errno.ENOENT, "no bus")))
    absent.for_seconds(0.2)
    assert absent.acq.drain() == []
