"""wilo-backend: 800 Hz MPU-6050 vibration sampling, CSV retention and a WebSocket dashboard API."""

__version__ = "0.1.0"
