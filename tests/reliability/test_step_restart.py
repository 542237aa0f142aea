"""Soak-found: a restart after a backward wall-clock step must not take the stepped segments
for the remains of an interrupted eviction and delete them (store/recovery.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from storehelp import Feeder, aggregate_bytes, make_config

from clocks import FakeClock
from wilo_backend.store.csvformat import HEADER, parse_rows
from wilo_backend.store.store import Store

DAY_S = 86_400.0


def _rows(store: Store) -> int:
    return sum(
        parse_rows((store.readings_dir / rel).read_bytes()[len(HEADER) :])[0].shape[0]
        for rel in store.file_list()
    )


def test_restart_after_a_backward_step_keeps_every_segment(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(make_config(tmp_path, segment_seconds=10), monotonic=clock)
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(25.0)
    feeder.step_clock(-DAY_S)  # NTP or a boot without RTC: the wall clock goes back a day
    feeder.feed(25.0)
    store.close()
    files, rows = store.file_list(), _rows(store)
    assert rows == 50 * 800 and store.status().clock_steps == 1

    again = Store(make_config(tmp_path, segment_seconds=10), monotonic=FakeClock())
    again.open()
    assert sorted(again.file_list()) == sorted(files)
    assert _rows(again) == rows
    # the aggregate is exact again: header + every segment once, in the store's order
    expected = HEADER + b"".join(
        (again.readings_dir / rel).read_bytes()[len(HEADER) :]
        for rel in reversed(again.file_list())
    )
    assert again.wait_idle()
    assert aggregate_bytes(again) == expected
    again.close()
