"""What a real `wilo-backend run` tells Prometheus for the fleet: build, floor, pause."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_service import RunningService, start_service, wait_for
from wilo_backend import __version__


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    running = start_service(tmp_path, "--sensor", "sim")
    yield running
    running.process.kill()
    running.process.wait()


def _scrape(service: RunningService) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _value(text: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_build_floor_and_no_zone_while_paused(service: RunningService) -> None:
    wait_for(lambda: _value(_scrape(service), "wilo_vibration_zone") is not None)
    text = _scrape(service)
    assert _value(text, f'wilo_build_info{{version="{__version__}",release="dev"}}') == 1
    assert _value(text, "wilo_storage_min_free_bytes") == 200 * 2**20
    assert _value(text, "wilo_sampler_restarts_total") == 0

    assert service.request("pause_collection")["type"] != "error"
    text = _scrape(service)
    assert _value(text, "wilo_paused") == 1 and _value(text, "wilo_collecting") == 0
    # no window comes any more: the zone and the features leave /metrics (stale in Prometheus),
    # so WiloVibrationZoneC/D cannot keep firing on the last value of a paused pump
    wait_for(lambda: _value(_scrape(service), "wilo_vibration_zone") is None, timeout_s=15)
    text = _scrape(service)
    assert "wilo_vibration_velocity_rms_overall_meters_per_second" not in text
    assert _value(text, "wilo_analytics_windows_total")  # the counters stay

    assert service.request("resume_collection")["type"] != "error"
    wait_for(lambda: _value(_scrape(service), "wilo_vibration_zone") is not None)
    assert _value(_scrape(service), "wilo_collecting") == 1
