"""End to end on the manual clock: simulated MPU-6050 → real driver, FIFO, resampler → features."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analytics.signals import velocity_rms_mms
from clocks import FakeClock, ManualClock
from wilo_backend.analytics import Analytics
from wilo_backend.config import AnalyticsConfig
from wilo_backend.model import SamplerStats
from wilo_backend.sensor.mpu6050 import Mpu6050, plan_setup
from wilo_backend.sensor.sim import SimMpu6050, SimSignal
from wilo_backend.sensor.stream import FifoStream, WallOffset


def run_simulator(
    tmp_path: Path, signal: SimSignal, seconds: float, clock_error: float = 0.0
) -> Analytics:
    clock = ManualClock()
    sim = SimMpu6050(clock, signal, clock_error=clock_error)
    driver = Mpu6050(sim, clock)
    setup = plan_setup("fifo", "resample", 2)
    driver.configure(setup)
    wall = WallOffset(clock)
    stream = FifoStream(driver, setup, clock, wall, SamplerStats(), 15_000_000, resample=True)
    analytics = Analytics(
        AnalyticsConfig(),
        tmp_path,
        fsync=False,
        clock=FakeClock((clock.offset_ns + clock.t_ns) / 1e9 + seconds),
    )
    analytics.open()
    end_ns = clock.t_ns + int(seconds * 1e9)
    while clock.t_ns < end_ns:
        for batch in stream.step():
            analytics.feed(batch)
    return analytics


@pytest.mark.parametrize("clock_error", [0.0, 0.01])
def test_simulated_24_5_hz_pump_gives_the_analytic_features(
    tmp_path: Path, clock_error: float
) -> None:
    amplitude_ms2 = 1.2
    signal = SimSignal(vibration_hz=24.5, vibration_ms2=amplitude_ms2, harmonics=0, noise_ms2=0.0)
    analytics = run_simulator(tmp_path, signal, 8.0, clock_error)
    assert analytics.stats().gaps == 0
    rows = analytics.features(3600, 1000)
    assert len(rows) >= 6
    # skip the first windows: the timebase regression and the resampler settle in
    for row in rows[3:]:
        assert row["x_dominant_hz"] == pytest.approx(24.5, abs=0.5)
        assert row["x_rms_ms2"] == pytest.approx(amplitude_ms2 / math.sqrt(2), rel=0.01)
        assert row["x_vrms_mms"] == pytest.approx(velocity_rms_mms(24.5, amplitude_ms2), rel=0.02)
        # the simulator puts half the amplitude on Y (in quadrature)
        assert row["y_vrms_mms"] == pytest.approx(
            velocity_rms_mms(24.5, amplitude_ms2 / 2), rel=0.02
        )
    assert analytics.zone == "D"  # 1.2 m/s² at 24.5 Hz is 5.5 mm/s


def test_simulated_fundamental_and_harmonic_show_as_two_peaks(tmp_path: Path) -> None:
    # harmonics=1: 24.5 Hz at 1.0 m/s² and 49 Hz at 0.5 m/s²
    signal = SimSignal(vibration_hz=24.5, vibration_ms2=1.0, harmonics=1, noise_ms2=0.02)
    analytics = run_simulator(tmp_path, signal, 8.0)
    spectrum = analytics.spectrum(4)
    amplitude = spectrum["x"]
    by_size = sorted(range(len(amplitude)), key=amplitude.__getitem__, reverse=True)
    peaks = [k for k in by_size if all(abs(k - j) > 2 for j in by_size[: by_size.index(k)])][:2]
    assert sorted(spectrum["frequencies_hz"][k] for k in peaks) == [
        pytest.approx(24.5, abs=0.5),
        pytest.approx(49.0, abs=0.5),
    ]
    assert amplitude[49] == pytest.approx(0.5, rel=0.05)  # 49 Hz sits on a bin
