"""Features of known signals: dominant frequency, acceleration and velocity RMS, spectrum peaks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from analytics.signals import START_NS, tone_batches, velocity_rms_mms
from clocks import FakeClock
from wilo_backend.analytics import Analytics
from wilo_backend.analytics.features import column, make_plan, window_features
from wilo_backend.config import AnalyticsConfig
from wilo_backend.timestamps import iso_z


def analyse(tmp_path: Path, batches: object, config: AnalyticsConfig | None = None) -> Analytics:
    analytics = Analytics(
        config or AnalyticsConfig(), tmp_path, fsync=False, clock=FakeClock(START_NS / 1e9)
    )
    analytics.open()
    for batch in batches:  # type: ignore[attr-defined]
        analytics.feed(batch)
    return analytics


@pytest.mark.parametrize("frequency_hz", [24.5, 24.0, 49.0, 100.3, 180.0])
def test_single_tone_features_match_the_analytic_values(
    tmp_path: Path, frequency_hz: float
) -> None:
    amplitude_ms2 = 1.5
    analytics = analyse(tmp_path, tone_batches([(frequency_hz, amplitude_ms2)], 3, noise_ms2=0.01))
    latest = analytics.latest()
    assert latest is not None
    assert analytics.windows == 3
    assert latest["x_dominant_hz"] == pytest.approx(frequency_hz, abs=0.5)
    assert latest["x_rms_ms2"] == pytest.approx(amplitude_ms2 / math.sqrt(2), rel=0.01)
    expected_mms = velocity_rms_mms(frequency_hz, amplitude_ms2)
    assert latest["x_vrms_mms"] == pytest.approx(expected_mms, rel=0.02)
    assert latest["vrms_mms"] == latest["x_vrms_mms"]  # the worst axis carries the zone
    assert latest["x_crest"] == pytest.approx(math.sqrt(2), rel=0.05)
    # gravity is DC: the still axes show only the noise
    assert latest["z_rms_ms2"] < 0.02
    assert latest["y_vrms_mms"] < 0.05 * expected_mms


def test_24_5_hz_stays_within_half_a_hertz_to_a_tenth(tmp_path: Path) -> None:
    analytics = analyse(tmp_path, tone_batches([(24.5, 0.8)], 2))
    latest = analytics.latest()
    assert latest is not None
    assert abs(latest["x_dominant_hz"] - 24.5) < 0.1


def test_velocity_ignores_tones_outside_the_band(tmp_path: Path) -> None:
    # 5 Hz is below the 10 Hz band edge: it counts in acceleration RMS but not in velocity.
    analytics = analyse(tmp_path, tone_batches([(5.0, 1.0), (50.0, 1.0)], 2))
    latest = analytics.latest()
    assert latest is not None
    assert latest["x_vrms_mms"] == pytest.approx(velocity_rms_mms(50.0, 1.0), rel=0.02)
    assert latest["x_rms_ms2"] == pytest.approx(1.0, rel=0.01)  # two unit sines: √(½+½)
    assert latest["x_dominant_hz"] == pytest.approx(50.0, abs=0.5)


def test_two_tones_show_two_peaks_in_the_averaged_spectrum(tmp_path: Path) -> None:
    analytics = analyse(tmp_path, tone_batches([(24.5, 1.0), (97.0, 0.4)], 5, noise_ms2=0.02))
    spectrum = analytics.spectrum(5)
    assert spectrum["windows"] == 5
    frequencies = np.array(spectrum["frequencies_hz"])
    amplitude = np.array(spectrum["x"])
    assert frequencies.shape == amplitude.shape == (401,)
    assert spectrum["resolution_hz"] == 1.0
    # the two largest local maxima are the two tones
    local_max = np.flatnonzero(
        (amplitude[1:-1] > amplitude[:-2]) & (amplitude[1:-1] >= amplitude[2:])
    )
    local_max += 1
    top_two = sorted(frequencies[local_max[np.argsort(amplitude[local_max])[-2:]]])
    assert top_two[0] == pytest.approx(24.5, abs=0.5)
    assert top_two[1] == pytest.approx(97.0, abs=0.5)
    # sine-peak scale: a tone centred on a bin reads its amplitude
    assert amplitude[97] == pytest.approx(0.4, rel=0.05)
    # a Hann window loses at most 1.42 dB for a tone between two bins
    assert 0.84 <= max(amplitude[24], amplitude[25]) <= 1.0
    assert spectrum["dominant_hz"]["x"] == pytest.approx(24.5, abs=0.5)
    # far from both tones only the noise remains
    assert amplitude[300] < 0.01


def test_spectrum_before_any_window_is_empty(tmp_path: Path) -> None:
    analytics = analyse(tmp_path, [])
    spectrum = analytics.spectrum(10)
    assert spectrum["windows"] == 0
    assert spectrum["x"] == []
    assert analytics.latest() is None
    assert analytics.zone == ""


def test_a_gap_in_sample_index_drops_the_partial_window(tmp_path: Path) -> None:
    batches = list(tone_batches([(30.0, 1.0)], 3, batch_samples=200))
    del batches[5]  # samples 1000..1199 lost: the second window has a hole
    analytics = analyse(tmp_path, batches)
    stats = analytics.stats()
    assert stats.gaps == 1
    assert stats.samples_discarded == 200  # 800..999 were waiting for the rest of window two
    # windows: 0..799, then 1200..1999 (complete), then 2000..2399 waits
    assert analytics.windows == 2
    rows = analytics.features(3600, 100)
    stamps = [row["timestamp"] for row in rows]
    assert stamps == [iso_z(START_NS), iso_z(START_NS + 1_500_000_000)]  # restart at 1200


def test_window_length_is_configurable(tmp_path: Path) -> None:
    config = AnalyticsConfig(window_seconds=2.0)
    analytics = analyse(tmp_path, tone_batches([(24.5, 1.0)], 6), config)
    assert analytics.windows == 3
    assert analytics.spectrum(2)["resolution_hz"] == 0.5
    latest = analytics.latest()
    assert latest is not None
    assert latest["x_dominant_hz"] == pytest.approx(24.5, abs=0.1)


def test_bad_window_shape_and_band_are_refused() -> None:
    plan = make_plan(1.0, 10.0, 350.0)
    with pytest.raises(ValueError, match="window must be"):
        window_features(np.zeros((799, 3)), plan)
    with pytest.raises(ValueError, match="must lie within"):
        make_plan(1.0, 10.0, 450.0)
    with pytest.raises(ValueError, match="too few samples"):
        make_plan(0.01, 10.0, 350.0)


def test_magnitude_channel_sees_vibration_along_gravity() -> None:
    plan = make_plan(1.0, 10.0, 350.0)
    t_s = np.arange(800) / 800
    xyz = np.zeros((800, 3))
    xyz[:, 2] = 9.80665 + 0.5 * np.sin(2 * math.pi * 40 * t_s)
    row, power = window_features(xyz, plan)
    assert row[column("magnitude", "rms_ms2")] == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    assert row[column("magnitude", "dominant_hz")] == pytest.approx(40, abs=0.1)
    assert power.shape == (4, 401)


def test_bad_queries_are_refused(tmp_path: Path) -> None:
    analytics = analyse(tmp_path, [])
    with pytest.raises(ValueError, match="positive"):
        analytics.features(0, 10)
    with pytest.raises(ValueError, match="positive"):
        analytics.spectrum(-1)


def test_samples_before_the_history_is_loaded_are_skipped_and_counted(tmp_path: Path) -> None:
    analytics = Analytics(AnalyticsConfig(), tmp_path, fsync=False, clock=FakeClock(START_NS / 1e9))
    batches = list(tone_batches([(24.5, 1.0)], 3))
    for batch in batches[:7]:  # 959 samples arrive while open() still runs in its thread
        analytics.feed(batch)
    analytics.open()
    for batch in batches[7:]:
        analytics.feed(batch)
    assert analytics.stats().samples_discarded == 7 * 137
    assert analytics.windows == 1  # samples 959..2399: one whole window, the rest waits
