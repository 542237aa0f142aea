"""make soak: the real service under load with injected faults; every stored sample accounted for.

Runs `wilo-backend run --sensor sim` (fsync on) with its data on a small ext4 filesystem this
script mounts (a loop image; plain folder when not root), 50 live subscribers, readers, request
floods, malformed frames, exports, 500 idle sockets and a flood of expensive requests (the
attackers of bench/abuse.py), while it injects I2C error bursts, bus stalls that overflow
the FIFO, a vanished sensor (all through `sensor.sim.fault_file`, see sensor/faults.py),
SIGKILL + restart, a disk-full window (a ballast file) and a wall-clock step (the fault file's
`wall_offset_seconds`: the machine's clock is never touched). Then it reads every CSV back and
prints the report; the exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
# `wilo-backend run`, from a copy of the package taken at the start (PYTHONPATH wins over the
# editable install), so every restart runs the same code even while the tree is being edited
SERVICE = [str(PYTHON), "-m", "wilo_backend.cli", "run", "--sensor", "sim"]
RATE_HZ = 800.0
PERIOD_US = 1e6 / RATE_HZ
DAY_S = 86_400.0
SUBSCRIBERS = 50
HEADER = b"timestamp,x,y,z,acceleration\n"
ROW_RE = re.compile(
    rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z,-?\d+\.\d+,-?\d+\.\d+,-?\d+\.\d+,\d+\.\d+"
)
SEGMENT_RE = re.compile(r"^\d{4}/\d\d/Week_[1-5]/\d\d/\d{6}(_\d+)?\.csv$")
RSS_GROWTH_LIMIT = 0.10
# a kill may cost the unflushed second plus the pipeline (FIFO poll, resampler, hand-off, pump)
KILL_WINDOW_LIMIT_S = 1.0 + 0.5
EPISODE_MERGE_S = 3.0


def now() -> float:
    return time.time()


@dataclasses.dataclass
class Incarnation:
    """One run of the service process, launch to SIGKILL/SIGTERM."""

    index: int
    pid: int
    launched: float
    ready: float | None = None
    ended: float | None = None
    how: str = ""  # "SIGKILL", "SIGTERM", "exited by itself"
    polls: list[tuple[float, dict[str, Any]]] = dataclasses.field(default_factory=list)
    rss: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)  # t, main, sampler
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Window:
    kind: str
    start: float
    end: float


@dataclasses.dataclass
class Tally:
    """What the clients saw."""

    live_frames: int = 0
    live_bytes: int = 0
    drops: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    replies: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    flood_limited: int = 0
    flood_answered: int = 0
    malformed_ok: int = 0
    malformed_bad: list[str] = dataclasses.field(default_factory=list)
    # issue 14's attackers, run beside the load: their own counts (bench/abuse.py)
    attackers: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    oversize_1009: int = 0
    exports_ok: int = 0
    exports_failed: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    export_bytes: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.minutes: float = args.minutes
        self.total_s = self.minutes * 60.0
        self.work = Path(args.workdir).resolve()
        self.keep = args.keep
        self.mount = self.work / "data"
        self.image = self.work / "data.img"
        self.fault_file = self.work / "faults.json"
        self.config_file = self.work / "config.toml"
        self.log_file = self.work / "service.log"
        self.downloads = self.work / "downloads"
        self.code = self.work / "code"
        self.revision = ""
        self.mounted = False
        self.port = _free_port()
        self.long = self.total_s >= 600
        self.raw_memory_s = 300 if self.long else 30
        self.warmup_s = self.raw_memory_s + 30.0
        self.incarnations: list[Incarnation] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.windows: list[Window] = []
        self.fault_entries: list[dict[str, Any]] = []
        self.wall_offset_s = 0.0
        self.kills: list[float] = []
        self.tally = Tally()
        self.stopping = False
        self.unexpected_exits: list[str] = []
        self.started = 0.0
        self.notes: list[str] = []
        self.rng = random.Random(7)

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> None:
        if self.work.exists():
            _umount_quietly(self.mount)
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.mount.mkdir()
        self.downloads.mkdir()
        self.revision = _revision()
        shutil.copytree(
            ROOT / "backend" / "wilo_backend",
            self.code / "wilo_backend",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        size_mb = int(256 + self.minutes * 24)
        if os.geteuid() == 0:
            subprocess.run(["truncate", "-s", f"{size_mb}M", str(self.image)], check=True)
            subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], check=True)
            self.mounted = True
        else:
            self.notes.append("not root: data on the work folder's filesystem, no disk-full window")
        self.config_file.write_text(
            "\n".join(
                [
                    "[sensor]",
                    'driver = "sim"',
                    "[sensor.sim]",
                    f'fault_file = "{self.fault_file}"',
                    "[storage]",
                    f'data_dir = "{self.mount}"',
                    "fsync = true",
                    "min_free_mb = 0",
                    f"raw_memory_seconds = {self.raw_memory_s}",
                    "[server]",
                    'host = "127.0.0.1"',
                    f"port = {self.port}",
                    "",
                ]
            )
        )
        self._write_faults()

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.mounted:
            _umount_quietly(self.mount)
            self.mounted = False
        if not self.keep:
            self.image.unlink(missing_ok=True)
            shutil.rmtree(self.downloads, ignore_errors=True)

    # ------------------------------------------------------------------ faults

    def _write_faults(self) -> None:
        cutoff = now() - 5.0
        live = [e for e in self.fault_entries if e["end"] > cutoff]
        tmp = self.fault_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"wall_offset_seconds": self.wall_offset_s, "faults": live}))
        tmp.replace(self.fault_file)

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds from start, action) for the whole run; fault windows go into the file now."""
        total = self.total_s
        kill_every = 150.0 if self.long else total / 4
        kills = [k * kill_every for k in range(1, 100) if k * kill_every <= total / 2 + 1]
        disk = (total * 0.55, total * 0.55 + min(45.0, total * 0.12))
        steps = (total * 0.3, total * 0.7)
        events: list[tuple[float, str]] = [(t, "kill") for t in kills]
        if self.mounted:
            events += [(disk[0], "disk_full"), (disk[1], "disk_free")]
        events += [(steps[0], "step_back"), (steps[1], "step_forward")]

        def clear(t0: float, t1: float) -> bool:
            near_kill = any(k - 10 < t1 and t0 < k + 15 for k in kills)
            near_disk = disk[0] - 5 < t1 and t0 < disk[1] + 10
            return not near_kill and not near_disk and t1 < total - 10

        cycle = 60.0 if self.long else 30.0
        start = self.started
        for n, c in enumerate(np.arange(15.0, total, cycle)):
            plan = [("i2c_errors", c + 5, c + 9, {"rate": 0.3}), ("stall", c + 15, c + 17, {})]
            if n % 2 == 1:
                plan.append(("vanish", c + 21, c + 27, {}))
            for kind, t0, t1, extra in plan:
                if not clear(t0, t1):
                    continue
                entry = {"id": f"{kind}-{n}", "kind": kind, "start": start + t0, "end": start + t1}
                if kind == "stall":
                    entry["stall_ms"] = 400
                entry.update(extra)
                self.fault_entries.append(entry)
                self.windows.append(Window(kind, start + t0, start + t1))
        self._write_faults()
        return sorted(events)

    def fill_disk(self) -> None:
        ballast = self.mount / "ballast.bin"
        free = os.statvfs(self.mount)
        with ballast.open("wb") as f:
            with contextlib.suppress(OSError):
                os.posix_fallocate(f.fileno(), 0, max(0, free.f_bavail * free.f_frsize - 2**20))
            chunk = b"\0" * 65536
            with contextlib.suppress(OSError):
                while True:
                    f.write(chunk)
                    f.flush()
        left = os.statvfs(self.mount)
        self.notes.append(f"disk-full window: {left.f_bavail * left.f_frsize} bytes left free")

    def free_disk(self) -> None:
        (self.mount / "ballast.bin").unlink(missing_ok=True)

    # ------------------------------------------------------------------ the service

    def launch(self) -> Incarnation:
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [*SERVICE, "--config", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(self.code)},
        )
        log.close()
        inc = Incarnation(len(self.incarnations), self.process.pid, now())
        self.incarnations.append(inc)
        return inc

    async def wait_ready(self, inc: Incarnation, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
                status, _, _ = await http_get(self.port, "/healthz", None, timeout_s=2.0)
                if status == 200:
                    inc.ready = now()
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"service incarnation {inc.index} not healthy within {timeout_s:.0f} s")

    async def kill_and_restart(self) -> None:
        assert self.process is not None
        inc = self.incarnations[-1]
        children = _children(self.process.pid)
        self.kills.append(now())
        inc.ended, inc.how = now(), "SIGKILL"
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)
        # the sampler notices its parent is gone within ~100 ms
        deadline = time.monotonic() + 5.0
        while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
            if time.monotonic() > deadline:
                for child in children:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
                self.notes.append("a sampler outlived its killed parent by 5 s; killed")
                break
            await asyncio.sleep(0.05)
        await self.wait_ready(self.launch())

    async def stop(self) -> None:
        assert self.process is not None
        inc = self.incarnations[-1]
        inc.ended, inc.how = now(), "SIGTERM"
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.process.wait), 60)
        except TimeoutError:
            self.unexpected_exits.append("did not stop within 60 s of SIGTERM")
            self.process.kill()
            self.process.wait()

    # ------------------------------------------------------------------ clients

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def _connect(self, max_size: int = 2**24) -> ClientConnection | None:
        """A new client connection, retried while the service restarts; None once stopping."""
        while not self.stopping:
            try:
                return await connect(self.url(), open_timeout=5, max_size=max_size)
            except (OSError, InvalidHandshake, TimeoutError):
                await asyncio.sleep(0.3)
        return None

    def _dropped(self, reason: str) -> None:
        if not self.stopping:
            self.tally.drops.append((now(), reason))

    async def subscriber(self, n: int) -> None:
        rate = None if n % 5 == 0 else [200.0, 100.0, 50.0, 20.0][n % 4]
        while not self.stopping:
            ws = await self._connect()
            if ws is None:
                return
            try:
                request: dict[str, Any] = {"command": "subscribe_live", "request_id": f"s{n}"}
                if rate is not None:
                    request["max_rate_hz"] = rate
                await ws.send(json.dumps(request))
                count = 0
                async for frame in ws:
                    count += 1
                    self.tally.live_frames += 1
                    self.tally.live_bytes += len(frame)
                    if count % 200 == 1:
                        kind = json.loads(frame).get("type")
                        self.tally.replies[f"push:{kind}"] += 1
                self._dropped(f"subscriber closed by server ({ws.close_code})")
            except ConnectionClosed as exc:
                self._dropped(f"subscriber: {exc.rcvd.code if exc.rcvd else 'no close frame'}")
            await asyncio.sleep(0.5)

    async def _ask(self, ws: ClientConnection, request: dict[str, Any]) -> dict[str, Any]:
        rid = f"r{self.rng.randrange(10**9)}"
        await ws.send(json.dumps({**request, "request_id": rid}))
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if reply.get("request_id") == rid:
                assert isinstance(reply, dict)
                return reply

    async def monitor(self) -> None:
        """get_status each second (the sampler's counters), RSS and /metrics every 5 s."""
        last_rss = 0.0
        while not self.stopping:
            ws = await self._connect()
            if ws is None:
                return
            try:
                while not self.stopping:
                    reply = await self._ask(ws, {"command": "get_status"})
                    inc = self.incarnations[-1]
                    if reply.get("type") == "status":
                        inc.polls.append((now(), reply["data"]))
                    if time.monotonic() - last_rss >= 5.0:
                        last_rss = time.monotonic()
                        self._sample_rss(inc)
                        await self._sample_metrics(inc)
                    await asyncio.sleep(1.0)
            except (ConnectionClosed, TimeoutError):
                pass
            await asyncio.sleep(0.2)

    def _sample_rss(self, inc: Incarnation) -> None:
        try:
            main = psutil.Process(inc.pid)
            rss_main = main.memory_info().rss
            rss_child = sum(c.memory_info().rss for c in main.children())
        except psutil.Error:
            return
        inc.rss.append((now(), rss_main, rss_child))

    async def _sample_metrics(self, inc: Incarnation) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            status, _, body = await http_get(self.port, "/metrics", None, timeout_s=5.0)
            if status == 200:
                for line in body.decode().splitlines():
                    if line and not line.startswith("#") and "{" not in line:
                        name, _, value = line.partition(" ")
                        with contextlib.suppress(ValueError):
                            inc.metrics[name] = float(value)

    async def reader(self, n: int) -> None:
        commands: list[dict[str, Any]] = [
            {"command": "get_recent_data", "seconds": 60, "max_points": 3000},
            {"command": "get_recent_data"},
            {"command": "get_file_list"},
            {"command": "get_csv_data"},
            {"command": "get_folder_structure"},
            {"command": "get_recent_data", "seconds": 5, "max_points": 100_000},
        ]
        files: list[str] = []
        k = n
        while not self.stopping:
            ws = await self._connect()
            if ws is None:
                return
            try:
                while not self.stopping:
                    request = dict(commands[k % len(commands)])
                    k += 1
                    if request["command"] == "get_csv_data":
                        if not files:
                            continue
                        request["filename"] = self.rng.choice(files)
                    reply = await self._ask(ws, request)
                    kind = str(reply.get("type"))
                    self.tally.replies[f"{request['command']}:{kind}"] += 1
                    if kind == "error":
                        self.tally.errors[f"{request['command']}: {reply.get('message')}"] += 1
                    elif kind == "file_list":
                        files = list(reply["files"])
                    elif kind == "csv_data" and reply["filename"] != request["filename"]:
                        self.tally.errors["csv_data: filename not echoed"] += 1
                    await asyncio.sleep(0.2)
            except ConnectionClosed as exc:
                self._dropped(f"reader: {exc.rcvd.code if exc.rcvd else 'no close frame'}")
            except TimeoutError:
                self._dropped("reader: no reply within 60 s")
            await asyncio.sleep(0.3)

    async def flooder(self, every_s: float) -> None:
        """Bursts of 300 requests without waiting: the rate limit answers, the socket stays up."""
        while not self.stopping:
            await asyncio.sleep(every_s)
            with contextlib.suppress(ConnectionClosed, OSError, InvalidHandshake, TimeoutError):
                ws = await self._connect()
                if ws is None:
                    return
                async with ws:
                    for i in range(300):
                        await ws.send(json.dumps({"command": "get_status", "request_id": i}))
                    seen = 0
                    while seen < 300:
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if "request_id" not in reply:
                            continue
                        seen += 1
                        if reply["type"] == "error" and "rate limited" in reply["message"]:
                            self.tally.flood_limited += 1
                        else:
                            self.tally.flood_answered += 1

    async def malformed(self, every_s: float) -> None:
        """Bad frames: each gets an error reply on a connection that stays up; oversize → 1009."""
        frames: list[str | bytes] = [
            "{not json",
            b"\xff\xfe\x00garbage",
            "[1, 2, 3]",
            '"just a string"',
            '{"command": 42}',
            '{"command": "format_disk"}',
            '{"command": "get_csv_data"}',
            '{"command": "get_csv_data", "filename": "../../../etc/passwd"}',
            '{"command": "get_csv_data", "filename": "/etc/shadow"}',
            '{"command": "get_csv_data", "filename": "2026/11/Week_4/27/../../../../x.csv"}',
            '{"command": "get_recent_data", "seconds": -1}',
            '{"command": "get_recent_data", "max_points": "many"}',
            '{"command": "get_status", "request_id": {"a": 1}}',
            "[" * 30_000 + "]" * 30_000,  # deep nesting, under the frame limit
            '{"command": "get_recent_data", "seconds": 1e999}',
            "NaN",
        ]
        while not self.stopping:
            await asyncio.sleep(every_s)
            try:
                ws = await self._connect()
                if ws is None:
                    return
                async with ws:
                    for frame in frames:
                        await ws.send(frame)
                        while True:
                            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                            if reply.get("type") in ("error", "zip_export"):
                                break
                        self.tally.malformed_ok += 1
                    await ws.send("x" * (2**16 + 1))
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), 30)
                    except ConnectionClosed as exc:
                        if exc.rcvd is not None and exc.rcvd.code == 1009:
                            self.tally.oversize_1009 += 1
                        else:
                            self.tally.malformed_bad.append(f"oversize frame: close {exc.rcvd}")
            except ConnectionClosed as exc:
                if not self.stopping and self.process and self.process.poll() is None:
                    self.tally.malformed_bad.append(f"connection closed early: {exc.rcvd}")
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if not self.stopping:
                    self.tally.malformed_bad.append(f"{type(exc).__name__}: {exc}")

    async def exporter(self, every_s: float) -> None:
        while not self.stopping:
            await asyncio.sleep(every_s)
            with contextlib.suppress(ConnectionClosed, OSError, InvalidHandshake):
                ws = await self._connect()
                if ws is None:
                    return
                async with ws:
                    try:
                        reply = await asyncio.wait_for(
                            self._ask(ws, {"command": "export_all_csv_zip"}), 300
                        )
                    except TimeoutError:
                        self.tally.exports_failed.append((now(), "no reply within 300 s"))
                        continue
                    if "error" in reply:
                        self.tally.exports_failed.append((now(), str(reply["error"])))
                        continue
                    await self._download(reply)

    async def _download(self, reply: dict[str, Any]) -> None:
        url = urlsplit(reply["download_url"])
        path = url.path + (f"?{url.query}" if url.query else "")
        target = self.downloads / "export.zip"
        try:
            status, headers, _ = await http_get(self.port, path, target, timeout_s=300)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            if not headers.get("content-disposition", "").startswith("attachment"):
                raise ValueError("no Content-Disposition: attachment")
            await asyncio.to_thread(_verify_zip, target, int(reply["file_count"]))
            self.tally.exports_ok += 1
            self.tally.export_bytes += target.stat().st_size
        except (OSError, ValueError, zipfile.BadZipFile, asyncio.IncompleteReadError) as exc:
            self.tally.exports_failed.append((now(), f"download: {exc}"))
        finally:
            target.unlink(missing_ok=True)

    async def watch_process(self) -> None:
        while not self.stopping:
            process = self.process
            if process is not None and process.poll() is not None:
                inc = self.incarnations[-1]
                if inc.ended is None:
                    inc.ended, inc.how = now(), f"exited by itself ({process.returncode})"
                    self.unexpected_exits.append(f"incarnation {inc.index}: {inc.how}")
                    await self.wait_ready(self.launch())
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ the run

    def start_attackers(self) -> list[tuple[str, subprocess.Popen[str]]]:
        """An idle-socket and an expensive-request attacker (bench/abuse.py) for the whole run,
        from their own loopback addresses; they reconnect across kills and restarts."""
        seconds = max(1.0, self.started + self.total_s - now())
        attackers = []
        for name, count, subnet in (("idle", 500, 61), ("expensive", 10, 62)):
            command = [str(PYTHON), "-m", "bench.abuse", "--attack", name, "--port", str(self.port)]
            command += ["--seconds", f"{seconds:.0f}", "--count", str(count)]
            command += ["--subnet", str(subnet)]
            attackers.append(
                (name, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True))
            )
        return attackers

    def collect_attackers(self, attackers: list[tuple[str, subprocess.Popen[str]]]) -> None:
        for name, process in attackers:
            try:
                out, _ = process.communicate(timeout=60)
                self.tally.attackers[name] = json.loads(out.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                process.kill()
                process.wait()
                self.tally.attackers[name] = {}

    async def run(self) -> None:
        self.started = now()
        events = self.schedule()
        await self.wait_ready(self.launch())
        attackers = self.start_attackers()
        short = not self.long
        disk_window = Window("disk_full", 0.0, 0.0)
        tasks = [asyncio.create_task(self.subscriber(n)) for n in range(SUBSCRIBERS)]
        tasks += [asyncio.create_task(self.reader(n)) for n in range(3)]
        tasks += [
            asyncio.create_task(self.monitor()),
            asyncio.create_task(self.flooder(20.0 if short else 45.0)),
            asyncio.create_task(self.malformed(15.0 if short else 40.0)),
            asyncio.create_task(self.exporter(40.0 if short else 120.0)),
            asyncio.create_task(self.watch_process()),
        ]
        for at, action in events:
            await asyncio.sleep(max(0.0, self.started + at - now()))
            print(f"soak {now() - self.started:7.1f} s: {action}", flush=True)
            if action == "kill":
                await self.kill_and_restart()
            elif action == "disk_full":
                disk_window = Window("disk_full", now(), now())
                self.windows.append(disk_window)
                await asyncio.to_thread(self.fill_disk)
            elif action == "disk_free":
                self.free_disk()
                disk_window.end = now()
            elif action == "step_back":
                self.wall_offset_s = -DAY_S
                self._write_faults()
                self.windows.append(Window("wall_step_back", now(), now()))
            elif action == "step_forward":
                self.wall_offset_s = 0.0
                self._write_faults()
                self.windows.append(Window("wall_step_forward", now(), now()))
        await asyncio.sleep(max(0.0, self.started + self.total_s - now()))
        # a last counter poll right before the stop
        with contextlib.suppress(Exception):
            last = await self._connect()
            assert last is not None  # not stopping yet
            async with last:
                reply = await self._ask(last, {"command": "get_status"})
                self.incarnations[-1].polls.append((now(), reply["data"]))
        self.stopping = True
        await self.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.collect_attackers, attackers)


# ---------------------------------------------------------------------- helpers


def _revision() -> str:
    """The commit the soak ran, and whether the tree had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "an unknown revision"
    return f"`{head}`"


def _verify_zip(path: Path, file_count: int) -> None:
    """The export holds as many CSVs as announced and every member's CRC is right."""
    with zipfile.ZipFile(path) as archive:
        csvs = [n for n in archive.namelist() if n.endswith(".csv")]
        if len(csvs) != file_count:
            raise ValueError(f"{len(csvs)} CSVs in the ZIP, the reply said {file_count}")
        bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"CRC error in {bad}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _umount_quietly(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", str(path)], check=False)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


async def http_get(
    port: int, path: str, dest: Path | None, timeout_s: float
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET on 127.0.0.1; the body streamed to `dest` when given."""

    async def fetch() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = b""
            if dest is None:
                body = await reader.read()
            else:
                with dest.open("wb") as f:
                    while chunk := await reader.read(1 << 16):
                        f.write(chunk)
            return status, headers, body
        finally:
            writer.close()

    return await asyncio.wait_for(fetch(), timeout_s)


# ---------------------------------------------------------------------- analysis


@dataclasses.dataclass
class DiskData:
    t_us: np.ndarray[Any, Any]  # every stored row, true time after undoing injected steps
    files: int
    rows: int
    torn: list[str]
    out_of_order: int
    magnitude_bad: int
    stepped_rows: int


def read_segments(readings: Path, run_start: float) -> tuple[DiskData, list[tuple[str, bytes]]]:
    times: list[np.ndarray[Any, Any]] = []
    torn: list[str] = []
    out_of_order = magnitude_bad = rows = stepped = 0
    bodies: list[tuple[str, bytes]] = []
    for path in sorted(readings.rglob("*.csv")):
        relative = path.relative_to(readings).as_posix()
        if not SEGMENT_RE.match(relative):
            continue
        data = path.read_bytes()
        if not data.startswith(HEADER):
            torn.append(f"{relative}: header")
            continue
        body = data[len(HEADER) :]
        bodies.append((relative, body))
        if body and not body.endswith(b"\n"):
            torn.append(f"{relative}: no newline at the end")
        lines = body.split(b"\n")[:-1]
        good = [line for line in lines if ROW_RE.fullmatch(line)]
        if len(good) != len(lines):
            bad = next(line for line in lines if not ROW_RE.fullmatch(line))
            torn.append(f"{relative}: {len(lines) - len(good)} bad row(s), e.g. {bad[:80]!r}")
        if not good:
            continue
        stamps = np.array([line[:26] for line in good]).astype("U26").astype("datetime64[us]")
        t_us = stamps.astype(np.int64)
        values = np.array([line[28:].split(b",") for line in good], dtype=np.float64)
        expected = np.sqrt((values[:, :3] ** 2).sum(axis=1))
        magnitude_bad += int((np.abs(expected - values[:, 3]) > 3e-6).sum())
        out_of_order += int((np.diff(t_us) <= 0).sum())
        # rows written while the injected offset was −1 day sit a day before the run began
        shifted = t_us < (run_start - 3600.0) * 1e6
        stepped += int(shifted.sum())
        times.append(t_us + shifted * np.int64(DAY_S * 1e6))
        rows += len(good)
    all_t = np.sort(np.concatenate(times)) if times else np.zeros(0, dtype=np.int64)
    return DiskData(all_t, len(bodies), rows, torn, out_of_order, magnitude_bad, stepped), bodies


def aggregate_exact(readings: Path, bodies: list[tuple[str, bytes]]) -> tuple[bool, str]:
    """header + every retained segment's rows, each exactly once, in one piece each."""
    aggregate = (readings / "aggregate_data.csv").read_bytes()
    if not aggregate.startswith(HEADER):
        return False, "aggregate header missing"
    by_head = {body[:64]: (name, body) for name, body in bodies if body}
    offset, used = len(HEADER), []
    while offset < len(aggregate):
        found = by_head.get(aggregate[offset : offset + 64])
        if found is None or aggregate[offset : offset + len(found[1])] != found[1]:
            return False, f"bytes at offset {offset} are no segment's rows"
        used.append(found[0])
        offset += len(found[1])
    missing = {name for name, body in bodies if body} - set(used)
    if missing or len(used) != len(set(used)):
        return False, f"segments missing {sorted(missing)[:3]} or repeated"
    firsts = [by_head_first(b) for _, b in sorted(bodies, key=lambda nb: used.index(nb[0]))]
    order = "time order" if firsts == sorted(firsts) else "recording order"
    return True, f"{len(used)} segments, {len(aggregate)} bytes, {order}"


def by_head_first(body: bytes) -> bytes:
    return body[:26]


@dataclasses.dataclass
class Episode:
    start_us: int
    end_us: int
    missing: int
    gaps: int
    cause: str = ""
    counted: int = 0


def _counters_between(inc: Incarnation, t0: float, t1: float) -> dict[str, int] | None:
    before = [d for t, d in inc.polls if t <= t0]
    after = [d for t, d in inc.polls if t >= t1]
    if not before or not after:
        return None
    a, b = before[-1]["sampler"], after[0]["sampler"]
    keys = ("lost_overflow", "lost_handoff", "lost_missed_deadlines", "reconnects", "fifo_resets")
    return {k: int(b[k]) - int(a[k]) for k in keys}


def analyse(soak: Soak) -> tuple[str, bool]:
    readings = soak.mount / "readings"
    disk, bodies = read_segments(readings, soak.started)
    exact, exact_detail = aggregate_exact(readings, bodies)
    t = disk.t_us
    duplicates = int((np.diff(t) <= 0).sum()) if t.size > 1 else 0
    incs = soak.incarnations
    episodes: list[Episode] = []
    kill_rows: list[tuple[int, float, float, float]] = []  # inc, lost samples, window s, gap s
    stored_by_inc: list[int] = []
    for inc in incs:
        assert inc.ended is not None
        lo = np.searchsorted(t, inc.launched * 1e6)
        hi = np.searchsorted(t, inc.ended * 1e6 + 1)
        mine = t[lo:hi]
        stored_by_inc.append(int(mine.size))
        if mine.size > 1:
            diffs = np.diff(mine)
            at = np.flatnonzero(diffs > 1.5 * PERIOD_US)
            for i in at:
                missing = round(diffs[i] / PERIOD_US) - 1
                ep = Episode(int(mine[i]), int(mine[i + 1]), missing, 1)
                if episodes and ep.start_us - episodes[-1].end_us < EPISODE_MERGE_S * 1e6:
                    last = episodes[-1]
                    last.end_us, last.missing, last.gaps = (
                        ep.end_us,
                        last.missing + missing,
                        last.gaps + 1,
                    )
                else:
                    episodes.append(ep)
                episodes[-1].cause = f"inc{inc.index}"
        if inc.how == "SIGKILL" and mine.size:
            window_s = inc.ended - mine[-1] / 1e6
            nxt = incs[inc.index + 1] if inc.index + 1 < len(incs) else None
            after = np.searchsorted(t, inc.ended * 1e6)
            first_next = t[after] / 1e6 if nxt and after < t.size else inc.ended
            kill_rows.append(
                (inc.index, max(0.0, window_s) * RATE_HZ, window_s, first_next - inc.ended)
            )
    # attribute each gap episode to a counted cause
    fifo_lost = absent_samples = 0
    unattributed: list[Episode] = []
    disk_windows = [w for w in soak.windows if w.kind == "disk_full"]
    for ep in episodes:
        inc = incs[int(ep.cause[3:])]
        counters = _counters_between(inc, ep.start_us / 1e6 - 0.2, ep.end_us / 1e6 + 1.0)
        if counters is None:
            ep.cause = "unattributed (no counter poll around it)"
            unattributed.append(ep)
            continue
        counted = counters["lost_overflow"] + counters["lost_handoff"]
        counted += counters["lost_missed_deadlines"]
        ep.counted = counted
        tolerance = 2 + 2 * counters["fifo_resets"]
        if counters["reconnects"] > 0 and ep.missing + tolerance >= counted:
            ep.cause = f"sensor absent/reset, {counters['reconnects']} reconnect(s)"
            fifo_lost += counted
            absent_samples += ep.missing - counted
        elif counted and abs(ep.missing - counted) <= tolerance:
            ep.cause = f"FIFO reset, counted {counted}"
            fifo_lost += ep.missing
        elif any(
            w.start <= ep.end_us / 1e6 and ep.start_us / 1e6 <= w.end + 5 for w in disk_windows
        ):
            ep.cause = "disk full (window only: the store's dropped-rows count is not exported)"
            unattributed.append(ep)
        else:
            ep.cause = f"unattributed (counters moved {counters})"
            unattributed.append(ep)
    kill_lost = round(sum(k[1] for k in kill_rows))
    worst_kill = max((k[2] for k in kill_rows), default=0.0)
    handoff = sum(int(inc.polls[-1][1]["sampler"]["lost_handoff"]) for inc in incs if inc.polls)
    produced = disk.rows + fifo_lost + kill_lost
    # cross-check with the sampler's own counters at the last poll of each incarnation
    cross: list[str] = []
    cross_bad = 0
    for inc, stored in zip(incs, stored_by_inc, strict=True):
        if not inc.polls or inc.ended is None:
            continue
        t_poll, data = inc.polls[-1]
        sampler = data["sampler"]
        tail_s = inc.ended - t_poll if data["connected"] else 0.0
        estimate = int(data["total_samples"]) + tail_s * RATE_HZ
        kill = next((k[1] for k in kill_rows if k[0] == inc.index), 0.0)
        diff = stored + kill - estimate
        ok = abs(diff) <= 0.25 * RATE_HZ or int(sampler.get("restarts", 0)) > 0
        cross_bad += not ok
        cross.append(
            f"| {inc.index} | {inc.how} | {int(data['total_samples']):,} | {tail_s:.2f} | "
            f"{stored:,} | {kill:.0f} | {diff:+.0f} | {'ok' if ok else 'MISMATCH'} |"
        )
    # RSS
    rss_lines: list[str] = []
    final = max(incs, key=lambda i: (i.ended or 0) - (i.ready or i.launched))
    growth: float | None = None
    for inc in incs:
        if not inc.rss or inc.ready is None:
            continue
        values = [r[1] for r in inc.rss]
        after = [r for r in inc.rss if r[0] >= inc.ready + soak.warmup_s]
        line = (
            f"| {inc.index} | {(inc.ended or 0) - inc.ready:.0f} | {values[0] / 2**20:.1f} | "
            f"{max(values) / 2**20:.1f} | {max(r[2] for r in inc.rss) / 2**20:.1f} |"
        )
        if len(after) >= 4:
            base = statistics.median(r[1] for r in after[:3])
            end = statistics.median(r[1] for r in after[-3:])
            peak = max(r[1] for r in after)
            g = (max(end, peak) - base) / base
            line += f" {base / 2**20:.1f} → {end / 2**20:.1f} (peak {peak / 2**20:.1f}): {g:+.1%} |"
            if inc is final:
                growth = g
        else:
            line += " (shorter than the warm-up) |"
        rss_lines.append(line)
    series = ", ".join(
        f"{r[1] / 2**20:.0f}"
        for r in final.rss[:: max(1, round(60 / 5))]  # one sample a minute (taken every 5 s)
    )
    restarts = [
        (inc.ended - 1.0, (nxt.ready or inc.ended) + 10.0)
        for inc, nxt in itertools.pairwise(incs)
        if inc.ended is not None
    ]
    clients_dropped = [d for d in soak.tally.drops if not any(a <= d[0] <= b for a, b in restarts)]
    # the service log
    log_text = soak.log_file.read_text(errors="replace") if soak.log_file.exists() else ""
    tracebacks = log_text.count("Traceback (most recent call last)")
    error_lines = Counter(
        re.sub(r"^\S+ \S+ ", "", line)[:120] for line in log_text.splitlines() if " ERROR " in line
    )
    checks = {
        "every lost sample attributed to a counted cause": not unattributed
        and worst_kill <= KILL_WINDOW_LIMIT_S
        and cross_bad == 0,
        "0 torn rows (and none out of order, duplicated or with a wrong magnitude)": not disk.torn
        and disk.out_of_order == 0
        and duplicates == 0
        and disk.magnitude_bad == 0,
        "aggregate exact": exact,
        f"RSS growth after warm-up ≤ {RSS_GROWTH_LIMIT:.0%}": growth is not None
        and growth <= RSS_GROWTH_LIMIT,
        "the service never died on its own; every restart became healthy": not soak.unexpected_exits
        and all(inc.ready is not None for inc in incs),
    }
    passed = all(checks.values())
    ty = soak.tally
    w = soak.windows
    started = dt.datetime.fromtimestamp(soak.started, dt.UTC)
    where = "a loop-mounted ext4 image" if soak.mounted else "the work folder"
    disk_seen = sum(e.missing for e in unattributed if e.cause.startswith("disk"))
    replies = {k: v for k, v in sorted(ty.replies.items()) if not k.startswith("push")}
    failed_exports = Counter(m[:60] for _, m in ty.exports_failed).most_common(3)
    lines = [
        f"## Soak: {soak.minutes:g} minutes — {'PASS' if passed else 'FAIL'}",
        "",
        f"`make soak SOAK_MINUTES={soak.minutes:g}` at {soak.revision}, "
        f"{started:%Y-%m-%d %H:%M} UTC, data on "
        f"{where}, fsync on; {SUBSCRIBERS} live subscribers, 3 readers, floods, malformed frames, "
        "an idle-socket and an expensive-request attacker, "
        "exports.",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else '**NO**'} |" for name, ok in checks.items()],
        "",
        "### Samples",
        "",
        "| | samples |",
        "|---|---:|",
        f"| produced by the sampler (stored + every counted loss) | {produced:,} |",
        f"| stored on disk ({disk.files} segment files) | {disk.rows:,} |",
        "| lost: FIFO overflow/reset (sampler `lost_overflow`, matched gap by gap) "
        f"| {fifo_lost:,} |",
        f"| lost: SIGKILL window, {len(kill_rows)} kills (unflushed at the kill; worst "
        f"{worst_kill:.2f} s) | {kill_lost:,} |",
        f"| lost: hand-off ring overflow (`lost_handoff`) | {handoff:,} |",
        f"| lost: disk full (pending buffer over its bound) | 0 counted, {disk_seen:,} seen |",
        f"| unattributed | {sum(e.missing for e in unattributed):,} |",
        "| not produced: sensor absent or reset (gaps with a reconnect) "
        f"| {absent_samples:,} samples' time |",
        f"| rows stored under the −1 day wall-clock offset (mapped back) | {disk.stepped_rows:,} |",
        "| torn rows / out of order in a file / duplicated / wrong magnitude "
        f"| {len(disk.torn)} / {disk.out_of_order} / {duplicates} / {disk.magnitude_bad} |",
        f"| aggregate_data.csv exact | {'yes' if exact else 'NO'}: {exact_detail} |",
        "",
        "Gap episodes inside a service run (gaps closer than 3 s merged), with the counters "
        "that moved:",
        "",
        "| time | gaps | missing | counted | cause |",
        "|---|---:|---:|---:|---|",
        *[
            f"| +{e.start_us / 1e6 - soak.started:.1f} s | {e.gaps} | {e.missing} | {e.counted} "
            f"| {e.cause} |"
            for e in episodes
        ],
        "",
        "Sampler counters at the last poll of each run vs the disk (estimate = counter + 800/s × "
        "seconds from that poll to the kill; tolerance ±200 samples for the pipeline in flight):",
        "",
        "| run | ended by | samples counter | s after poll | stored | kill window "
        "| stored + kill − estimate | |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
        *cross,
        "",
        "### Restarts",
        "",
        "| run | SIGKILL → first stored sample (s) | SIGKILL → /healthz 200 (s) "
        "| lost in the kill window |",
        "|---:|---:|---:|---:|",
        *[
            f"| {i} | {gap:.2f} | {(incs[i + 1].ready or 0) - (incs[i].ended or 0):.2f} "
            f"| {lost:.0f} ({win:.2f} s) |"
            for i, lost, win, gap in kill_rows
        ],
        "",
        f"### RSS (main process; warm-up {soak.warmup_s:.0f} s = raw_memory_seconds + 30 s)",
        "",
        "| run | seconds healthy | first MiB | max MiB | sampler max MiB "
        "| after warm-up: start → end (peak), growth |",
        "|---:|---:|---:|---:|---:|---|",
        *rss_lines,
        "",
        f"Main-process RSS of run {final.index}, once a minute from its start (MiB): {series}",
        "",
        "### Faults injected",
        "",
        "- I2C error bursts (30 % of transfers fail, 4 s): "
        f"{sum(x.kind == 'i2c_errors' for x in w)}; bus stalls of 400 ms (FIFO overflow): "
        f"{sum(x.kind == 'stall' for x in w)}; sensor vanished for 6 s: "
        f"{sum(x.kind == 'vanish' for x in w)}",
        f"- SIGKILL + restart: {len(soak.kills)}; wall-clock steps: "
        f"{sum(x.kind.startswith('wall_step') for x in w)} (−1 day, then back)",
        *[
            f"- disk full from +{x.start - soak.started:.0f} s for {x.end - x.start:.0f} s"
            for x in disk_windows
        ],
        *[f"- note: {n}" for n in soak.notes],
        "",
        "### Clients",
        "",
        f"- live frames received: {ty.live_frames:,} ({ty.live_bytes / 2**20:.0f} MiB); "
        f"server-side live frames dropped for slow clients: "
        f"{sum(int(i.metrics.get('wilo_live_frames_dropped_total', 0)) for i in incs)}",
        f"- clients dropped outside a kill/restart: {len(clients_dropped)}"
        + (
            f" ({Counter(r for _, r in clients_dropped).most_common(3)})" if clients_dropped else ""
        ),
        f"- read replies: {sum(replies.values())} "
        f"({', '.join(f'{k} {v}' for k, v in replies.items())})",
        f"- read errors: {sum(ty.errors.values())}"
        + (f" ({ty.errors.most_common(4)})" if ty.errors else ""),
        f"- floods: {ty.flood_limited} rate-limited, {ty.flood_answered} answered, connection kept",
        f"- malformed frames answered with an error: {ty.malformed_ok}; oversized frames closed "
        f"with 1009: {ty.oversize_1009}; problems: {ty.malformed_bad[:3] or 'none'}",
        "- attackers (bench/abuse.py, from 127.0.61.x and 127.0.62.x): 500 idle sockets that "
        "reconnect 1 s after a drop: "
        f"{ty.attackers.get('idle', {}).get('requests', 0):,} connections; 10 clients sending "
        "get_recent_data (100,000 points) 60 times a second: "
        f"{ty.attackers.get('expensive', {}).get('requests', 0):,} requests, "
        f"{ty.attackers.get('expensive', {}).get('reply_bytes', 0) / 2**20:,.0f} MiB of replies; "
        "server-side busy / rate limited: "
        f"{sum(int(i.metrics.get('wilo_ws_busy_total', 0)) for i in incs):,} / "
        f"{sum(int(i.metrics.get('wilo_ws_rate_limited_total', 0)) for i in incs):,}",
        f"- exports downloaded and verified (CRC): {ty.exports_ok} "
        f"({ty.export_bytes / 2**20:.0f} MiB); refused/failed: {len(ty.exports_failed)}"
        + (f" ({failed_exports})" if failed_exports else ""),
        "",
        "### Service log",
        "",
        f"- tracebacks: {tracebacks}; ERROR lines: {sum(error_lines.values())}",
        *[f"  - {n} × `{text}`" for text, n in error_lines.most_common(6)],
        *[f"- unexpected exit: {x}" for x in soak.unexpected_exits],
        "",
    ]
    return "\n".join(lines), passed


def write_rss_timeline(soak: Soak, target: Path) -> None:
    """Every RSS sample (each 5 s) with its run, so a peak can be matched to what ran then."""
    lines = ["run,seconds_since_soak_start,seconds_since_healthy,main_bytes,sampler_bytes"]
    for inc in soak.incarnations:
        for t, main_rss, child_rss in inc.rss:
            healthy = f"{t - inc.ready:.1f}" if inc.ready is not None else ""
            lines.append(f"{inc.index},{t - soak.started:.1f},{healthy},{main_rss},{child_rss}")
    target.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--workdir", default="/var/tmp/wilo-soak")
    parser.add_argument("--report", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the data image afterwards")
    args = parser.parse_args(argv)
    if not PYTHON.exists():
        print(f"soak: {PYTHON} missing; run `make install`", file=sys.stderr)
        return 2
    soak = Soak(args)
    soak.prepare()
    try:
        asyncio.run(soak.run())
        report, passed = analyse(soak)
    finally:
        soak.cleanup()
    print(report)
    (soak.work / "report.md").write_text(report)
    write_rss_timeline(soak, soak.work / "rss.csv")
    if args.report:
        args.report.write_text(report)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
