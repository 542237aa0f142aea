"""The real `wilo-backend run --sensor sim` for benchmarks: start it, find its processes, load."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
from websockets.asyncio.client import connect

LISTENING = re.compile(r"listening on [^ ]+:(\d+)")


@dataclass
class RunningService:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    exit_code: int | None = None  # once the block of running_service() has ended

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def processes(self) -> dict[str, psutil.Process]:
        """main, sampler (the acquisition process) and resource tracker, by role."""
        main = psutil.Process(self.process.pid)
        roles = {"main": main}
        for child in main.children(recursive=True):
            cmdline = " ".join(child.cmdline())
            roles["resource tracker" if "resource_tracker" in cmdline else "sampler"] = child
        return roles


def start_service(
    run_args: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """`wilo-backend run <run_args>` with its output in `log_path`: (process, port) once it
    listens; RuntimeError with its log if it exits first or is not up within `timeout_s` (then
    it is killed). Benches and tests (tests/reliability/test_security.py) start it this way."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "wilo_backend.cli", "run", *run_args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=preexec_fn,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            raise RuntimeError("service exited:\n" + log_path.read_text(errors="replace"))
        time.sleep(0.01)
    process.kill()
    raise RuntimeError(
        f"service did not come up in {timeout_s:g} s:\n" + log_path.read_text(errors="replace")
    )


@contextmanager
def running_service(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[RunningService]:
    """The service on an ephemeral loopback port until the block ends (then SIGTERM)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "service.log"
    run_args = ["--sensor", "sim", "--data-dir", str(data_dir), "--host", "127.0.0.1"]
    process, port = start_service(
        [*run_args, "--port", "0"], log_path, env={**os.environ, **(env or {})}
    )
    try:
        service = RunningService(process, port, log_path)
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        service.exit_code = code


async def request(url: str, command: str, **fields: object) -> dict[str, object]:
    async with connect(url, max_size=2**26) as ws:
        await ws.send(json.dumps({"command": command, "request_id": "b", **fields}))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("request_id") == "b":
                return dict(reply)


async def dashboard(url: str, stop: asyncio.Event, every_s: float = 10.0) -> int:
    """One dashboard (tests/fixtures/dashboard_session.json's read steps), repeated every
    `every_s` (the real one repeats file list + recent data once a minute, at each new_file),
    on one connection that also receives the status pushes. Returns replies received."""
    steps = ["get_status", "get_file_list", "get_recent_data", "get_folder_structure"]
    replies = 0
    async with connect(url, max_size=2**26) as ws:
        while not stop.is_set():
            files: list[str] = []
            for command in [*steps, "get_csv_data"]:
                fields: dict[str, object] = {"command": command, "request_id": command}
                if command == "get_csv_data":
                    if not files:
                        continue
                    fields["filename"] = files[0]
                await ws.send(json.dumps(fields))
                while True:
                    reply = json.loads(await ws.recv())
                    if reply.get("request_id") == command:
                        break
                replies += 1
                if command == "get_file_list":
                    files = list(reply.get("files", []))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
    return replies


async def live_subscriber(url: str, stop: asyncio.Event) -> int:
    frames = 0
    async with connect(url, max_size=2**26) as ws:
        await ws.send(json.dumps({"command": "subscribe_live"}))
        while not stop.is_set():
            try:
                await asyncio.wait_for(ws.recv(), timeout=1)
                frames += 1
            except TimeoutError:
                continue
    return frames
