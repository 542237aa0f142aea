"""Abuse bench: issue 14's attacks on the real service over loopback, a legitimate client timed.

Each attack runs in its own processes from source addresses 127.0.<n>.x (Linux answers all of
127/8 on `lo`), bounded in time and count, against `wilo-backend run --sensor sim` with its
limits at their defaults and a token set; the legitimate client comes from 127.0.0.1 with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from bench.servicerun import start_service

TOKEN = "bench-abuse-token-7c1e"  # noqa: S105 (a throwaway service on loopback)
METRIC = re.compile(r"^(wilo_[a-z_]+)(\{[^}]*\})? (\S+)$", re.M)
# LimitNOFILE of the unit (ansible/roles/wilo_backend defaults)
SERVICE_NOFILE = 4096


# --- attackers (each runs as `python -m bench.abuse --attack NAME`) ----------------------------


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _until(deadline: float, body: Callable[[], Awaitable[None]]) -> None:
    while time.monotonic() < deadline:
        try:
            await body()
        except (OSError, WebSocketException, TimeoutError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.2)


async def _idle(port: int, deadline: float, count: int, subnet: int, counts: dict[str, int]):
    """`count` sockets that never send a byte; each reconnects 1 s after the server drops it."""

    async def one(k: int) -> None:
        source = f"127.0.{subnet}.{1 + k % 50}"

        async def hold() -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            counts["requests"] += 1
            try:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    await reader.read()
            finally:
                writer.close()
            await asyncio.sleep(1.0)

        await _until(deadline, hold)

    await asyncio.gather(*(one(k) for k in range(count)), return_exceptions=True)


async def _slots(port: int, deadline: float, count: int, subnet: int, counts: dict[str, int]):
    """`count` WebSocket clients without the token that hold their slot and do nothing."""

    async def one(k: int) -> None:
        source = f"127.0.{subnet}.{1 + k % 4}"

        async def hold() -> None:
            counts["requests"] += 1
            async with connect(
                f"ws://127.0.0.1:{port}/", local_addr=(source, 0), open_timeout=5
            ) as ws:
                counts["opened"] += 1
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    async for _ in ws:
                        pass
            await asyncio.sleep(1.0)

        await _until(deadline, hold)

    await asyncio.gather(*(one(k) for k in range(count)), return_exceptions=True)


def _text_frame(payload: bytes) -> bytes:
    """A client's masked text frame with an all-zero mask (the payload goes as it is)."""
    if len(payload) < 126:
        return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
    return bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload


HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _expensive(port: int, deadline: float, count: int, subnet: int, counts: dict[str, int]):
    """`count` clients each sending get_recent_data (100,000 points) 60 times a second.

    A hand-made WebSocket client that reads and drops the replies' bytes unparsed: a real
    client decoding megabytes of JSON would spend this shared machine's CPU on the attacker.
    """
    frame = _text_frame(json.dumps({"command": "get_recent_data", "max_points": 100_000}).encode())

    async def one(k: int) -> None:
        source = f"127.0.{subnet}.{1 + k % 10}"

        async def flood() -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            writer.write(HANDSHAKE)
            if not (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101"):
                writer.close()
                await asyncio.sleep(1.0)
                return

            async def send() -> None:
                while time.monotonic() < deadline:
                    writer.write(frame)
                    counts["requests"] += 1
                    await asyncio.sleep(1 / 60)

            sender = asyncio.create_task(send())
            try:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    while chunk := await reader.read(1 << 20):
                        counts["reply_bytes"] = counts.get("reply_bytes", 0) + len(chunk)
            finally:
                sender.cancel()
                writer.close()

        await _until(deadline, flood)

    await asyncio.gather(*(one(k) for k in range(count)), return_exceptions=True)


BAD_REQUESTS = [
    b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"PROPFIND / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
]


async def _malformed(port: int, deadline: float, count: int, subnet: int, counts: dict[str, int]):
    """`count` loops sending malformed and duplicate-header requests as fast as answered."""

    async def one(k: int) -> None:
        source = f"127.0.{subnet}.{1 + k % 8}"

        async def send() -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            counts["requests"] += 1
            try:
                writer.write(BAD_REQUESTS[counts["requests"] % len(BAD_REQUESTS)])
                async with asyncio.timeout(5):
                    answer = await reader.read()
                key = answer[9:12].decode("ascii", "replace") or "closed"
                counts[key] = counts.get(key, 0) + 1
            finally:
                writer.close()

        await _until(deadline, send)

    await asyncio.gather(*(one(k) for k in range(count)), return_exceptions=True)


async def _tokens(port: int, deadline: float, count: int, subnet: int, counts: dict[str, int]):
    """`count` clients guessing the token with stop_collection, 20 guesses a second each."""

    async def one(k: int) -> None:
        source = f"127.0.{subnet}.{1 + k}"

        async def guess() -> None:
            async with connect(f"ws://127.0.0.1:{port}/", local_addr=(source, 0)) as ws:
                while time.monotonic() < deadline:
                    token = f"{random.getrandbits(64):016x}"
                    await ws.send(json.dumps({"command": "stop_collection", "token": token}))
                    counts["requests"] += 1
                    await asyncio.sleep(0.05)

        await _until(deadline, guess)

    await asyncio.gather(*(one(k) for k in range(count)), return_exceptions=True)


ATTACKS: dict[str, Any] = {
    "idle": _idle,
    "slots": _slots,
    "expensive": _expensive,
    "malformed": _malformed,
    "tokens": _tokens,
}


def _attacker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attack", choices=sorted(ATTACKS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--subnet", type=int, required=True)
    args = parser.parse_args(argv)
    _raise_nofile()
    counts: dict[str, int] = {"requests": 0, "opened": 0}
    deadline = time.monotonic() + args.seconds

    async def main() -> None:
        await ATTACKS[args.attack](args.port, deadline, args.count, args.subnet, counts)

    asyncio.run(main())
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(counts), flush=True)
    return 0


# --- the legitimate client and the measurements -----------------------------------------------


@dataclass
class Probe:
    status_ms: list[float] = field(default_factory=list)
    handshake_ms: list[float] = field(default_factory=list)
    failures: int = 0


async def _probe(port: int, seconds: float) -> Probe:
    """The operator: get_status every 50 ms on one connection, a new handshake every 250 ms."""
    probe = Probe()
    url = f"ws://127.0.0.1:{port}/"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + seconds

    async def status_loop() -> None:
        k = 0
        while time.monotonic() < deadline:
            try:
                async with connect(url, additional_headers=headers, open_timeout=10) as ws:
                    while time.monotonic() < deadline:
                        k += 1
                        started = time.perf_counter()
                        await ws.send(json.dumps({"command": "get_status", "request_id": k}))
                        async with asyncio.timeout(10):
                            while json.loads(await ws.recv()).get("request_id") != k:
                                pass
                        probe.status_ms.append((time.perf_counter() - started) * 1000)
                        await asyncio.sleep(0.05)
            except (OSError, WebSocketException, TimeoutError):
                probe.failures += 1
                await asyncio.sleep(0.05)

    async def handshake_loop() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                async with connect(url, additional_headers=headers, open_timeout=10):
                    probe.handshake_ms.append((time.perf_counter() - started) * 1000)
            except (OSError, WebSocketException, TimeoutError):
                probe.failures += 1
            await asyncio.sleep(0.25)

    await asyncio.gather(status_loop(), handshake_loop())
    return probe


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    totals: dict[str, float] = {}
    for name, _labels, value in METRIC.findall(text):
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


@dataclass
class Phase:
    name: str
    description: str
    attackers: list[tuple[str, int, int]]  # (attack, count per process, subnet) per process


PHASES = [
    Phase("none", "no attack (baseline)", []),
    Phase(
        "idle sockets",
        "1,500 TCP sockets that never send a request, from 50 addresses (3 processes × 500); "
        "each reconnects 1 s after being dropped",
        [("idle", 500, 11), ("idle", 500, 12), ("idle", 500, 13)],
    ),
    Phase(
        "slot flood",
        "64 WebSocket clients without the token holding a slot, from 4 addresses",
        [("slots", 64, 21)],
    ),
    Phase(
        "expensive flood",
        "50 clients (2 processes × 25, 10 addresses each) sending get_recent_data with "
        "max_points 100,000 60 times a second",
        [("expensive", 25, 31), ("expensive", 25, 32)],
    ),
    Phase(
        "malformed requests",
        "16 loops sending POST, duplicate Host / Authorization, 100 kB headers, odd methods, "
        "TLS hellos, each on a new connection, as fast as answered",
        [("malformed", 16, 41)],
    ),
    Phase(
        "token guessing",
        "10 clients from 10 addresses sending stop_collection with random tokens, 20 a second each",
        [("tokens", 10, 51)],
    ),
]


def _start_service(base: Path, server_keys: str = "") -> tuple[subprocess.Popen[bytes], int, Path]:
    config = base / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\nauth_token = "{TOKEN}"\n{server_keys}'
        f'[storage]\ndata_dir = "{base / "data"}"\n'
        '[sensor]\ndriver = "sim"\n'
    )
    log_path = base / "service.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (SERVICE_NOFILE, SERVICE_NOFILE))

    environ = {k: v for k, v in os.environ.items() if not k.startswith("WILO_")}
    process, port = start_service(
        ["--config", str(config)], log_path, env=environ, preexec_fn=limit
    )
    return process, port, log_path


def _run_phase(phase: Phase, port: int, pid: int, log_path: Path, seconds: float) -> list[str]:
    before = _metrics(port)
    log_before = log_path.stat().st_size
    attackers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.abuse",
                "--attack",
                attack,
                "--port",
                str(port),
                "--seconds",
                str(seconds + 2),
                "--count",
                str(count),
                "--subnet",
                str(subnet),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for attack, count, subnet in phase.attackers
    ]
    time.sleep(2.0 if attackers else 0.0)  # the attack builds up before the probe starts
    process = psutil.Process(pid)
    peaks = {"rss": 0.0, "fds": 0.0}

    async def watch_and_probe() -> Probe:
        async def watch() -> None:
            while True:
                peaks["rss"] = max(peaks["rss"], process.memory_info().rss / 2**20)
                peaks["fds"] = max(peaks["fds"], process.num_fds())
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        try:
            return await _probe(port, seconds)
        finally:
            watcher.cancel()

    probe = asyncio.run(watch_and_probe())
    counts: dict[str, int] = {}
    for attacker in attackers:
        out, _ = attacker.communicate(timeout=120)
        for key, value in json.loads(out.strip().splitlines()[-1]).items():
            counts[key] = counts.get(key, 0) + value
    time.sleep(1.5)  # the last flush reaches the metrics
    after = _metrics(port)
    log_bytes = log_path.stat().st_size - log_before
    new_log = log_path.read_bytes()[log_before:].decode(errors="replace")
    store_errors = sum(
        1 for line in new_log.splitlines() if "ERROR" in line and "wilo_backend.store" in line
    ) + int(
        after.get("wilo_storage_rows_dropped_total", 0)
        - before.get("wilo_storage_rows_dropped_total", 0)
    )
    lost = after.get("wilo_samples_lost_total", 0) - before.get("wilo_samples_lost_total", 0)
    samples = after.get("wilo_samples_total", 0) - before.get("wilo_samples_total", 0)
    requests = counts.get("requests", 0)
    for name, label in (
        ("wilo_ws_busy_total", "busy"),
        ("wilo_ws_rate_limited_total", "rate limited"),
    ):
        delta = int(after.get(name, 0) - before.get(name, 0))
        if delta:
            counts[f"server {label}"] = delta
    status = np.array(probe.status_ms) if probe.status_ms else np.array([np.nan])
    hand = np.array(probe.handshake_ms) if probe.handshake_ms else np.array([np.nan])
    per_request = f"{log_bytes / requests:.1f}" if requests else "—"
    detail = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if k != "requests" and v)
    return [
        f"| {phase.name} | {requests:,} | {int(lost)} ({int(samples):,} sampled) | "
        f"{store_errors} | {np.percentile(status, 50):.1f} / {np.percentile(status, 99):.1f} | "
        f"{np.percentile(hand, 50):.1f} / {np.percentile(hand, 99):.1f} / {hand.max():.0f} | "
        f"{probe.failures} | {peaks['rss']:.0f} | {peaks['fds']:.0f} | {log_bytes:,} | "
        f"{per_request} |",
        detail,
    ]


def run(quick: bool, only: Sequence[str] = ()) -> str:
    """Every attack phase in turn (or only those named: `python -m bench.abuse --phase NAME`,
    to profile one attack)."""
    seconds = 8.0 if quick else 30.0
    phases = [phase for phase in PHASES if not only or phase.name in only]
    unknown = set(only) - {phase.name for phase in PHASES}
    if unknown:
        raise SystemExit(f"unknown phase(s) {sorted(unknown)}; known: {[p.name for p in PHASES]}")
    base = Path(tempfile.mkdtemp(prefix="wilo-bench-abuse-", dir="/var/tmp"))
    process, port, log_path = _start_service(base)
    rows: list[str] = []
    details: list[str] = []
    try:
        time.sleep(3.0)  # the sampler settles
        for phase in phases:
            print(f"   abuse: {phase.name} ...", flush=True)
            row, detail = _run_phase(phase, port, process.pid, log_path, seconds)
            rows.append(row)
            if detail:
                details.append(f"- {phase.name}: {phase.description}; replies/outcomes: {detail}")
            else:
                details.append(f"- {phase.name}: {phase.description}")
    except BaseException:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        print(f"   abuse: failed; the service's data and log are kept in {base}", flush=True)
        raise
    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(timeout=60)
    shutil.rmtree(base, ignore_errors=True)
    return "\n".join(
        [
            "## abuse",
            "",
            "Issue 14's attacks on the real `wilo-backend run --sensor sim` (defaults; a token "
            f"set; `LimitNOFILE={SERVICE_NOFILE}` as the unit) over loopback, one after another, "
            f"{seconds:.0f} s each after a 2 s build-up. Attackers run in their own processes "
            "from 127.0.n.x source addresses; the legitimate client (127.0.0.1, with the token) "
            "sends `get_status` every 50 ms on one connection and opens a new WebSocket every "
            "250 ms. Lost = Δ`wilo_samples_lost_total`; store errors = ERROR lines of "
            "`wilo_backend.store` + Δ`wilo_storage_rows_dropped_total`; RSS and descriptors of the "
            "main process, peak over the phase; log bytes = the service's output during the "
            f"phase. Load average at the end: {os.getloadavg()[0]:.1f} (2 CPUs, shared). "
            f"Exit on SIGTERM: code {exit_code}.",
            "",
            "| attack | attacker requests | samples lost | store errors | get_status ms p50 / "
            "p99 | handshake ms p50 / p99 / max | probe failures | RSS MiB | fds | log bytes | "
            "log bytes / attacker request |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *details,
            "",
            "Targets (SPEC §6): 0 lost, 0 store errors, get_status p99 ≤ 100 ms and handshake "
            "≤ 250 ms during the expensive flood; handshake ≤ 250 ms for the authorised client "
            "during the idle-socket and slot attacks; RSS ≤ 150 MB; ≤ 200 log bytes per "
            "attacker request.",
            "",
        ]
    )


if __name__ == "__main__":
    if "--attack" in sys.argv:
        sys.exit(_attacker_main(sys.argv[1:]))
    named = [sys.argv[i + 1] for i, arg in enumerate(sys.argv[:-1]) if arg == "--phase"]
    print(run(quick="--quick" in sys.argv, only=named))
