"""Time sources: the real CLOCK_MONOTONIC and a manual clock so tests run minutes in a second."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic nanoseconds plus a sleep; the simulator, pacing and timestamps all take one."""

    def now_ns(self) -> int: ...

    def sleep_ns(self, duration_ns: int) -> None: ...

    def wall_offset_ns(self) -> int:
        """CLOCK_REALTIME − CLOCK_MONOTONIC, ns (UTC epoch time = monotonic + this)."""
        ...


class MonotonicClock:
    """The host's CLOCK_MONOTONIC."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_ns(self, duration_ns: int) -> None:
        if duration_ns > 0:
            time.sleep(duration_ns / 1e9)

    def wall_offset_ns(self) -> int:
        return time.time_ns() - time.monotonic_ns()


class ManualClock:
    """A clock that only moves when slept on (or when told to); for deterministic tests.

    `read_cost_ns` advances time on every `now_ns()`, so a spin-wait on this clock terminates.
    """

    def __init__(
        self, start_ns: int = 1_000_000_000, wall_offset_ns: int = 1_764_000_000 * 10**9
    ) -> None:
        self.t_ns = start_ns
        self.read_cost_ns = 1_000
        self.offset_ns = wall_offset_ns

    def now_ns(self) -> int:
        self.t_ns += self.read_cost_ns
        return self.t_ns

    def sleep_ns(self, duration_ns: int) -> None:
        if duration_ns > 0:
            self.t_ns += duration_ns

    def advance(self, duration_ns: int) -> None:
        self.t_ns += duration_ns

    def wall_offset_ns(self) -> int:
        return self.offset_ns
