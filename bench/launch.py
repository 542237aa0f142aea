"""The real `wilo-backend run` as a process, for benches and tests alike: WILO_* variables left
out, output to a log file, the port read from its "listening on" line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LISTENING = re.compile(r"listening on [^ ]+:(\d+)")


def start_service(
    config: Path,
    log_path: Path,
    *,
    preexec_fn: Callable[[], None] | None = None,
    timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """(process, port) once the service listens; RuntimeError with its log if it exits first
    or is not up within `timeout_s` (then it is killed). `preexec_fn` runs in the child before
    the service (e.g. to set a limit)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WILO_")}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "wilo_backend.cli", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=preexec_fn,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            raise RuntimeError("service exited:\n" + log_path.read_text(errors="replace"))
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(
        f"service did not come up in {timeout_s:g} s:\n" + log_path.read_text(errors="replace")
    )
