"""get_features / get_spectrum replies, and the static files of the live page."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from analytics.signals import START_NS, tone_batches
from clocks import FakeClock
from wilo_backend.analytics import Analytics
from wilo_backend.analytics.replies import features_reply, spectrum_reply
from wilo_backend.config import AnalyticsConfig
from wilo_backend.web import STATIC_FILES, static_file


@pytest.fixture
def analytics(tmp_path: Path) -> Analytics:
    engine = Analytics(
        AnalyticsConfig(retention_days=2),
        tmp_path,
        fsync=False,
        clock=FakeClock(START_NS / 1e9 + 20),
    )
    engine.open()
    for batch in tone_batches([(24.5, 0.5)], 20):
        engine.feed(batch)
    return engine


def test_features_reply_shape_and_defaults(analytics: Analytics) -> None:
    reply = features_reply(analytics, None, None)
    assert reply["type"] == "features"
    assert reply["seconds"] == 3600
    assert reply["zone"] == analytics.zone == "C"  # 0.5 m/s² at 24.5 Hz ≈ 2.3 mm/s
    assert reply["zone_limits_mms"] == [0.71, 1.8, 4.5]
    assert len(reply["data"]) == 20
    point = reply["data"][-1]
    assert point["windows"] == 1
    assert point["vrms_mms"] == point["vrms_mms_max"] == point["x_vrms_mms"]
    assert point["timestamp"].endswith("Z")
    json.dumps(reply, allow_nan=False)  # finite numbers only


def test_features_reply_is_clipped_to_retention_and_max_points(analytics: Analytics) -> None:
    reply = features_reply(analytics, 10 * 86400, 5)
    assert reply["seconds"] == 2 * 86400
    assert len(reply["data"]) <= 5
    assert sum(p["windows"] for p in reply["data"]) == 20


def test_spectrum_reply(analytics: Analytics) -> None:
    reply = spectrum_reply(analytics, None)
    assert reply["type"] == "spectrum"
    assert reply["windows"] == 10  # default 10 s
    assert reply["dominant_hz"]["x"] == pytest.approx(24.5, abs=0.5)
    assert len(reply["x"]) == len(reply["frequencies_hz"]) == 401
    assert spectrum_reply(analytics, 1e6)["windows"] == 20  # all there is
    json.dumps(reply, allow_nan=False)


def test_page_files_are_shipped_and_nothing_else_is_served() -> None:
    body, content_type = static_file("/") or (b"", "")
    assert content_type.startswith("text/html")
    page = body.decode()
    assert '<script src="app.js">' in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    script, script_type = static_file("/app.js") or (b"", "")
    assert script_type.startswith("text/javascript")
    for command in ("subscribe_live", "get_spectrum", "get_features", "get_status"):
        assert command.encode() in script
    assert b"token" in script
    assert static_file("/style.css") is not None
    for path in ("/../config.py", "/__init__.py", "/app.js/", "/etc/passwd", "//app.js"):
        assert static_file(path) is None
    assert set(STATIC_FILES) == {"/", "/index.html", "/app.js", "/style.css"}


def test_every_page_file_is_declared_as_package_data() -> None:
    root = Path(__file__).resolve().parents[2]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["wilo_backend.web"]
    web = root / "backend/wilo_backend/web"
    shipped = {p.name for pattern in patterns for p in web.glob(pattern)}
    assert shipped == {"index.html", "app.js", "style.css"}
