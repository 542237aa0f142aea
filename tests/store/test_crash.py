"""SIGKILL a writing process at random points, restart: nothing torn, aggregate exact."""

from __future__ import annotations

import os
import random
import re
import select
import signal
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
from storehelp import (
    T0_NS,
    Feeder,
    aggregate_bytes,
    files_on_disk,
    make_config,
    segment_data,
)

from clocks import FakeClock
from wilo_backend.store.aggregate import block_bytes
from wilo_backend.store.csvformat import HEADER, parse_rows
from wilo_backend.store.store import Store

ITERATIONS = 40
# The test's own idea of a whole row (SPEC §4: ISO time with µs and Z, x, y, z, magnitude, fixed
# decimals; padding adds zeros to the decimals), independent of the recovery code it checks.
WHOLE_ROW = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z(,-?\d+\.\d+){4}")


def _writer(folder: Path, out_fd: int) -> NoReturn:
    """The forked child: write segments fast, report what is on disk, until killed."""
    try:
        clock = FakeClock()
        config = make_config(folder, segment_seconds=1, max_files=3, flush_seconds=0.2)
        store = Store(config, monotonic=clock)
        store.open()
        newest = store.summaries.newest_t_ns
        feeder = Feeder(store, clock, t0_ns=T0_NS if newest is None else newest + 10**9)
        os.write(out_fd, b"ready\n")
        while True:
            feeder.feed(0.125, batch_samples=100)
            os.write(out_fd, b"%d\n" % store.status().committed_t_ns)
    finally:
        os._exit(1)


def _run_and_kill(folder: Path, rng: random.Random) -> int:
    """Fork a writer, kill it at a random moment; returns the last time it said was on disk."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _writer(folder, write_fd)
    os.close(write_fd)
    received = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready\n" not in received:
            assert time.monotonic() < deadline, "the writer never became ready"
            select.select([read_fd], [], [], 1.0)
            chunk = os.read(read_fd, 65536)
            assert chunk, "the writer exited before it was ready"
            received += chunk
        kill_at = time.monotonic() + rng.uniform(0.0, 0.3)
        while (left := kill_at - time.monotonic()) > 0:
            if select.select([read_fd], [], [], left)[0]:
                received += os.read(read_fd, 65536)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while chunk := os.read(read_fd, 65536):
            received += chunk
    finally:
        os.close(read_fd)
    reported = [int(x) for x in received.split() if x.isdigit()]
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
            assert all(WHOLE_ROW.fullmatch(line) for line in body[:-1].split(b"\n")), relative
            block = block_bytes(store.readings_dir)
            assert len(body) % block == 0, "recovery re-pads the last segment"
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
