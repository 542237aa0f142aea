"""Severity zones: boundaries, hysteresis, and the alert when the amplitude crosses a limit."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from analytics.signals import START_NS, tone_batches, velocity_rms_mms
from clocks import FakeClock
from wilo_backend.analytics import Analytics, ZoneChange
from wilo_backend.analytics.zones import NO_ZONE, ZoneLimits, classify, zone_name
from wilo_backend.config import AnalyticsConfig, ConfigError, load_config

LIMITS = ZoneLimits()  # 0.71 / 1.8 / 4.5 mm/s


@pytest.mark.parametrize(
    ("vrms_mms", "zone"),
    [
        (0.0, "A"),
        (0.70, "A"),
        (0.71, "B"),
        (1.79, "B"),
        (1.8, "C"),
        (4.49, "C"),
        (4.5, "D"),
        (50, "D"),
    ],
)
def test_boundaries_from_nothing(vrms_mms: float, zone: str) -> None:
    assert zone_name(classify(vrms_mms, LIMITS, NO_ZONE)) == zone


def test_rising_is_immediate_falling_needs_the_hysteresis_margin() -> None:
    c = 2
    assert classify(4.5, LIMITS, c) == 3  # up at once
    assert classify(1.79, LIMITS, c) == c  # just under B/C: stays C
    assert classify(1.8 * 0.95 + 0.001, LIMITS, c) == c
    assert classify(1.8 * 0.95 - 0.001, LIMITS, c) == 1  # cleared the margin: B
    assert classify(0.1, LIMITS, 3) == 0  # a big fall crosses several zones at once
    assert classify(0.70, LIMITS, 3) == 1  # 0.70 is within 5 % of 0.71: stops at B


def test_limits_must_increase() -> None:
    with pytest.raises(ValueError, match="must increase"):
        ZoneLimits(1.0, 0.5, 4.5)
    with pytest.raises(ValueError, match="hysteresis"):
        ZoneLimits(hysteresis=1.0)


def test_config_rejects_bad_analytics_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[analytics]\nzone_ab_mms = 2.0\nzone_bc_mms = 1.0\n")
    with pytest.raises(ConfigError, match=r"analytics\.zone_ab_mms.*must increase"):
        load_config(path, environ={})
    path.write_text("[analytics]\nband_low_hz = 300\nband_high_hz = 200\n")
    with pytest.raises(ConfigError, match=r"analytics\.band_low_hz: 300\.0 must be below"):
        load_config(path, environ={})
    path.write_text("[analytics]\nband_high_hz = 401\n")
    with pytest.raises(ConfigError, match=r"analytics\.band_high_hz: 401\.0 must be between"):
        load_config(path, environ={})
    path.write_text("[analytics]\nwindow = 1\n")
    with pytest.raises(ConfigError, match=r"analytics\.window: unknown key"):
        load_config(path, environ={})
    config = load_config(None, environ={"WILO_ANALYTICS_RETENTION_DAYS": "7"})
    assert config.analytics.retention_days == 7
    assert config.analytics == AnalyticsConfig(retention_days=7)


def opened_analytics(tmp_path: Path, **hooks: Any) -> Analytics:
    """Analytics on the default config, its history loaded, wall clock at START_NS."""
    analytics = Analytics(
        AnalyticsConfig(), tmp_path, fsync=False, clock=FakeClock(START_NS / 1e9), **hooks
    )
    analytics.open()
    return analytics


def amplitude_for(vrms_mms: float, frequency_hz: float) -> float:
    return vrms_mms * math.sqrt(2) * 2 * math.pi * frequency_hz / 1000.0


def test_zone_changes_when_the_amplitude_crosses_a_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    changes: list[ZoneChange] = []
    analytics = opened_analytics(tmp_path, on_zone_change=changes.append)
    f_hz = 24.5
    quiet = amplitude_for(1.5, f_hz)  # zone B
    loud = amplitude_for(2.2, f_hz)  # zone C
    assert velocity_rms_mms(f_hz, quiet) == pytest.approx(1.5)
    caplog.set_level(logging.INFO, logger="wilo_backend.analytics")
    for batch in tone_batches([(f_hz, quiet)], 3):
        analytics.feed(batch)
    assert analytics.zone == "B"
    assert changes == []  # the first zone is no change
    assert "vibration zone B at start" in caplog.text
    for batch in tone_batches([(f_hz, loud)], 2, start_ns=START_NS + 3 * 10**9, first_index=2400):
        analytics.feed(batch)
    assert analytics.zone == "C"
    assert [(c.previous, c.zone) for c in changes] == [("B", "C")]
    assert changes[0].vrms_mms == pytest.approx(2.2, rel=0.02)
    assert changes[0].limit_mms == 1.8
    alert = changes[0].as_message()
    assert alert["type"] == "alert"
    assert alert["zone"] == "C"
    assert alert["previous"] == "B"
    assert "vibration zone B → C" in caplog.text
    assert analytics.status_data()["zone"] == "C"
    for batch in tone_batches([(f_hz, quiet)], 2, start_ns=START_NS + 5 * 10**9, first_index=4000):
        analytics.feed(batch)
    assert [(c.previous, c.zone) for c in changes] == [("B", "C"), ("C", "B")]
    assert analytics.stats().zone_changes == 2
    assert "wilo_vibration_zone 1" in analytics.metrics_text()
    rows = analytics.features(3600, 1000)
    assert [r["zone"] for r in rows] == ["B"] * 3 + ["C"] * 2 + ["B"] * 2


def test_a_failing_listener_does_not_stop_the_analysis(tmp_path: Path) -> None:
    def broken(_: ZoneChange) -> None:
        raise RuntimeError("listener bug")

    analytics = opened_analytics(tmp_path, on_zone_change=broken)
    for batch in tone_batches([(30.0, amplitude_for(0.3, 30.0))], 1):
        analytics.feed(batch)
    for batch in tone_batches(
        [(30.0, amplitude_for(6.0, 30.0))], 2, start_ns=START_NS + 10**9, first_index=800
    ):
        analytics.feed(batch)
    assert analytics.zone == "D"
    assert analytics.windows == 3


def test_window_gauges_are_in_base_units_beside_the_zone_limits(tmp_path: Path) -> None:
    analytics = opened_analytics(tmp_path)
    text = analytics.metrics_text()
    assert "wilo_vibration_zone " not in text  # no window yet
    assert 'wilo_vibration_zone_limit_meters_per_second{zone="B"} 0.00071' in text
    for batch in tone_batches([(30.0, amplitude_for(6.0, 30.0))], 2):
        analytics.feed(batch)
    text = analytics.metrics_text()
    assert "wilo_vibration_zone 3" in text
    overall = "wilo_vibration_velocity_rms_overall_meters_per_second "
    assert float(text.split("\n" + overall)[1].split()[0]) == pytest.approx(6.0e-3, rel=0.02)
    assert 'wilo_vibration_zone_limit_meters_per_second{zone="D"} 0.0045' in text
    assert 'wilo_vibration_dominant_frequency_hertz{channel="x"} 30' in text
