"""Shared set-up for sensor tests: a simulated MPU-6050 on a manual clock."""

from __future__ import annotations

from clocks import ManualClock
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
