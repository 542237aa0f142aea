"""Polled-mode deadline arithmetic on a manual clock."""

from __future__ import annotations

import math

import pytest

from clocks import ManualClock
from wilo_backend.sensor.pacing import DeviationHistogram, Pacer

PERIOD = 1_250_000


def test_deadlines_are_absolute_and_do_not_drift() -> None:
    clock = ManualClock(start_ns=0)
    clock.read_cost_ns = 300  # each clock read costs 0.3 µs
    pacer = Pacer(clock, PERIOD, start_ns=PERIOD)
    for k in range(10_000):
        index, released = pacer.wait()
        assert index == k
        assert 0 <= released - pacer.deadline_ns(k) < 1_000  # released in the spin, just after
        clock.advance(400_000)  # a 400 µs read
    assert pacer.missed == 0
    # 10,000 deadlines later we are still on the grid: no accumulated drift
    assert pacer.deadline_ns(10_000) == PERIOD * 10_001


def test_sleeps_until_spin_margin_then_spins() -> None:
    clock = ManualClock(start_ns=0)
    clock.read_cost_ns = 0
    sleeps: list[int] = []
    real_sleep = clock.sleep_ns

    def recording_sleep(ns: int) -> None:
        sleeps.append(ns)
        real_sleep(ns)

    clock.sleep_ns = recording_sleep  # type: ignore[method-assign]
    clock.read_cost_ns = 1_000
    pacer = Pacer(clock, PERIOD, start_ns=PERIOD, spin_ns=200_000)
    pacer.wait()
    assert sleeps and PERIOD - 200_000 - 2_000 <= sleeps[0] <= PERIOD - 200_000


def test_missed_deadlines_are_counted_and_never_caught_up() -> None:
    clock = ManualClock(start_ns=0)
    pacer = Pacer(clock, PERIOD, start_ns=PERIOD)
    assert pacer.wait()[0] == 0
    clock.advance(5 * PERIOD + 100_000)  # stalled for 5 periods
    index, released = pacer.wait()
    # deadlines 1..4 passed entirely; deadline 5 is served late (100 µs), not 1..5 in a burst
    assert index == 5
    assert pacer.missed == 4
    assert released - pacer.deadline_ns(5) >= 100_000
    assert pacer.wait()[0] == 6
    assert pacer.missed == 4


def test_late_within_a_period_is_a_deviation_not_a_miss() -> None:
    clock = ManualClock(start_ns=0)
    pacer = Pacer(clock, PERIOD, start_ns=PERIOD)
    pacer.wait()
    clock.advance(PERIOD + 900_000)
    index, _ = pacer.wait()
    assert index == 1 and pacer.missed == 0
    assert pacer.histogram.max_us >= 900.0


def test_histogram_percentiles_and_coarse_buckets() -> None:
    histogram = DeviationHistogram()
    for _ in range(980):
        histogram.add(3.5)
    for _ in range(15):
        histogram.add(42.0)
    for _ in range(5):
        histogram.add(2500.0)
    assert histogram.percentile_us(0.5) == 4.0
    assert histogram.percentile_us(0.99) == 43.0
    assert histogram.max_us == 2500.0
    bounds, counts = histogram.coarse()
    assert bounds[-1] == math.inf and sum(counts) == 1000
    assert counts[bounds.index(5.0)] == 980
    assert counts[bounds.index(50.0)] == 15
    assert counts[bounds.index(5000.0)] == 5


def test_empty_histogram() -> None:
    assert DeviationHistogram().percentile_us(0.99) == pytest.approx(0.0)
