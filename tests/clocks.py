"""A clock for deterministic tests: the simulator, pacing and timestamps take it as their Clock."""

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
