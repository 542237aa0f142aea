"""MPU-6050 registers and bit fields (register map rev 4.2), shared by driver and simulator."""

from __future__ import annotations

SMPLRT_DIV = 0x19
CONFIG = 0x1A
GYRO_CONFIG = 0x1B
ACCEL_CONFIG = 0x1C
FIFO_EN = 0x23
INT_ENABLE = 0x38
INT_STATUS = 0x3A
ACCEL_XOUT_H = 0x3B
USER_CTRL = 0x6A
PWR_MGMT_1 = 0x6B
PWR_MGMT_2 = 0x6C
FIFO_COUNTH = 0x72
FIFO_COUNTL = 0x73
FIFO_R_W = 0x74
WHO_AM_I = 0x75

WHO_AM_I_VALUE = 0x68

# PWR_MGMT_1
DEVICE_RESET = 0x80
SLEEP = 0x40
CLKSEL_PLL_XGYRO = 0x01  # ±1 % over temperature, far better than the 8 MHz internal RC

# USER_CTRL
USER_FIFO_EN = 0x40
USER_FIFO_RESET = 0x04

# FIFO_EN
ACCEL_FIFO_EN = 0x08

# INT_ENABLE / INT_STATUS
FIFO_OFLOW = 0x10
DATA_RDY = 0x01

# CONFIG.DLPF_CFG: 0 = accel 260 Hz bandwidth and gyro rate 8 kHz; 1 = accel 184 Hz, gyro rate 1 kHz
DLPF_OFF = 0
DLPF_184HZ = 1

FIFO_SIZE_BYTES = 1024
ACCEL_SAMPLE_BYTES = 6
ACCEL_UPDATE_HZ = 1000.0  # the accelerometer registers update at 1 kHz whatever the sample rate

# ACCEL_CONFIG.AFS_SEL (bits 4:3) per full-scale range in g, and LSB per g
AFS_SEL_BITS = {2: 0 << 3, 4: 1 << 3, 8: 2 << 3, 16: 3 << 3}
LSB_PER_G = {2: 16384.0, 4: 8192.0, 8: 4096.0, 16: 2048.0}


def gyro_rate_hz(dlpf_cfg: int) -> float:
    """The gyroscope output rate the sample clock divides: 8 kHz with the DLPF off, else 1 kHz."""
    return 8000.0 if dlpf_cfg in (0, 7) else 1000.0


def sample_rate_hz(dlpf_cfg: int, smplrt_div: int) -> float:
    """Sample rate = gyro rate / (1 + SMPLRT_DIV) (register map §4.2)."""
    return gyro_rate_hz(dlpf_cfg) / (1 + smplrt_div)
