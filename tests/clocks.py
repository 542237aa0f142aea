"""The fake clocks of the tests: ManualClock for the sensor side (ns, sleeps), FakeClock for the
Callable[[], float] clocks of the store, the server and analytics."""

from __future__ import annotations


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


class FakeClock:
    """Seconds (monotonic or since the epoch) that move only when the test says: the one
    `Callable[[], float]` clock the store, the server, analytics and the session take."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
