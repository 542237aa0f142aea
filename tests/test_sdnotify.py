"""sd_notify: datagrams reach a real AF_UNIX socket exactly as systemd expects them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from wilo_backend.sdnotify import Notifier


def test_ready_and_watchdog_reach_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(2)
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "6000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(env)
    assert notifier.enabled
    assert notifier.watchdog_seconds == 6.0
    assert notifier.ready("up")
    assert receiver.recv(256) == b"READY=1\nSTATUS=up"
    assert notifier.watchdog()
    assert receiver.recv(256) == b"WATCHDOG=1"
    notifier.close()
    receiver.close()


def test_abstract_socket_address() -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"wilo-test-{os.getpid()}"
    receiver.bind("\0" + name)
    receiver.settimeout(2)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    assert notifier.stopping()
    assert receiver.recv(64) == b"STOPPING=1"
    receiver.close()


def test_without_systemd_it_is_a_quiet_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_seconds is None
    assert not notifier.ready()
    # a watchdog meant for another process (WATCHDOG_PID) is not ours to feed
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_seconds is None


def test_unreachable_socket_is_reported_not_raised(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")}).ready()
