"""Real Store over a real readings tree, a small real ServiceControl, the server on port 0."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from clocks import FakeClock
from wilo_backend.config import ServerConfig, StorageConfig
from wilo_backend.model import SampleBatch, SamplerStats
from wilo_backend.server.app import WiloServer
from wilo_backend.store.store import Store

T0_NS = int(datetime(2026, 11, 27, 15, 22, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
PERIOD_NS = 1_250_000  # 800 Hz
BATCH = 40  # 50 ms of samples, as the sampler hands them over
FEED_BATCH = 400  # 0.5 s: the store fixture's flush_seconds
REPLY_TIMEOUT_SECONDS = 10.0


def synthetic_batch(index: int, n: int = BATCH, t0_ns: int = T0_NS) -> SampleBatch:
    """Deterministic 24.5 Hz vibration on top of gravity, sample `index` onwards."""
    k = np.arange(index, index + n, dtype=np.int64)
    t_ns = t0_ns + k * PERIOD_NS
    phase = 2 * np.pi * 24.5 * k / 800.0
    xyz = np.stack([1.5 * np.sin(phase), 0.5 * np.cos(phase), 9.80665 + 0.1 * np.sin(3 * phase)])
    return SampleBatch(int(index), t_ns, np.ascontiguousarray(xyz.T))


class DataFeed:
    """Appends 800 Hz samples to the store, advancing its monotonic clock like real time.

    In batches of the store fixture's flush period (0.5 s), not the sampler's 50 ms: the files,
    index and summaries come out the same, for a twentieth of the appends (the server tests'
    set-up was a quarter of `make test-fast`'s CPU).
    """

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.next_index = 0

    def seconds(self, seconds: float) -> list[SampleBatch]:
        batches = []
        for _ in range(round(seconds * 800 / FEED_BATCH)):
            batch = synthetic_batch(self.next_index, FEED_BATCH)
            self.store.append(batch)
            self.next_index += FEED_BATCH
            self.clock.now += FEED_BATCH / 800
            batches.append(batch)
        self.clock.now += 5.0
        self.store.tick()
        return batches


class Control:
    """A real, minimal ServiceControl: state flags, a health switch, counters."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[str] = []
        self.running = True
        self.paused = False
        self.healthy: tuple[bool, str] = (True, "")

    def start_collection(self) -> None:
        self.calls.append("start_collection")
        self.running, self.paused = True, False

    def stop_collection(self) -> None:
        self.calls.append("stop_collection")
        self.running, self.paused = False, False

    def pause_collection(self) -> None:
        self.calls.append("pause_collection")
        self.paused = True

    def resume_collection(self) -> None:
        self.calls.append("resume_collection")
        self.paused = False

    def status_data(self) -> dict[str, Any]:
        storage = self.store.status()
        return {
            "connected": True,
            "running": self.running,
            "paused": self.paused,
            "sampling_rate": 800.0,
            "total_samples": storage.rows_written,
            "csv_files": storage.file_count,
            "latest_file": storage.latest_file,
        }

    def collection_state(self) -> tuple[bool, bool]:
        return self.running, self.paused

    def health(self) -> tuple[bool, str]:
        return self.healthy

    def sampler_stats(self) -> SamplerStats:
        return SamplerStats(connected=True, running=True, samples=self.store.status().rows_written)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(data_dir: Path, store_clock: FakeClock) -> Iterator[Store]:
    config = StorageConfig(
        data_dir=str(data_dir), fsync=False, segment_seconds=2, max_files=5, flush_seconds=0.5
    )
    instance = Store(config, monotonic=store_clock)
    instance.open()
    yield instance
    instance.close()


@pytest.fixture
def feed(store: Store, store_clock: FakeClock) -> DataFeed:
    return DataFeed(store, store_clock)


@pytest.fixture
def control(store: Store) -> Control:
    return Control(store)


@pytest.fixture
async def make_server(store: Store, control: Control) -> AsyncIterator[Callable[..., Any]]:
    servers: list[WiloServer] = []

    async def make(clock: Callable[[], float] = time.monotonic, **overrides: Any) -> WiloServer:
        config = dataclasses.replace(ServerConfig(host="127.0.0.1", port=0), **overrides)
        server = WiloServer(config, store, control, clock=clock)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: Callable[..., Any], feed: DataFeed) -> WiloServer:
    feed.seconds(11)  # 5 full 2 s segments retained + the open one
    result: WiloServer = await make_server()
    return result


_ids = itertools.count(1)


class Client:
    """A real websockets client that sorts replies (by request_id) from pushes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []

    async def send(self, command: str, **fields: Any) -> str:
        request_id = f"r{next(_ids)}"
        await self.ws.send(json.dumps({"command": command, "request_id": request_id, **fields}))
        return request_id

    async def request(self, command: str, **fields: Any) -> dict[str, Any]:
        return await self.reply_to(await self.send(command, **fields))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def reply_to(self, request_id: str) -> dict[str, Any]:
        for i, message in enumerate(self.pushes):
            if message.get("request_id") == request_id:
                return self.pushes.pop(i)
        async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
            while True:
                message = json.loads(await self.ws.recv())
                if message.get("request_id") == request_id:
                    return dict(message)
                self.pushes.append(message)

    async def next_push(self, kind: str) -> dict[str, Any]:
        for i, message in enumerate(self.pushes):
            if message["type"] == kind:
                return self.pushes.pop(i)
        async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] == kind:
                    return dict(message)
                self.pushes.append(message)


def ws_url(server: WiloServer, host: str = "127.0.0.1", query: str = "") -> str:
    return f"ws://{host}:{server.port}/{query}"


@pytest.fixture
async def client(server: WiloServer) -> AsyncIterator[Client]:
    async with connect(ws_url(server)) as ws:
        yield Client(ws)


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET over a raw socket: (status, headers lower-cased, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    async with asyncio.timeout(30):
        raw = await reader.read(-1)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body
