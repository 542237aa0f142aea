"""The soak test's fault hook: the JSON schedule, and the simulator obeying it on a manual clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clocks import ManualClock
from wilo_backend.config import ConfigError, load_config
from wilo_backend.sensor.faults import FaultClock, FaultPlan, parse_schedule
from wilo_backend.sensor.fifo import FifoReader
from wilo_backend.sensor.mpu6050 import Mpu6050, plan_setup
from wilo_backend.sensor.sim import SimMpu6050
from wilo_backend.sensor.timebase import Timebase


class FakeTime:
    """Real-clock seconds and monotonic ns the plan reads, moved by the test."""

    def __init__(self) -> None:
        self.real_s = 1_800_000_000.0
        self.mono_ns = 0

    def advance(self, seconds: float) -> None:
        self.real_s += seconds
        self.mono_ns += int(seconds * 1e9)


def write(path: Path, offset_s: float = 0.0, *faults: dict[str, object]) -> None:
    path.write_text(json.dumps({"wall_offset_seconds": offset_s, "faults": list(faults)}))


def plan_for(path: Path, now: FakeTime) -> FaultPlan:
    return FaultPlan(path, realtime_s=lambda: now.real_s, monotonic_ns=lambda: now.mono_ns)


def test_schedule_errors_name_the_fault(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'b1': rate"):
        parse_schedule(json.dumps({"faults": [{"id": "b1", "kind": "i2c_errors", "rate": 2}]}))
    with pytest.raises(ValueError, match="kind must be one of"):
        parse_schedule(json.dumps({"faults": [{"id": "x", "kind": "fire", "start": 0, "end": 1}]}))
    with pytest.raises(ValueError, match="wall_offset_seconds"):
        parse_schedule(json.dumps({"wall_offset_seconds": "soon"}))


def test_plan_rereads_once_a_second_and_keeps_the_last_good_schedule(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    now = FakeTime()
    plan = plan_for(path, now)
    assert plan.wall_offset_ns == 0 and plan.windows == []  # no file: no faults
    write(path, -86400.0)
    plan.poll()
    assert plan.wall_offset_ns == 0  # polled less than a second ago
    now.advance(1.0)
    plan.poll()
    assert plan.wall_offset_ns == -86_400 * 10**9
    path.write_text("{not json")
    now.advance(1.0)
    plan.poll()
    assert plan.wall_offset_ns == -86_400 * 10**9  # a torn rewrite does not undo the schedule


def test_fault_clock_adds_the_injected_offset(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    write(path, 3600.0)
    clock = FaultClock(FaultPlan(path))
    plain = FaultClock(FaultPlan(tmp_path / "none"))
    assert clock.wall_offset_ns() - plain.wall_offset_ns() > 3599e9


def test_config_takes_an_absolute_fault_file_only(tmp_path: Path) -> None:
    config = load_config(None, environ={}, overrides={"sensor": {"sim": {"fault_file": "/x.json"}}})
    assert config.sensor.sim.fault_file == "/x.json"
    with pytest.raises(
        ConfigError, match=r"sensor\.sim\.fault_file: 'x\.json' must be an absolute path"
    ):
        load_config(None, environ={}, overrides={"sensor": {"sim": {"fault_file": "x.json"}}})


def _reader(tmp_path: Path) -> tuple[FakeTime, ManualClock, SimMpu6050, FifoReader]:
    now = FakeTime()
    clock = ManualClock()
    sim = SimMpu6050(clock, faults=plan_for(tmp_path / "faults.json", now))
    driver = Mpu6050(sim, clock)
    setup = plan_setup("fifo", "resample", 2)
    driver.configure(setup)
    return now, clock, sim, FifoReader(driver, clock, Timebase(setup.sample_rate_hz))


def _poll_for(reader: FifoReader, clock: ManualClock, seconds: float) -> None:
    for _ in range(round(seconds / 0.015)):
        clock.sleep_ns(15_000_000)
        try:
            reader.poll()
        except Exception:  # a vanished device ends the polls, as it ends the stream
            return


def test_scheduled_i2c_burst_fails_transfers_only_in_its_window(tmp_path: Path) -> None:
    now, clock, _sim, reader = _reader(tmp_path)
    t = now.real_s
    write(
        tmp_path / "faults.json",
        0.0,
        {"id": "b", "kind": "i2c_errors", "start": t + 2, "end": t + 3, "rate": 0.3},
    )
    now.advance(1.0)
    _poll_for(reader, clock, 0.5)
    assert reader.counters.i2c_errors == 0
    now.advance(1.5)  # inside the burst
    _poll_for(reader, clock, 0.5)
    assert reader.counters.i2c_errors > 0


def test_scheduled_stall_overflows_the_fifo_once(tmp_path: Path) -> None:
    now, clock, _sim, reader = _reader(tmp_path)
    _poll_for(reader, clock, 0.5)
    t = now.real_s
    write(
        tmp_path / "faults.json",
        0.0,
        {"id": "s", "kind": "stall", "start": t + 1, "end": t + 2, "stall_ms": 400},
    )
    now.advance(1.5)  # one transfer takes 400 ms: more than the FIFO's 170 ms
    _poll_for(reader, clock, 0.5)
    assert reader.counters.overflows == 1 and reader.counters.lost > 300
    _poll_for(reader, clock, 0.5)  # still inside the window: once only
    assert reader.counters.overflows == 1


def test_scheduled_vanish_and_return_power_cycled(tmp_path: Path) -> None:
    now, _clock, sim, _ = _reader(tmp_path)
    t = now.real_s
    write(
        tmp_path / "faults.json", 0.0, {"id": "v", "kind": "vanish", "start": t + 1, "end": t + 2}
    )
    now.advance(1.5)
    with pytest.raises(OSError):
        sim.read_byte_data(0x68, 0x75)
    now.advance(1.0)  # back, power-cycled: asleep again
    assert sim.read_byte_data(0x68, 0x75) == 0x68
    assert sim.read_byte_data(0x68, 0x6B) & 0x40


def _x_rms(reader: FifoReader, clock: ManualClock, seconds: float) -> float:
    rows = []
    for _ in range(round(seconds / 0.015)):
        clock.sleep_ns(15_000_000)
        got = reader.poll()
        if got is not None and len(got.samples):
            rows.append(got.samples[:, 0].astype(np.float64))
    x = np.concatenate(rows)
    return float(np.sqrt(np.mean((x - x.mean()) ** 2)))


def test_scheduled_vibration_scales_the_pump_only_in_its_window(tmp_path: Path) -> None:
    now, clock, _sim, reader = _reader(tmp_path)
    t = now.real_s
    write(
        tmp_path / "faults.json",
        0.0,
        {"id": "w", "kind": "vibration", "start": t + 2, "end": t + 4, "gain": 4.0},
    )
    now.advance(1.0)
    before = _x_rms(reader, clock, 0.5)
    now.advance(1.5)  # inside the window
    worn = _x_rms(reader, clock, 0.5)
    now.advance(2.0)  # after it
    after = _x_rms(reader, clock, 0.5)
    assert worn == pytest.approx(4 * before, rel=0.1)
    assert after == pytest.approx(before, rel=0.1)


def test_vibration_gain_out_of_range_is_named() -> None:
    fault = {"id": "w1", "kind": "vibration", "start": 0, "end": 1, "gain": -2}
    with pytest.raises(ValueError, match="'w1': gain must be between 0 and 1000"):
        parse_schedule(json.dumps({"faults": [fault]}))
