"""Runtime fault injection for the simulated sensor: a JSON schedule the sampler polls each second.

`sensor.sim.fault_file` names the file (sim driver only; the real driver never reads it). The
soak test (bench/soak.py) rewrites it while the service runs. Format::

    {"wall_offset_seconds": -86400.0,
     "faults": [{"id": "burst-1", "kind": "i2c_errors", "start": 1764260000.0,
                 "end": 1764260004.0, "rate": 0.3},
                {"id": "stall-1", "kind": "stall", "start": 1764260010.0,
                 "end": 1764260012.0, "stall_ms": 400},
                {"id": "gone-1", "kind": "vanish", "start": 1764260020.0, "end": 1764260026.0},
                {"id": "worn-1", "kind": "vibration", "start": 1764260030.0,
                 "end": 1764260090.0, "gain": 5.0}]}

`start`/`end` are Unix seconds of the host's real clock (CLOCK_REALTIME, never shifted by
`wall_offset_seconds`). Kinds: `i2c_errors` — each transfer fails with probability `rate` during
the window; `vanish` — the device stops answering during the window and comes back power-cycled;
`stall` — once per window, one transfer holds the bus for `stall_ms` (the FIFO overflows when
that exceeds its 170 ms); `vibration` — the pump's vibration (fundamental and harmonics, not
gravity or noise) is `gain` times the configured one during the window (a worn bearing: the
monitoring test raises a pump into zone D with it). `wall_offset_seconds` is added to
CLOCK_REALTIME − CLOCK_MONOTONIC as the sampler sees it: a wall-clock step without stepping the
machine's clock. A missing file
means no faults; an unreadable or malformed one keeps the last good schedule and is logged once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wilo_backend.sensor.clock import MonotonicClock

log = logging.getLogger("wilo_backend.sensor.faults")

POLL_INTERVAL_NS = 1_000_000_000
KINDS = frozenset({"i2c_errors", "vanish", "stall", "vibration"})
# a gain beyond this would clip the ±16 g range long before; it is a typo, not a fault
MAX_GAIN = 1000.0


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One scheduled fault, active while start ≤ real time < end."""

    id: str
    kind: str
    start_s: float
    end_s: float
    rate: float = 0.0
    stall_ms: float = 0.0
    gain: float = 1.0


def _number(entry: dict[str, Any], key: str, default: float | None = None) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"fault {entry.get('id')!r}: {key} must be a finite number")
    return float(value)


def parse_schedule(text: str) -> tuple[float, list[FaultWindow]]:
    """(wall offset in seconds, windows) from the file's JSON; ValueError names what is wrong."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("the fault file must hold a JSON object")
    offset = _number(raw, "wall_offset_seconds", 0.0)
    entries = raw.get("faults", [])
    if not isinstance(entries, list):
        raise ValueError("faults must be a list")
    windows: list[FaultWindow] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("each fault must be an object")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise ValueError(f"fault {entry.get('id')!r}: kind must be one of {sorted(KINDS)}")
        rate = _number(entry, "rate", 0.0)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault {entry.get('id')!r}: rate must be between 0 and 1")
        stall_ms = _number(entry, "stall_ms", 0.0)
        if not 0.0 <= stall_ms <= 10_000.0:
            raise ValueError(f"fault {entry.get('id')!r}: stall_ms must be between 0 and 10000")
        gain = _number(entry, "gain", 1.0)
        if not 0.0 <= gain <= MAX_GAIN:
            raise ValueError(f"fault {entry.get('id')!r}: gain must be between 0 and {MAX_GAIN:g}")
        windows.append(
            FaultWindow(
                id=str(entry.get("id", "")),
                kind=str(kind),
                start_s=_number(entry, "start"),
                end_s=_number(entry, "end"),
                rate=rate,
                stall_ms=stall_ms,
                gain=gain,
            )
        )
    return offset, windows


class FaultPlan:
    """The schedule as last read from `path`, re-read at most once per second of `monotonic_ns`."""

    def __init__(
        self,
        path: Path,
        *,
        realtime_s: Callable[[], float] = time.time,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.path = path
        self._realtime_s = realtime_s
        self._monotonic_ns = monotonic_ns
        self.wall_offset_ns = 0
        self.windows: list[FaultWindow] = []
        self._next_poll_ns = 0
        self._mtime_ns: int | None = None
        self._complained = ""
        self._stalled: set[str] = set()
        self.poll()

    def poll(self) -> None:
        """Re-read the file if a second has passed and it changed."""
        now = self._monotonic_ns()
        if now < self._next_poll_ns:
            return
        self._next_poll_ns = now + POLL_INTERVAL_NS
        try:
            mtime_ns = self.path.stat().st_mtime_ns
            if mtime_ns == self._mtime_ns:
                return
            offset_s, windows = parse_schedule(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.wall_offset_ns, self.windows, self._mtime_ns = 0, [], None
            return
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            if str(exc) != self._complained:
                log.warning("fault file %s ignored: %s", self.path, exc)
                self._complained = str(exc)
            return
        self._mtime_ns, self._complained = mtime_ns, ""
        if round(offset_s * 1e9) != self.wall_offset_ns:
            log.warning("fault injection: wall clock offset now %+.3f s", offset_s)
        self.wall_offset_ns = round(offset_s * 1e9)
        self.windows = windows

    def active(self, kind: str) -> FaultWindow | None:
        """The first window of `kind` covering the real time now."""
        now = self._realtime_s()
        for window in self.windows:
            if window.kind == kind and window.start_s <= now < window.end_s:
                return window
        return None

    def take_stall_ns(self) -> int:
        """A stall due now (once per window), in ns; 0 when none."""
        window = self.active("stall")
        if window is None or window.id in self._stalled:
            return 0
        self._stalled.add(window.id)
        log.warning("fault injection: bus stalls %.0f ms (%s)", window.stall_ms, window.id)
        return int(window.stall_ms * 1e6)


class FaultClock(MonotonicClock):
    """CLOCK_MONOTONIC whose wall offset includes the plan's injected wall-clock step."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def wall_offset_ns(self) -> int:
        self.plan.poll()
        return super().wall_offset_ns() + self.plan.wall_offset_ns
