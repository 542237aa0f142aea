"""Software pacing for polled mode: absolute deadlines, sleep then spin, misses counted."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from wilo_backend.sensor.clock import Clock

# reported histogram buckets (upper bounds, µs); the last is open-ended
HIST_BOUNDS_US = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, math.inf)


def _fine_bin(deviation_us: float) -> int:
    """Bins: 1 µs to 100 µs, 10 µs to 1 ms, 100 µs to 10 ms, 1 ms to 100 ms, then overflow."""
    if deviation_us < 100.0:
        return int(deviation_us)
    if deviation_us < 1000.0:
        return 100 + int((deviation_us - 100.0) / 10.0)
    if deviation_us < 10_000.0:
        return 190 + int((deviation_us - 1000.0) / 100.0)
    if deviation_us < 100_000.0:
        return 280 + int((deviation_us - 10_000.0) / 1000.0)
    return 370


def _fine_upper_us() -> npt.NDArray[np.float64]:
    edges = [float(i + 1) for i in range(100)]
    edges += [100.0 + 10.0 * (i + 1) for i in range(90)]
    edges += [1000.0 + 100.0 * (i + 1) for i in range(90)]
    edges += [10_000.0 + 1000.0 * (i + 1) for i in range(90)]
    edges.append(math.inf)
    return np.array(edges)


_FINE_UPPER_US = _fine_upper_us()


class DeviationHistogram:
    """How late each deadline was met, in fine bins so percentiles need no stored samples."""

    def __init__(self) -> None:
        self.counts = np.zeros(_FINE_UPPER_US.shape[0], dtype=np.int64)
        self.max_us = 0.0
        self.total = 0

    def add(self, deviation_us: float) -> None:
        self.counts[_fine_bin(deviation_us)] += 1
        self.total += 1
        self.max_us = max(self.max_us, deviation_us)

    def percentile_us(self, fraction: float) -> float:
        """Upper edge of the bin holding the `fraction` quantile (capped at the true maximum)."""
        if self.total == 0:
            return 0.0
        rank = fraction * self.total
        index = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        return float(min(_FINE_UPPER_US[index], self.max_us))

    def coarse(self) -> tuple[list[float], list[int]]:
        """The reported histogram: (upper bounds µs, counts)."""
        cumulative = np.concatenate(([0], np.cumsum(self.counts)))
        counts: list[int] = []
        below = 0
        for bound in HIST_BOUNDS_US:
            upto = int(cumulative[int(np.searchsorted(_FINE_UPPER_US, bound, side="right"))])
            counts.append(upto - below)
            below = upto
        return list(HIST_BOUNDS_US), counts


class Pacer:
    """Deadlines at start + k·period on the monotonic clock; never catches up after a miss.

    `wait()` sleeps until `spin_ns` before the next deadline (the OS oversleeps by ~100 µs), then
    spins, and returns the deadline index to read for. A deadline already more than one period
    past is missed: it is counted and skipped, the latest passed deadline is served (late), and
    pacing goes on from there rather than reading a burst to catch up.
    """

    def __init__(
        self,
        clock: Clock,
        period_ns: int,
        start_ns: int | None = None,
        spin_ns: int = 200_000,
        histogram: DeviationHistogram | None = None,
    ) -> None:
        self.clock = clock
        self.period_ns = period_ns
        self.spin_ns = spin_ns
        self.start_ns = clock.now_ns() + period_ns if start_ns is None else start_ns
        self.next_index = 0
        self.missed = 0
        self.histogram = histogram or DeviationHistogram()

    def deadline_ns(self, index: int) -> int:
        return self.start_ns + index * self.period_ns

    def wait(self) -> tuple[int, int]:
        """Block until the next deadline; (deadline index, monotonic ns when released)."""
        now = self.clock.now_ns()
        deadline = self.deadline_ns(self.next_index)
        if now - deadline >= self.period_ns:
            # later deadlines have passed too: those before the latest are missed (counted, never
            # read in a burst), the latest is served late
            latest = (now - self.start_ns) // self.period_ns
            self.missed += latest - self.next_index
            self.next_index = latest
            deadline = self.deadline_ns(latest)
        if deadline - now > self.spin_ns:
            self.clock.sleep_ns(deadline - now - self.spin_ns)
        while (now := self.clock.now_ns()) < deadline:
            pass
        self.histogram.add((now - deadline) / 1000.0)
        index = self.next_index
        self.next_index += 1
        return index, now
