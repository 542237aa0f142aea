"""The analytics over the real server: a websockets client on 127.0.0.1:0, the real Store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from clocks import FakeClock
from server.conftest import (
    T0_NS,
    Client,
    Control,
    http_get,
    synthetic_batch,
    ws_url,
)
from wilo_backend.analytics import Analytics
from wilo_backend.analytics.serving import attach
from wilo_backend.config import AnalyticsConfig, ServerConfig, StorageConfig
from wilo_backend.server.app import WiloServer
from wilo_backend.store.store import Store

BATCH = 40


class Pump:
    """What service.py's pump does with each batch: store, publish, analyse."""

    def __init__(self, store: Store, analytics: Analytics, clock: FakeClock) -> None:
        self.store, self.analytics, self.clock = store, analytics, clock
        self.server: WiloServer | None = None
        self.next_index = 0

    def seconds(self, seconds: float, amplitude: float = 1.0) -> None:
        for _ in range(round(seconds * 800 / BATCH)):
            batch = synthetic_batch(self.next_index)
            batch = dataclasses.replace(batch, xyz=batch.xyz * [amplitude, amplitude, 1.0])
            self.store.append(batch)
            if self.server is not None:
                self.server.publish(batch)
            self.analytics.feed(batch)
            self.next_index += BATCH
            self.clock.now += BATCH / 800
        self.store.tick()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    config = StorageConfig(data_dir=str(tmp_path), fsync=False, segment_seconds=2, max_files=5)
    instance = Store(config, monotonic=FakeClock())
    instance.open()
    yield instance
    instance.close()


@pytest.fixture
def analytics_clock() -> FakeClock:
    return FakeClock(T0_NS / 1e9 + 60)


@pytest.fixture
def analytics(tmp_path: Path, analytics_clock: FakeClock) -> Iterator[Analytics]:
    engine = Analytics(AnalyticsConfig(), tmp_path, fsync=False, clock=analytics_clock)
    engine.open()
    yield engine
    engine.close()


@pytest.fixture
def server_clock() -> FakeClock:
    """The server's clock: a live frame is due only when the test moves it."""
    return FakeClock()


@pytest.fixture
async def server(
    store: Store, analytics: Analytics, server_clock: FakeClock
) -> AsyncIterator[WiloServer]:
    config = ServerConfig(host="127.0.0.1", port=0, auth_token="s3cret", protect_reads=True)
    instance = WiloServer(config, store, Control(store), clock=server_clock)
    attach(instance, analytics)
    await instance.start()
    yield instance
    await instance.stop()


@pytest.fixture
def pump(store: Store, analytics: Analytics, server: WiloServer) -> Pump:
    feeder = Pump(store, analytics, FakeClock())
    feeder.server = server
    # the alert wiring service.py does (there through loop.call_soon_threadsafe)
    analytics.on_zone_change = lambda change: server.notify_event("alert", change.as_message())
    return feeder


@pytest.fixture
async def client(server: WiloServer) -> AsyncIterator[Client]:
    async with connect(ws_url(server, query="?token=s3cret")) as ws:
        yield Client(ws)


async def test_get_features_and_get_spectrum(client: Client, pump: Pump) -> None:
    pump.seconds(6)
    features = await client.request("get_features", seconds=600, max_points=100)
    assert features["type"] == "features" and features["request_id"].startswith("r")
    assert len(features["data"]) == 6
    point = features["data"][-1]
    # synthetic_batch: 1.5 m/s² at 24.5 Hz on x → 6.89 mm/s, zone D
    assert point["x_dominant_hz"] == pytest.approx(24.5, abs=0.5)
    assert point["x_vrms_mms"] == pytest.approx(1500 / (2 * 3.14159265 * 24.5) / 2**0.5, rel=0.02)
    assert features["zone"] == point["zone"] == "D"
    spectrum = await client.request("get_spectrum", seconds=3)
    assert spectrum["type"] == "spectrum" and spectrum["windows"] == 3
    assert spectrum["dominant_hz"]["x"] == pytest.approx(24.5, abs=0.5)
    assert len(spectrum["x"]) == len(spectrum["frequencies_hz"]) == 401


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seconds": -5}, "seconds"),
        ({"seconds": "long"}, "seconds"),
        ({"max_points": 1}, "max_points"),
    ],
)
async def test_bad_analytics_requests_get_an_error_and_the_connection_stays(
    client: Client, fields: dict[str, Any], message: str
) -> None:
    reply = await client.request("get_features", **fields)
    assert reply["type"] == "error" and message in reply["message"]
    assert (await client.request("get_spectrum"))["type"] == "spectrum"


async def test_reads_need_the_token_when_protected(server: WiloServer) -> None:
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"command": "get_features", "request_id": 1}))
        reply = json.loads(await ws.recv())
        while reply.get("request_id") != 1:
            reply = json.loads(await ws.recv())
    assert reply["type"] == "error" and "unauthorized" in reply["message"]


async def test_live_frames_carry_each_new_window_once(
    client: Client, pump: Pump, server_clock: FakeClock
) -> None:
    subscribed = await client.request("subscribe_live")
    assert subscribed["type"] == "live_subscribed"
    carried: list[str] = []
    frames = 0
    for _ in range(8):
        # a frame becomes due at the first batch of each half second: one frame per pump, on a
        # loaded machine too (on the wall clock, a slow pump cut more frames than were read)
        server_clock.advance(0.5)
        pump.seconds(0.5)
        frame = await client.next_push("live_data")
        frames += 1
        if "features" in frame:
            carried.append(frame["features"]["timestamp"])
            assert frame["features"]["zone"] == "D"
            assert set(frame["features"]) >= {"x_vrms_mms", "vrms_mms", "magnitude_rms_ms2"}
    # 4 s of samples: 4 windows, none twice; the 4th ends with the last batch, after the frame
    assert len(carried) == len(set(carried)) == 3
    assert frames == 8


async def test_zone_change_is_pushed_as_an_alert(client: Client, pump: Pump) -> None:
    pump.seconds(2, amplitude=1.0)  # 6.9 mm/s: D
    pump.seconds(2, amplitude=0.2)  # 1.4 mm/s: B
    alert = await client.next_push("alert")
    assert alert["kind"] == "zone_change"
    assert (alert["previous"], alert["zone"]) == ("D", "B")
    assert alert["message"].startswith("vibration zone D → B")
    status = await client.request("get_status")
    assert "data" in status


async def test_metrics_export_the_features(
    server: WiloServer, pump: Pump, analytics_clock: FakeClock
) -> None:
    pump.seconds(2)
    assert server.port is not None
    analytics_clock.now = T0_NS / 1e9 + 2.5  # just after the second window ended
    status, _, body = await http_get(server.port, "/metrics?token=s3cret")
    text = body.decode()
    assert status == 200
    assert 'wilo_vibration_velocity_rms_meters_per_second{channel="x"}' in text
    assert "wilo_vibration_zone 3" in text
    assert "wilo_analytics_windows_total 2" in text
    assert "wilo_analytics_fresh 1" in text


async def test_vibration_gauges_leave_metrics_when_no_window_comes(
    server: WiloServer, pump: Pump, analytics: Analytics, analytics_clock: FakeClock
) -> None:
    """Collection stopped or paused: the gauges must not freeze at their last values."""
    pump.seconds(2)
    assert server.port is not None
    analytics_clock.now = T0_NS / 1e9 + 2 + analytics.stale_after_seconds + 0.5
    _, _, body = await http_get(server.port, "/metrics?token=s3cret")
    text = body.decode()
    assert "wilo_analytics_fresh 0" in text
    assert "wilo_vibration_velocity_rms_meters_per_second" not in text
    assert "wilo_vibration_zone " not in text
    assert "wilo_analytics_windows_total 2" in text  # the counters stay
    assert analytics.status_data()["features_stale"] is True


async def test_the_page_is_served_and_nothing_else(server: WiloServer) -> None:
    assert server.port is not None
    status, headers, body = await http_get(server.port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="app.js">' in body
    status, headers, _ = await http_get(server.port, "/app.js?v=1")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    for path in ("/web/app.js", "/../pyproject.toml", "/app.js/../../config.py"):
        status, _, _ = await http_get(server.port, path)
        assert status == 404


async def test_the_page_needs_no_token_but_its_socket_does(server: WiloServer) -> None:
    # protect_reads is on: the page's files are code, open; the data behind them is not
    assert server.port is not None
    for path in ("/", "/app.js", "/style.css"):
        assert (await http_get(server.port, path))[0] == 200
    status, _, _ = await http_get(server.port, "/metrics")
    assert status == 401
