"""Shared set-up for sensor tests: a simulated MPU-6050 on a manual clock."""

from __future__ import annotations

from typing import Any

from clocks import ManualClock
from wilo_backend.sensor.bus import Bus
from wilo_backend.sensor.mpu6050 import Mpu6050, SensorSetup, plan_setup
from wilo_backend.sensor.sim import SimMpu6050, SimSignal

PURE_100HZ = SimSignal(vibration_hz=100.0, vibration_ms2=5.0, harmonics=0, noise_ms2=0.0)


def configured(
    mode: str = "fifo", rate_mode: str = "resample", **sim_options: object
) -> tuple[ManualClock, SimMpu6050, Mpu6050, SensorSetup]:
    clock = ManualClock()
    sim = SimMpu6050(clock, **sim_options)  # type: ignore[arg-type]
    driver = Mpu6050(sim, clock)
    setup = plan_setup(mode, rate_mode, 2)
    driver.configure(setup)
    return clock, sim, driver, setup


class RecordingBus:
    """A Bus passing every call on to another, keeping the register writes that went through.

    The driver's start-up sequence is checked against this log rather than against a list the
    shipped simulator would have to keep (and grow) for tests.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.writes: list[tuple[int, int]] = []  # (register, value), in order

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        return self.bus.read_byte_data(i2c_addr, register)

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        self.bus.write_byte_data(i2c_addr, register, value)
        self.writes.append((register, value))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        return self.bus.read_i2c_block_data(i2c_addr, register, length)

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        self.bus.i2c_rdwr(*i2c_msgs)

    def close(self) -> None:
        self.bus.close()


def start_up_writes(
    mode: str, rate_mode: str = "resample", range_g: int = 2
) -> list[tuple[int, int]]:
    """The register writes the driver makes to configure a simulated chip."""
    clock = ManualClock()
    bus = RecordingBus(SimMpu6050(clock))
    Mpu6050(bus, clock).configure(plan_setup(mode, rate_mode, range_g))
    return bus.writes
