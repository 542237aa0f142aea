"""Time sources: the Clock protocol and the real CLOCK_MONOTONIC."""

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
