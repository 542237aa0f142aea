"""The MPU-6050 driver against the register-level simulator: start-up writes, reads, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from clocks import ManualClock
from wilo_backend.sensor import registers as r
from wilo_backend.sensor.mpu6050 import Mpu6050, SensorError, plan_setup
from wilo_backend.sensor.sim import SimMpu6050

from .simhelp import RecordingBus, configured, start_up_writes

COMMON = [
    (r.PWR_MGMT_1, 0x80),  # device reset
    (r.PWR_MGMT_1, 0x01),  # awake, clock from the X-gyro PLL
    (r.ACCEL_CONFIG, 0x00),  # ±2 g
]


def test_fifo_resample_start_up_writes() -> None:
    assert start_up_writes("fifo", "resample") == [
        *COMMON,
        (r.CONFIG, 0x01),  # DLPF 184 Hz → gyro rate 1 kHz
        (r.SMPLRT_DIV, 0),  # 1 kHz / (1 + 0)
        (r.USER_CTRL, 0x00),
        (r.INT_ENABLE, 0x10),  # FIFO overflow flag
        (r.FIFO_EN, 0x08),  # accelerometer only: 6 bytes a sample
        (r.USER_CTRL, 0x04),  # FIFO reset
        (r.USER_CTRL, 0x40),  # FIFO on
    ]
    assert plan_setup("fifo", "resample", 2).sample_rate_hz == 1000.0


def test_fifo_direct_start_up_writes() -> None:
    writes = start_up_writes("fifo", "direct")
    assert writes[3:5] == [(r.CONFIG, 0x00), (r.SMPLRT_DIV, 9)]  # DLPF off: 8 kHz / 10
    assert plan_setup("fifo", "direct", 2).sample_rate_hz == 800.0


def test_polled_start_up_writes_leave_fifo_off() -> None:
    assert start_up_writes("polled") == [
        *COMMON,
        (r.CONFIG, 0x01),
        (r.SMPLRT_DIV, 0),
        (r.USER_CTRL, 0x00),
        (r.FIFO_EN, 0x00),
    ]


@pytest.mark.parametrize(("range_g", "bits"), [(4, 0x08), (8, 0x10), (16, 0x18)])
def test_accel_range_register_and_scale(range_g: int, bits: int) -> None:
    assert (r.ACCEL_CONFIG, bits) in start_up_writes("polled", range_g=range_g)
    clock = ManualClock()
    driver = Mpu6050(SimMpu6050(clock), clock)
    driver.configure(plan_setup("polled", "resample", range_g))
    clock.advance(5_000_000)
    z_ms2 = driver.read_accel()[2] * driver.scale_ms2
    assert z_ms2 == pytest.approx(9.80665, abs=0.5)


def test_wrong_who_am_i_is_refused_with_the_value() -> None:
    clock = ManualClock()
    sim = SimMpu6050(clock)
    sim.regs[r.WHO_AM_I] = 0x70
    bus = RecordingBus(sim)
    with pytest.raises(SensorError, match="WHO_AM_I reads 0x70, expected 0x68"):
        Mpu6050(bus, clock).configure(plan_setup("fifo", "resample", 2))
    assert bus.writes == []  # nothing written to a chip we do not know


def test_missing_device_raises_oserror() -> None:
    clock = ManualClock()
    sim = SimMpu6050(clock, address=0x69)
    with pytest.raises(OSError, match="no ACK from 0x68"):
        Mpu6050(sim, clock, 0x68).configure(plan_setup("fifo", "resample", 2))


def test_polled_read_is_one_six_byte_block_at_0x3b() -> None:
    clock, sim, driver, _ = configured("polled")
    clock.advance(3_000_000)
    before = sim.transfers
    x, _y, z = driver.read_accel()
    assert sim.transfers == before + 1
    assert abs(z - 16384) < 16384 * 0.05 + 0.25 * 16384  # gravity on Z plus the vibration
    assert abs(x) < 0.2 * 16384


def test_fifo_samples_come_in_whole_and_in_order() -> None:
    clock, _sim, driver, _ = configured("fifo", "resample")
    clock.advance(50_000_000)
    count = driver.fifo_count()
    assert count % 6 == 0 and 40 * 6 <= count <= 52 * 6
    samples = driver.read_fifo(count // 6)
    assert samples.shape == (count // 6, 3)
    assert np.all(np.abs(samples[:, 2] - 16384) < 0.3 * 16384)  # Z: gravity, never byte-swapped
    after = driver.fifo_count()  # the read took ~7 ms of bus time: only that many new samples
    assert after % 6 == 0 and after <= 10 * 6


def test_block_read_fallback_without_i2c_rdwr() -> None:
    clock, _sim, driver, _ = configured("fifo", "resample", supports_rdwr=False)
    assert driver.use_rdwr is False
    clock.advance(40_000_000)
    count = driver.fifo_count()
    samples = driver.read_fifo(count // 6)
    assert samples.shape[0] == count // 6 >= 30
    assert np.all(np.abs(samples[:, 2] - 16384) < 0.3 * 16384)


def test_direct_mode_picks_four_of_five_updates_unevenly() -> None:
    clock, _sim, driver, _ = configured("fifo", "direct")
    clock.advance(100_000_000)
    samples = driver.read_fifo(driver.fifo_count() // 6)
    # 800 Hz from the 1 kHz register: consecutive samples repeat no update but skip one in five
    assert 70 <= samples.shape[0] <= 82
    assert len({tuple(s) for s in samples.tolist()}) == samples.shape[0]


def test_plan_setup_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="accel_range_g 3"):
        plan_setup("fifo", "resample", 3)
    with pytest.raises(ValueError, match="unknown mode"):
        plan_setup("burst", "resample", 2)
