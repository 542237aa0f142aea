"""MPU-6050 driver written once against the Bus protocol: start-up, FIFO reads, polled reads."""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wilo_backend.model import STANDARD_GRAVITY_MS2
from wilo_backend.sensor import registers as r
from wilo_backend.sensor.bus import Bus, burst_read
from wilo_backend.sensor.clock import Clock

RESET_SETTLE_NS = 100_000_000  # the register map asks for 100 ms after DEVICE_RESET
# errors that mean "this adapter cannot do combined I2C_RDWR transactions", not "the bus failed"
_RDWR_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS}
_ACCEL = struct.Struct(">hhh")
# SMBus block-read fallback: 30 bytes = 5 whole samples per transaction (limit is 32)
_FALLBACK_CHUNK_BYTES = 30


class SensorError(Exception):
    """The sensor is missing, answers wrongly, or failed; the caller reconnects later."""


@dataclass(frozen=True, slots=True)
class SensorSetup:
    """What the driver programmed."""

    fifo: bool
    dlpf_cfg: int
    smplrt_div: int
    sample_rate_hz: float
    accel_range_g: int


def plan_setup(mode: str, fifo_rate_mode: str, accel_range_g: int) -> SensorSetup:
    """Registers for a mode: fifo/resample = DLPF 184 Hz at 1 kHz; direct = DLPF off, 8 kHz / 10.

    Polled mode keeps the DLPF on too: it is the anti-alias filter the 800 Hz reads need.
    """
    if accel_range_g not in r.AFS_SEL_BITS:
        raise ValueError(f"accel_range_g {accel_range_g} is not one of 2, 4, 8, 16")
    if mode == "fifo" and fifo_rate_mode == "direct":
        dlpf, div = r.DLPF_OFF, 9
    elif mode in ("fifo", "polled") and fifo_rate_mode in ("resample", "direct"):
        dlpf, div = r.DLPF_184HZ, 0
    else:
        raise ValueError(f"unknown mode {mode!r} / fifo_rate_mode {fifo_rate_mode!r}")
    return SensorSetup(
        fifo=mode == "fifo",
        dlpf_cfg=dlpf,
        smplrt_div=div,
        sample_rate_hz=r.sample_rate_hz(dlpf, div),
        accel_range_g=accel_range_g,
    )


class Mpu6050:
    """One MPU-6050 at `address` on `bus`. Every method may raise OSError from the bus."""

    def __init__(self, bus: Bus, clock: Clock, address: int = 0x68) -> None:
        self.bus = bus
        self.clock = clock
        self.address = address
        self.use_rdwr = True
        self.scale_ms2 = STANDARD_GRAVITY_MS2 / r.LSB_PER_G[2]

    def configure(self, setup: SensorSetup) -> None:
        """Check WHO_AM_I, reset, wake on the X-gyro PLL, set range, DLPF, rate and the FIFO."""
        who = self.bus.read_byte_data(self.address, r.WHO_AM_I)
        if who != r.WHO_AM_I_VALUE:
            raise SensorError(
                f"device at 0x{self.address:02x} is not an MPU-6050: "
                f"WHO_AM_I reads 0x{who:02x}, expected 0x{r.WHO_AM_I_VALUE:02x}"
            )
        self._write(r.PWR_MGMT_1, r.DEVICE_RESET)
        self.clock.sleep_ns(RESET_SETTLE_NS)
        self._write(r.PWR_MGMT_1, r.CLKSEL_PLL_XGYRO)  # awake, clocked from the X gyro PLL
        self._write(r.ACCEL_CONFIG, r.AFS_SEL_BITS[setup.accel_range_g])
        self._write(r.CONFIG, setup.dlpf_cfg)
        self._write(r.SMPLRT_DIV, setup.smplrt_div)
        self.scale_ms2 = STANDARD_GRAVITY_MS2 / r.LSB_PER_G[setup.accel_range_g]
        self._write(r.USER_CTRL, 0)
        if setup.fifo:
            self._write(r.INT_ENABLE, r.FIFO_OFLOW)
            self._write(r.FIFO_EN, r.ACCEL_FIFO_EN)
            self.use_rdwr = self._probe_rdwr()
            self.reset_fifo()
        else:
            self._write(r.FIFO_EN, 0)

    def _write(self, register: int, value: int) -> None:
        self.bus.write_byte_data(self.address, register, value)

    def _probe_rdwr(self) -> bool:
        """Whether the adapter does combined transactions (some only do SMBus)."""
        try:
            who = burst_read(self.bus, self.address, r.WHO_AM_I, 1, use_rdwr=True)
        except OSError as exc:
            if exc.errno in _RDWR_UNSUPPORTED:
                return False
            raise
        except (AttributeError, NotImplementedError):
            return False
        return who[0] == r.WHO_AM_I_VALUE

    def reset_fifo(self) -> None:
        """Empty the FIFO and start filling again on a sample boundary."""
        self._write(r.USER_CTRL, r.USER_FIFO_RESET)
        self._write(r.USER_CTRL, r.USER_FIFO_EN)

    def fifo_enabled(self) -> bool:
        """USER_CTRL.FIFO_EN as the chip holds it (a failed write may or may not have landed)."""
        return bool(self.bus.read_byte_data(self.address, r.USER_CTRL) & r.USER_FIFO_EN)

    def fifo_overflowed(self) -> bool:
        """INT_STATUS.FIFO_OFLOW since the last look (reading clears it)."""
        return bool(self.bus.read_byte_data(self.address, r.INT_STATUS) & r.FIFO_OFLOW)

    def fifo_count(self) -> int:
        """FIFO_COUNT alone, one 2-byte transfer (never two single-byte reads that may tear)."""
        high, low = self.bus.read_i2c_block_data(self.address, r.FIFO_COUNTH, 2)
        return (high << 8) | low

    def read_fifo(self, samples: int) -> npt.NDArray[np.int16]:
        """`samples` whole accelerometer samples from the FIFO as (n, 3) int16 LSB."""
        raw = burst_read(
            self.bus,
            self.address,
            r.FIFO_R_W,
            samples * r.ACCEL_SAMPLE_BYTES,
            self.use_rdwr,
            _FALLBACK_CHUNK_BYTES,
        )
        return np.frombuffer(raw, dtype=">i2").astype(np.int16).reshape(samples, 3)

    def read_accel(self) -> tuple[int, int, int]:
        """The accelerometer data registers (a 6-byte block read at 0x3B), LSB."""
        raw = bytes(self.bus.read_i2c_block_data(self.address, r.ACCEL_XOUT_H, 6))
        x, y, z = _ACCEL.unpack(raw)
        return x, y, z
