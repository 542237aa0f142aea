"""A real Prometheus (Debian's package) on loopback for the fleet test, and its HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .promhelp import tool

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    """`prometheus` on 127.0.0.1 with its data in `workdir`; stop() ends it."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.log_path = workdir / "prometheus.log"
        # prometheus cannot report a port it chose: pick a free one, retry if it is taken meanwhile
        for _ in range(5):
            self.port = _free_port()
            with self.log_path.open("w") as log:
                self.process = subprocess.Popen(
                    [
                        tool("prometheus"),
                        f"--config.file={config}",
                        f"--storage.tsdb.path={workdir / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._ready():
                return
            self.stop()
            if "address already in use" not in self.log():
                break
        raise AssertionError("prometheus did not start:\n" + self.log())

    def _ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as reply:  # noqa: S310
                    if reply.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def log(self) -> str:
        return self.log_path.read_text()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a /api/v1 call; fails on an API error."""
        query = urllib.parse.urlencode(params)
        url = self.url(f"/api/v1/{path}?{query}")  # loopback http only
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (or a scalar as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            return list(data["result"])
        return [{"metric": {}, "value": data["result"]}]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def eventually(probe: Callable[[], T | None], what: str, timeout_s: float = 60.0) -> T:
    """The first truthy result of `probe`, polled every 0.25 s; fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"not seen within {timeout_s:.0f} s: {what}")
