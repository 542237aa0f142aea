"""SIGKILL a writing process at random points, restart: nothing torn, aggregate exact."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from storehelp import FakeClock, aggregate_bytes, files_on_disk, make_config, segment_data

from wilo_backend.store.csvformat import HEADER, parse_rows
from wilo_backend.store.recovery import _line_ok
from wilo_backend.store.store import Store

CHILD = Path(__file__).with_name("crash_child.py")
ITERATIONS = 30


def _run_and_kill(folder: Path, rng: random.Random) -> int:
    """Start the writer, kill it at a random moment; returns the last time it said was on disk."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CHILD.parent), *sys.path]))
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(folder)], stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    deadline = time.monotonic() + 30
    line = b""
    while not line.startswith(b"ready"):
        assert time.monotonic() < deadline, "crash child never became ready"
        line = child.stdout.readline()
        assert line or child.poll() is None, "crash child exited before it was ready"
    kill_at = time.monotonic() + rng.uniform(0.0, 0.4)
    while time.monotonic() < kill_at:
        select.select([child.stdout], [], [], max(0.0, kill_at - time.monotonic()))
    child.send_signal(signal.SIGKILL)
    child.wait()
    reported = [int(x) for x in child.stdout.read().split() if x.isdigit()]
    return max(reported, default=0)


def _check(folder: Path, committed_t_ns: int) -> None:
    store = Store(make_config(folder, segment_seconds=1, max_files=3), monotonic=FakeClock())
    store.open()
    try:
        files = store.file_list()
        assert 1 <= len(files) <= 3
        assert store.wait_idle()
        assert files_on_disk(store.readings_dir) == sorted(files)
        assert aggregate_bytes(store) == segment_data(store)
        newest = 0
        for relative in files:
            body = (store.readings_dir / relative).read_bytes()[len(HEADER) :]
            assert body.endswith(b"\n")
            assert all(_line_ok(line) for line in body[:-1].split(b"\n")), relative
            assert len(body) % store.block_bytes == 0, "recovery re-pads the last segment"
            t, _, _ = parse_rows(body)
            assert np.all(np.diff(t) > 0)
            newest = max(newest, int(t[-1]))
        # only what was never reported as flushed may be missing
        assert newest >= committed_t_ns
    finally:
        store.close()


def test_sigkill_during_flushes_and_evictions(tmp_path: Path) -> None:
    rng = random.Random(1234)
    folder = tmp_path / "data"
    kills_with_progress = 0
    for _ in range(ITERATIONS):
        committed = _run_and_kill(folder, rng)
        kills_with_progress += committed > 0
        _check(folder, committed)
    assert kills_with_progress >= ITERATIONS // 2
