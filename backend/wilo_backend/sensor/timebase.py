"""Sensor-clock timestamps: a regression of FIFO sample count on CLOCK_MONOTONIC (Klipper-style)."""

from __future__ import annotations

from collections import deque

import numpy as np

from wilo_backend.model import Float64Array, Int64Array

# refit from scratch this often so the running sums never accumulate rounding error
_REBASE_EVERY = 1024


class Timebase:
    """Fits `produced = a + b·t` over a bounded window of (monotonic time, samples produced) points.

    Each FIFO poll gives one point: at the midpoint `t_ns` of the FIFO_COUNT read the chip had
    produced `produced` samples. Poll latency only adds noise around the line, and a point whose
    read took longer than `max_latency_ns` (the process was preempted mid-read) or that sits
    more than `max_residual` samples off an established fit is not used. Sample `k` was taken at
    `time_ns(k)`; `rate_hz` is the sensor's sample rate in host time.

    No sample may be stamped before the line is anchored: until then `time_ns` would count from
    the monotonic clock's origin (boot time). So the first point is taken whatever its latency
    (a loaded boot or a slow bus makes every early read slow; its midpoint is still within half
    the read's duration of the truth). Such a slow anchor is provisional: slow points keep
    being used while nothing better exists, and the first quick point replaces them all.
    """

    def __init__(
        self,
        nominal_rate_hz: float,
        window_seconds: float = 30.0,
        max_latency_ns: int = 2_000_000,
        max_residual: float = 3.0,
    ) -> None:
        self.nominal_rate_hz = nominal_rate_hz
        self.window_ns = int(window_seconds * 1e9)
        self.max_latency_ns = max_latency_ns
        self.max_residual = max_residual
        self.rejected = 0
        self.reset()

    def reset(self) -> None:
        """Forget every point (after a reconnect the chip's sample clock starts afresh)."""
        self._points: deque[tuple[int, int]] = deque()
        self._t_ref_ns = 0
        self._n_ref = 0
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # n, Σx, Σy, Σxx, Σxy
        self._adds = 0
        self._a = 0.0  # produced at t_ref
        self._b = self.nominal_rate_hz  # samples per second of host time
        self._fitted = False
        self._consecutive_rejects = 0
        self._provisional = False  # every point so far came from a slow read

    @property
    def ready(self) -> bool:
        """Whether a first point anchors the timeline."""
        return bool(self._points)

    @property
    def fitted(self) -> bool:
        """Whether the rate comes from the fit (≥ 0.1 s of points) rather than the nominal rate."""
        return self._fitted

    @property
    def rate_hz(self) -> float:
        return self._b

    @property
    def clock_error_ppm(self) -> float:
        return (self._b / self.nominal_rate_hz - 1.0) * 1e6

    @property
    def provisional(self) -> bool:
        """Whether the timeline hangs on slow reads only (coarse, ± half their duration)."""
        return self._provisional

    def add(self, t_ns: int, produced: int, latency_ns: int = 0) -> bool:
        """Offer one observation; returns whether it was used."""
        slow = latency_ns > self.max_latency_ns
        if slow and self._points and not self._provisional:
            self.rejected += 1
            return False
        if not slow and self._provisional:
            self.reset()  # a quick read at last: drop the coarse anchor, start from this one
        if slow:
            self._provisional = True
            return self._use(t_ns, produced)
        if self._fitted and abs(self.count_at(t_ns) - produced) > self.max_residual:
            self.rejected += 1
            self._consecutive_rejects += 1
            if self._consecutive_rejects < 20:
                return False
            self.reset()  # the line moved for good (e.g. a FIFO reset misjudged): start over
        self._consecutive_rejects = 0
        return self._use(t_ns, produced)

    def _use(self, t_ns: int, produced: int) -> bool:
        if not self._points:
            self._t_ref_ns, self._n_ref = t_ns, produced
            self._a = float(produced)
        self._points.append((t_ns, produced))
        self._accumulate(t_ns, produced, +1.0)
        while self._points and t_ns - self._points[0][0] > self.window_ns:
            old_t, old_n = self._points.popleft()
            self._accumulate(old_t, old_n, -1.0)
        self._adds += 1
        if self._adds % _REBASE_EVERY == 0:
            self._rebase()
        self._fit()
        return True

    def _accumulate(self, t_ns: int, produced: int, sign: float) -> None:
        x = (t_ns - self._t_ref_ns) / 1e9
        y = float(produced - self._n_ref)
        s = self._sums
        s[0] += sign
        s[1] += sign * x
        s[2] += sign * y
        s[3] += sign * x * x
        s[4] += sign * x * y

    def _rebase(self) -> None:
        self._t_ref_ns, self._n_ref = self._points[0]
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0]
        for t_ns, produced in self._points:
            self._accumulate(t_ns, produced, +1.0)

    def _fit(self) -> None:
        n, sx, sy, sxx, sxy = self._sums
        span_ns = self._points[-1][0] - self._points[0][0]
        if n < 4 or span_ns < 100_000_000:
            # too short for a slope: nominal rate through the mean point
            self._b = self.nominal_rate_hz
            self._a = self._n_ref + (sy - self._b * sx) / n
            return
        denominator = n * sxx - sx * sx
        self._b = (n * sxy - sx * sy) / denominator
        self._a = self._n_ref + (sy - self._b * sx) / n
        self._fitted = True

    def count_at(self, t_ns: int) -> float:
        """Expected samples produced by monotonic time `t_ns` (fractional)."""
        return self._a + self._b * (t_ns - self._t_ref_ns) / 1e9

    def time_ns(self, index: float) -> float:
        """Monotonic time at which sample `index` (0-based, fractional allowed) was taken.

        `produced` jumps from k to k+1 when sample k is taken and polls land uniformly in between,
        so the line sits half a sample above the step function: sample k is where it reads k+0.5.
        """
        return self._t_ref_ns + (index + 0.5 - self._a) / self._b * 1e9

    def times_ns(self, indices: Float64Array) -> Int64Array:
        """`time_ns` for an array of sample positions, rounded to whole nanoseconds."""
        offset_s = (indices + 0.5 - self._a) / self._b
        return self._t_ref_ns + np.rint(offset_s * 1e9).astype(np.int64)
