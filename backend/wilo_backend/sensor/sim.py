"""Register-level MPU-6050 simulator behind the Bus interface, faithful to the chip's timing."""

from __future__ import annotations

import ctypes
import errno
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from wilo_backend.model import STANDARD_GRAVITY_MS2
from wilo_backend.sensor import registers as r
from wilo_backend.sensor.clock import Clock
from wilo_backend.sensor.faults import FaultPlan

_I2C_M_RD = 0x0001
_BITS_PER_BYTE = 9  # 8 data bits + ACK


@dataclass(frozen=True)
class SimSignal:
    """What the simulated pump does to the sensor: gravity on Z, a vibration and its harmonics.

    X carries the vibration, Y half of it a quarter period later, Z gravity plus a fifth of it;
    harmonic k has amplitude 1/k of the fundamental. `harmonics=0, noise_ms2=0` is a pure sine.
    """

    vibration_hz: float = 24.5
    vibration_ms2: float = 1.5
    harmonics: int = 3
    noise_ms2: float = 0.05
    gravity_ms2: float = STANDARD_GRAVITY_MS2

    def accel_ms2(self, t_s: npt.NDArray[np.float64], rng: np.random.Generator) -> Any:
        """(n, 3) acceleration at true times `t_s` (seconds)."""
        out = np.zeros((t_s.shape[0], 3))
        out[:, 2] = self.gravity_ms2
        for k in range(1, self.harmonics + 2):
            amplitude = self.vibration_ms2 / k
            phase = 2.0 * math.pi * self.vibration_hz * k * t_s
            out[:, 0] += amplitude * np.sin(phase)
            out[:, 1] += 0.5 * amplitude * np.cos(phase)
            out[:, 2] += 0.2 * amplitude * np.sin(phase)
        if self.noise_ms2 > 0:
            out += rng.normal(0.0, self.noise_ms2, out.shape)
        return out


def _power_on_registers() -> bytearray:
    regs = bytearray(128)
    regs[r.PWR_MGMT_1] = r.SLEEP
    regs[r.WHO_AM_I] = r.WHO_AM_I_VALUE
    return regs


class SimMpu6050:
    """An MPU-6050 on an I2C bus, driven by a Clock.

    Chip time runs at (1 + clock_error) × host time from power-on. The accelerometer registers
    update at 1 kHz of chip time; the sample clock ticks at gyro rate / (1 + SMPLRT_DIV) and each
    tick writes the newest accelerometer update into the FIFO (so 800 Hz from 8 kHz / 10 picks 4
    of every 5 updates unevenly, as the chip does). The FIFO holds 1024 bytes; when full, the
    oldest bytes are overwritten and INT_STATUS.FIFO_OFLOW is set. Every transfer takes its bus
    time on the clock (400 kHz, 9 bits a byte). Faults: `fail_next`, `i2c_error_rate`, `vanish` /
    `reappear` (a power cycle: registers back to power-on), `misalign_fifo`, no I2C_RDWR support,
    and `faults`: a FaultPlan (sensor/faults.py) whose scheduled windows apply while it runs
    (its `vibration` windows scale the signal's vibration).
    """

    def __init__(
        self,
        clock: Clock,
        signal: SimSignal | None = None,
        *,
        address: int = 0x68,
        clock_error: float = 0.0,
        i2c_error_rate: float = 0.0,
        i2c_hz: float = 400_000.0,
        supports_rdwr: bool = True,
        seed: int = 1,
        faults: FaultPlan | None = None,
    ) -> None:
        self.clock = clock
        self.signal = signal or SimSignal()
        self.address = address
        self.clock_error = clock_error
        self.i2c_error_rate = i2c_error_rate
        self.i2c_hz = i2c_hz
        self.supports_rdwr = supports_rdwr
        self.rng = np.random.default_rng(seed)
        # the simulated chip's own truth, which a real chip cannot tell: what the driver's loss
        # and error counts are checked against (three integers, nothing that grows)
        self.transfers = 0
        self.failed_transfers = 0
        self.samples_produced = 0
        self._fail_next = 0
        self._vanished = False
        self.faults = faults
        self._scheduled_vanish = False
        self._power_on(clock.now_ns())

    # ---- fault injection -------------------------------------------------------------------

    def fail_next(self, transfers: int) -> None:
        """The next `transfers` I2C transfers fail with EREMOTEIO (a burst of bus errors)."""
        self._fail_next += transfers

    def vanish(self) -> None:
        """The device stops answering (cable pulled)."""
        self._vanished = True

    def reappear(self) -> None:
        """The device answers again, freshly powered on (asleep, FIFO off)."""
        self._vanished = False
        self._power_on(self.clock.now_ns())

    def misalign_fifo(self) -> None:
        """Push one stray byte into the FIFO, as a torn read on a real bus would leave it."""
        self._advance()
        self._fifo.append(0)

    def sample_ticks(self) -> int:
        """Sample-clock ticks since power-on, whether the FIFO stored them or not (ground truth)."""
        return math.floor(self._chip_seconds(self.clock.now_ns()) * self._sample_rate_hz()) + 1

    # ---- chip model -------------------------------------------------------------------------

    def _power_on(self, now_ns: int) -> None:
        self.regs = _power_on_registers()
        self._origin_ns = now_ns
        self._fifo = bytearray()
        self._int_status = 0
        self._next_sample = 0

    def _chip_seconds(self, now_ns: int) -> float:
        return (now_ns - self._origin_ns) / 1e9 * (1.0 + self.clock_error)

    def _true_seconds(self, chip_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # The vibration happens in true (host) time; the chip samples it on its own clock.
        return self._origin_ns / 1e9 + chip_s / (1.0 + self.clock_error)

    def _sample_rate_hz(self) -> float:
        return r.sample_rate_hz(self.regs[r.CONFIG] & 0x07, self.regs[r.SMPLRT_DIV])

    def _awake(self) -> bool:
        return not self.regs[r.PWR_MGMT_1] & r.SLEEP

    def _fifo_filling(self) -> bool:
        return (
            self._awake()
            and bool(self.regs[r.USER_CTRL] & r.USER_FIFO_EN)
            and bool(self.regs[r.FIFO_EN] & r.ACCEL_FIFO_EN)
        )

    def _accel_lsb(self, updates: npt.NDArray[np.int64]) -> npt.NDArray[np.int16]:
        """Register values (n, 3) of the given 1 kHz accelerometer updates."""
        range_g = {v: g for g, v in r.AFS_SEL_BITS.items()}[self.regs[r.ACCEL_CONFIG] & 0x18]
        signal = self.signal
        worn = self.faults.active("vibration") if self.faults is not None else None
        if worn is not None:
            signal = replace(signal, vibration_ms2=signal.vibration_ms2 * worn.gain)
        accel = signal.accel_ms2(self._true_seconds(updates / r.ACCEL_UPDATE_HZ), self.rng)
        lsb = np.rint(accel / STANDARD_GRAVITY_MS2 * r.LSB_PER_G[range_g])
        clipped: npt.NDArray[np.int16] = np.clip(lsb, -32768, 32767).astype(np.int16)
        return clipped

    def _sync_sample_clock(self) -> None:
        """The next sample tick after now (used when the FIFO starts or the rate changes)."""
        rate = self._sample_rate_hz()
        self._next_sample = math.floor(self._chip_seconds(self.clock.now_ns()) * rate) + 1

    def _advance(self) -> None:
        """Write every sample tick up to now into the FIFO."""
        if not self._fifo_filling():
            return
        rate = self._sample_rate_hz()
        last = math.floor(self._chip_seconds(self.clock.now_ns()) * rate)
        count = last - self._next_sample + 1
        if count <= 0:
            return
        keep = min(count, r.FIFO_SIZE_BYTES // r.ACCEL_SAMPLE_BYTES + 2)
        ticks = np.arange(last - keep + 1, last + 1, dtype=np.int64)
        # each tick latches the newest 1 kHz update at or before it
        updates = np.floor(ticks / rate * r.ACCEL_UPDATE_HZ + 1e-6).astype(np.int64)
        data = self._accel_lsb(updates).astype(">i2").tobytes()
        added = count * r.ACCEL_SAMPLE_BYTES
        self._next_sample = last + 1
        self.samples_produced += count
        if len(self._fifo) + added > r.FIFO_SIZE_BYTES:
            self._int_status |= r.FIFO_OFLOW
            self._fifo = (self._fifo + data)[-r.FIFO_SIZE_BYTES :]
        else:
            self._fifo += data

    def _read_register(self, register: int) -> int:
        if register == r.FIFO_R_W:
            if not self._fifo:
                return 0xFF
            value = self._fifo[0]
            del self._fifo[0]
            return value
        if register == r.FIFO_COUNTH:
            return len(self._fifo) >> 8
        if register == r.FIFO_COUNTL:
            return len(self._fifo) & 0xFF
        if register == r.INT_STATUS:
            value = self._int_status
            self._int_status = 0  # cleared by reading
            return value
        return self.regs[register & 0x7F]

    def _read(self, register: int, length: int) -> bytes:
        self._advance()
        if register == r.FIFO_R_W:
            # the FIFO port does not auto-increment: every byte comes from the FIFO
            take = min(length, len(self._fifo))
            out = bytes(self._fifo[:take]) + b"\xff" * (length - take)
            del self._fifo[:take]
            return out
        if r.ACCEL_XOUT_H <= register < r.ACCEL_XOUT_H + 6 and self._awake():
            update = math.floor(self._chip_seconds(self.clock.now_ns()) * r.ACCEL_UPDATE_HZ)
            accel = self._accel_lsb(np.array([update], dtype=np.int64))
            self.regs[r.ACCEL_XOUT_H : r.ACCEL_XOUT_H + 6] = accel.astype(">i2").tobytes()
        if register == r.FIFO_COUNTH and length >= 2:
            # a two-byte read latches both halves of the count together
            count = len(self._fifo)
            return bytes([count >> 8, count & 0xFF]) + bytes(
                self._read_register(reg) for reg in range(register + 2, register + length)
            )
        return bytes(self._read_register(reg) for reg in range(register, register + length))

    def _write(self, register: int, value: int) -> None:
        self._advance()
        if register == r.PWR_MGMT_1 and value & r.DEVICE_RESET:
            self._power_on(self._origin_ns)
            return
        if register == r.USER_CTRL:
            if value & r.USER_FIFO_RESET:
                self._fifo.clear()
                self._int_status &= ~r.FIFO_OFLOW
            was_on = self._fifo_filling()
            self.regs[register] = value & ~r.USER_FIFO_RESET  # the reset bit clears itself
            if self._fifo_filling() and not was_on:
                self._sync_sample_clock()
            return
        was_on = self._fifo_filling()
        self.regs[register & 0x7F] = value & 0xFF
        rate_changed = register in (r.CONFIG, r.SMPLRT_DIV)
        if self._fifo_filling() and (not was_on or rate_changed):
            self._sync_sample_clock()

    # ---- the bus ------------------------------------------------------------------------------

    def _bus_time(self, payload_bytes: int) -> None:
        """The transfer's time on the wire passes (after the chip served it: reads snapshot
        the FIFO when they start; samples produced meanwhile stay in the FIFO)."""
        self.clock.sleep_ns(int((3 + payload_bytes) * _BITS_PER_BYTE / self.i2c_hz * 1e9))

    def _scheduled_faults(self, plan: FaultPlan) -> float:
        """Apply the fault plan's windows now; returns the I2C error rate in force."""
        plan.poll()
        gone = plan.active("vanish") is not None
        if gone and not self._vanished:
            self._vanished = self._scheduled_vanish = True
        elif not gone and self._scheduled_vanish:
            self._scheduled_vanish = False
            self.reappear()
        self.clock.sleep_ns(plan.take_stall_ns())
        burst = plan.active("i2c_errors")
        return max(self.i2c_error_rate, burst.rate if burst else 0.0)

    def _transfer(self, i2c_addr: int, payload_bytes: int) -> None:
        """Count a transfer and fail it as the injected faults say."""
        self.transfers += 1
        error_rate = self.i2c_error_rate
        if self.faults is not None:
            error_rate = self._scheduled_faults(self.faults)
        if self._vanished or i2c_addr != self.address or self._fail_next > 0:
            self._bus_time(0)
        if i2c_addr != self.address or self._vanished:
            self.failed_transfers += 1
            raise OSError(errno.EREMOTEIO, f"Remote I/O error (no ACK from 0x{i2c_addr:02x})")
        if self._fail_next > 0 or (error_rate > 0 and self.rng.random() < error_rate):
            self._fail_next = max(0, self._fail_next - 1)
            self.failed_transfers += 1
            raise OSError(errno.EREMOTEIO, "Remote I/O error (injected)")

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        self._transfer(i2c_addr, 1)
        value = self._read(register, 1)[0]
        self._bus_time(1)
        return value

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        self._transfer(i2c_addr, 0)
        self._write(register, value)
        self._bus_time(1)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        if not 0 < length <= 32:
            raise ValueError(f"SMBus block read length {length} is outside 1..32")
        self._transfer(i2c_addr, length)
        values = list(self._read(register, length))
        self._bus_time(length)
        return values

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        """Combined transactions as smbus2's i2c_msg: [write reg, read n] or [write reg value]."""
        if not self.supports_rdwr:
            raise OSError(errno.EOPNOTSUPP, "I2C_RDWR not supported by this adapter")
        payload = sum(int(m.len) for m in i2c_msgs)
        self._transfer(int(i2c_msgs[0].addr), payload)
        register: int | None = None
        for msg in i2c_msgs:
            if msg.flags & _I2C_M_RD:
                if register is None:
                    raise OSError(errno.EINVAL, "read without a register address first")
                data = self._read(register, int(msg.len))
                ctypes.memmove(msg.buf, data, len(data))
            else:
                written = bytes(msg)
                register = written[0]
                for offset, value in enumerate(written[1:]):
                    self._write(register + offset, value)
        self._bus_time(payload)

    def close(self) -> None:
        """Nothing to release; present because smbus2.SMBus has it."""
