"""Issue 14, attack 1 on the real service: 1,500 idle sockets against a 1024-descriptor limit."""

from __future__ import annotations

import resource
import signal
import socket
import time
from pathlib import Path

import psutil
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .test_security import _ask, _start

IDLE_SOCKETS = 1500
ATTACKER_ADDRESSES = 50  # 30 sockets each: under the per-address cap, so the global cap decides
DESCRIPTOR_LIMIT = 1024  # the soft limit a unit without LimitNOFILE gets


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))


def _samples(port: int) -> int:
    """total_samples, as a client that retries a refused connection would get it: at the cap,
    sockets are made room for once they have waited a second without a request."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(f"ws://127.0.0.1:{port}/", open_timeout=30) as ws:
                return int(_ask(ws, "get_status")["data"]["total_samples"])
        except InvalidStatus as refused:
            assert refused.response.status_code == 503
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_idle_sockets_cannot_take_the_stores_descriptors(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_SOCKETS + 512
    if soft < wanted:  # the attacker's own sockets (root may raise the hard limit too)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    process, port, log_path = _start(tmp_path, log_level="INFO", preexec_fn=_limit_descriptors)
    idle: list[socket.socket] = []
    try:
        before = _samples(port)
        deadline = time.monotonic() + 60
        while before == 0 and time.monotonic() < deadline:  # the sampler process is starting
            time.sleep(0.2)
            before = _samples(port)
        peak_fds = 0
        for k in range(IDLE_SOCKETS):
            source = f"127.0.1.{1 + k % ATTACKER_ADDRESSES}"
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=30, source_address=(source, 0)
            )
            idle.append(sock)
            if k % 100 == 99:
                peak_fds = max(peak_fds, psutil.Process(process.pid).num_fds())
        # during the attack a client still gets in and the store still writes
        during = _samples(port)
        time.sleep(1.5)  # a few flushes and a segment boundary with every socket still open
        after = _samples(port)
        assert before < during < after
        assert peak_fds < DESCRIPTOR_LIMIT - 128
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    text = log_path.read_text()
    assert "Too many open files" not in text and "Traceback" not in text, text[-3000:]
    assert process.returncode == 0
    assert len(text.encode()) < 200 * IDLE_SOCKETS, "log bytes per attacker socket"
