"""The small I2C bus interface the MPU-6050 driver is written against; smbus2.SMBus has it."""

from __future__ import annotations

from typing import Any, Protocol

# SMBus/I2C block reads are limited to 32 bytes by the kernel's smbus emulation.
SMBUS_BLOCK_MAX = 32


class Bus(Protocol):
    """The subset of `smbus2.SMBus` the driver uses; the simulator implements the same."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None: ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def i2c_rdwr(self, *i2c_msgs: Any) -> None: ...

    def close(self) -> None: ...


def burst_read(
    bus: Bus, address: int, register: int, length: int, use_rdwr: bool, chunk_bytes: int = 32
) -> bytes:
    """Read `length` bytes from `register` on, in one I2C transaction when `use_rdwr`.

    One combined write-register/read-N transaction keeps a FIFO read whole; the fallback splits it
    into SMBus block reads of ≤ `chunk_bytes` (≤ 32), which the chip serves from the same register
    (the FIFO port does not auto-increment), so callers pass a whole number of samples per chunk.
    """
    if use_rdwr:
        from smbus2 import i2c_msg

        write = i2c_msg.write(address, [register])
        read = i2c_msg.read(address, length)
        bus.i2c_rdwr(write, read)
        return bytes(read)
    out = bytearray()
    while len(out) < length:
        chunk = min(chunk_bytes, SMBUS_BLOCK_MAX, length - len(out))
        out += bytes(bus.read_i2c_block_data(address, register, chunk))
    return bytes(out)
