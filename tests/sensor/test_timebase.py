"""The sample-index regression on the monotonic clock under clock error and poll latency."""

from __future__ import annotations

import numpy as np
import pytest

from wilo_backend.sensor.timebase import Timebase


def _observe(rate_hz: float, seconds: float, seed: int = 3) -> tuple[Timebase, float]:
    """Polls every ~15 ms with random latency; returns the timebase and the true t0 (ns)."""
    rng = np.random.default_rng(seed)
    timebase = Timebase(1000.0)
    t0_ns = 5e9 + 0.37e6  # sample 0 taken here
    t_ns = 5e9
    while t_ns < 5e9 + seconds * 1e9:
        t_ns += 15e6 + rng.uniform(-3e6, 3e6)  # uneven poll spacing
        latency = rng.exponential(150e3)  # the count is read somewhere in a short transfer
        if rng.random() < 0.02:
            latency += 8e6  # preempted mid-read now and then
        snapshot = t_ns + rng.uniform(0, latency)
        produced = int(np.floor((snapshot - t0_ns) * rate_hz / 1e9)) + 1
        timebase.add(int(t_ns + latency / 2), produced, int(latency))
    return timebase, t0_ns


@pytest.mark.parametrize("error", [-0.01, 0.0, 0.01])
def test_regression_finds_the_sensor_rate_and_sample_times(error: float) -> None:
    rate = 1000.0 * (1 + error)
    timebase, t0_ns = _observe(rate, 60.0)
    assert timebase.clock_error_ppm == pytest.approx(error * 1e6, abs=20.0)
    assert timebase.rate_hz == pytest.approx(rate, rel=20e-6)
    newest = timebase._points[-1][1]  # the last sample index seen
    for index in (newest - 20_000, newest - 100, newest):
        true_ns = t0_ns + index / rate * 1e9
        assert timebase.time_ns(index) == pytest.approx(true_ns, abs=100e3)  # within 0.1 ms
    assert timebase.rejected > 0  # the preempted reads were left out


def test_slow_reads_are_not_used() -> None:
    timebase = Timebase(1000.0, max_latency_ns=2_000_000)
    assert timebase.add(1_000_000_000, 10, 100_000)
    assert not timebase.add(1_015_000_000, 25, 3_000_000)
    assert timebase.rejected == 1


def test_outlier_is_rejected_but_a_lasting_shift_is_adopted() -> None:
    timebase = Timebase(1000.0)
    t = 0
    for k in range(200):
        t = k * 15_000_000
        assert timebase.add(t, k * 15, 0)
    assert not timebase.add(t + 15_000_000, 200 * 15 + 50, 0)  # 50 samples off: an outlier
    for k in range(201, 240):  # but if the line really moved, follow it after a while
        timebase.add(k * 15_000_000, k * 15 + 50, 0)
    assert timebase.count_at(240 * 15_000_000) == pytest.approx(240 * 15 + 50, abs=1.0)


def test_window_is_bounded() -> None:
    timebase = Timebase(1000.0, window_seconds=2.0)
    for k in range(2000):
        timebase.add(k * 15_000_000, k * 15, 0)
    assert len(timebase._points) <= 2.0 / 0.015 + 2


def test_nominal_rate_until_a_slope_can_be_fitted() -> None:
    timebase = Timebase(1000.0)
    timebase.add(1_000_000_000, 7, 0)
    assert not timebase.fitted
    assert timebase.time_ns(7.5) == pytest.approx(1_001_000_000)
    assert timebase.times_ns(np.array([7.5, 8.5])).tolist() == [1_001_000_000, 1_002_000_000]


def test_a_slow_first_read_anchors_provisionally_and_a_quick_one_replaces_it() -> None:
    timebase = Timebase(1000.0, max_latency_ns=2_000_000)
    assert timebase.add(5_000_000_000, 12, 9_000_000)  # slow, but nothing better exists
    assert timebase.ready and timebase.provisional
    # stamped near its poll, not at the monotonic clock's origin
    assert timebase.time_ns(11.5) == pytest.approx(5_000_000_000, abs=9_000_000 / 2)
    assert timebase.add(5_015_000_000, 27, 5_000_000)  # still slow: still used
    assert timebase.add(5_030_000_000, 42, 100_000)  # quick: the slow points are dropped
    assert not timebase.provisional and len(timebase._points) == 1
    assert not timebase.add(5_045_000_000, 57, 5_000_000)  # and slow reads are refused again
    assert timebase.rejected == 1
