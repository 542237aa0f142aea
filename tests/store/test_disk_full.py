"""Disk full and I/O errors: degraded status, no crash, no torn row, writing resumes."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from storehelp import Feeder, aggregate_bytes, make_config, segment_data

from clocks import FakeClock
from wilo_backend.durable import pwrite_all
from wilo_backend.store import store as store_module
from wilo_backend.store import writer as writer_module
from wilo_backend.store.csvformat import HEADER, parse_rows
from wilo_backend.store.recovery import _line_ok
from wilo_backend.store.store import Store


def _rows_on_disk(store: Store) -> int:
    total = 0
    for relative in store.file_list():
        body = (store.readings_dir / relative).read_bytes()[len(HEADER) :]
        assert body == b"" or body.endswith(b"\n")
        assert all(_line_ok(line) for line in body.split(b"\n")[:-1])
        total += parse_rows(body)[0].shape[0]
    return total


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test (the suite runs as root on the build machine)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_degrades_then_resumes(small_tmpfs: Path) -> None:
    clock = FakeClock()
    config = make_config(small_tmpfs, segment_seconds=5, max_files=1000)
    store = Store(config, monotonic=clock)
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(20)  # ~1 MiB of segment + 1 MiB of aggregate: the disk fills part-way
    status = store.status()
    assert not status.healthy
    assert "No space left" in status.error
    # nothing torn: every file holds whole rows and the aggregate is exactly the segments
    written = _rows_on_disk(store)
    assert 0 < written < 20 * 800
    assert aggregate_bytes(store) == segment_data(store)
    feeder.feed(5)  # sampling goes on into memory
    assert not store.status().healthy

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    feeder.feed(6)  # past the retry interval
    assert store.status().healthy and store.status().error == ""
    store.close_segment()
    assert _rows_on_disk(store) == 31 * 800  # every sample reached the disk in the end
    assert aggregate_bytes(store) == segment_data(store)
    assert store.status().rows_dropped == 0
    for relative in store.file_list():
        t = parse_rows((store.readings_dir / relative).read_bytes()[len(HEADER) :])[0]
        assert np.all(np.diff(t) > 0)
    store.close()


def test_injected_io_error_is_undone_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    store = Store(make_config(tmp_path, segment_seconds=10), monotonic=clock)
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(3)
    real_append = store_module.Aggregate.append
    failures = {"left": 3}

    def failing_append(self: store_module.Aggregate, data: bytes) -> None:
        if failures["left"]:
            failures["left"] -= 1
            # half of the data reaches the file before the error, as a real EIO might leave it
            pwrite_all(self.fd, data[: len(data) // 2], self.size)
            self.truncate(self.size)
            raise OSError(errno.EIO, "Input/output error")
        real_append(self, data)

    monkeypatch.setattr(store_module.Aggregate, "append", failing_append)
    feeder.feed(2)
    assert not store.status().healthy and "Input/output error" in store.status().error
    assert aggregate_bytes(store) == segment_data(store)
    feeder.feed(20)
    assert store.status().healthy
    store.close_segment()
    assert aggregate_bytes(store) == segment_data(store)
    assert _rows_on_disk(store) == 25 * 800


def test_backlog_is_bounded_while_the_disk_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(writer_module, "PENDING_LIMIT_SECONDS", 2.0)
    store = Store(make_config(tmp_path, segment_seconds=60), monotonic=clock)
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(1.5)

    def refuse(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.Aggregate, "append", refuse)
    feeder.feed(10)
    assert store.status().rows_dropped > 0
    assert store.status().rows_pending <= 2 * 800
    monkeypatch.undo()
    feeder.feed(6)
    assert store.status().healthy
    assert aggregate_bytes(store) == segment_data(store)


def test_start_up_on_a_full_disk_does_not_crash(small_tmpfs: Path) -> None:
    clock = FakeClock()
    config = make_config(small_tmpfs, segment_seconds=60)
    store = Store(config, monotonic=clock)
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(3)
    # the process dies (no close): the open segment is not padded; then the disk fills up
    filler = small_tmpfs / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
    again = Store(config, monotonic=clock)
    again.open()  # must not raise
    assert again.file_list() == store.file_list()
    assert aggregate_bytes(again) == segment_data(again)
    filler.unlink()
    more = Feeder(again, clock, t0_ns=feeder.t_ns + 10**9)
    more.index = feeder.index + 800
    more.feed(3)
    assert again.status().healthy
    again.close()
    assert aggregate_bytes(again) == segment_data(again)
