"""Live streaming over real sockets: exactly-once at full rate, a stalled reader costs nothing."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from wilo_backend.server.app import WiloServer
from wilo_backend.server.live import DEFAULT_MAX_LIVE_BYTES

from .conftest import BATCH, T0_NS, Client, synthetic_batch, ws_url


class LiveReader:
    """Collects live_data frames, checking seq and index continuity as they come."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.next_index = 0
        self.timestamps: list[str] = []

    async def read_until(self, last_index: int) -> None:
        async with asyncio.timeout(20):
            while self.next_index <= last_index:
                frame = json.loads(await self.ws.recv())
                if frame["type"] != "live_data":
                    continue
                self.seqs.append(frame["seq"])
                assert frame["first_index"] == self.next_index, "gap or duplicate"
                self.next_index = frame["last_index"] + 1
                self.timestamps += [row["timestamp"] for row in frame["data"]]


def expected_timestamps(n: int) -> list[str]:
    t_ns = T0_NS + np.arange(n, dtype=np.int64) * 1_250_000
    text = np.datetime_as_string(t_ns.astype("datetime64[ns]"), unit="us")
    return [f"{stamp}Z" for stamp in text.tolist()]


async def publish_seconds(server: WiloServer, start_index: int, seconds: int) -> int:
    index = start_index
    for _ in range(seconds * 800 // BATCH):
        server.publish(synthetic_batch(index))
        index += BATCH
    return index


async def test_full_rate_subscriber_gets_every_sample_once_in_order_for_60s(
    make_server: Any,
) -> None:
    server = await make_server(live_frame_hz=100.0)
    async with connect(ws_url(server)) as ws:
        subscribed = await Client(ws).request("subscribe_live")
        assert subscribed["rate_hz"] == 800.0
        reader = LiveReader(ws)
        index = 0
        for _ in range(60):  # 60 s of sensor time, paced by the reader, not the wall clock
            index = await publish_seconds(server, index, 1)
            await reader.read_until(index - 1)
    assert reader.seqs == list(range(1, len(reader.seqs) + 1))
    assert reader.timestamps == expected_timestamps(60 * 800)
    assert server.counters.live_frames_dropped_total == 0


async def open_stalled_subscriber(port: int) -> socket.socket:
    """A raw WebSocket client with a tiny receive buffer that subscribes and never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    handshake = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, handshake.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += await loop.sock_recv(sock, 1024)
    assert response.startswith(b"HTTP/1.1 101")
    payload = json.dumps({"command": "subscribe_live"}).encode()
    # a masked text frame; an all-zero mask is valid and leaves the payload as is
    await loop.sock_sendall(sock, bytes([0x81, 0x80 | len(payload), 0, 0, 0, 0]) + payload)
    return sock


async def test_a_stalled_subscriber_drops_frames_without_slowing_others_or_growing(
    make_server: Any,
) -> None:
    server = await make_server(live_frame_hz=50.0)
    stalled = await open_stalled_subscriber(server.port)
    try:
        async with connect(ws_url(server)) as ws:
            await Client(ws).request("subscribe_live")
            reader = LiveReader(ws)
            index = 0
            backlog_peaks = []
            for second in range(120):
                index = await publish_seconds(server, index, 1)
                await reader.read_until(index - 1)
                if second % 20 == 19:
                    backlog_peaks.append(max(server.backlog_bytes()))
            # the reader saw every sample once, in order, no frame lost for it
            assert reader.seqs == list(range(1, len(reader.seqs) + 1))
            assert reader.next_index == 120 * 800
            dropped = server.counters.live_frames_dropped_total
            assert dropped > 0  # all of them the stalled client's
            # its cost is bounded: outbox cap + the socket's write buffer (high-water + a frame)
            bound = DEFAULT_MAX_LIVE_BYTES + 64 * 1024 + 128 * 1024
            assert max(backlog_peaks) <= bound, backlog_peaks
            # and it stopped growing once its buffers were full
            assert backlog_peaks[-1] <= backlog_peaks[-2] + 128 * 1024
    finally:
        stalled.close()
