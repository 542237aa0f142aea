"""Start-up repair of what a crash can leave: torn rows, half-done evictions, a lost aggregate."""

from __future__ import annotations

import os
from pathlib import Path

from storehelp import Feeder, aggregate_bytes, files_on_disk, make_config, segment_data

from clocks import FakeClock
from wilo_backend.store.aggregate import block_bytes, collapse_range
from wilo_backend.store.csvformat import HEADER, parse_rows
from wilo_backend.store.layout import AGGREGATE_NAME
from wilo_backend.store.store import Store


def _written_store(folder: Path, seconds: float, **overrides: object) -> tuple[Store, Feeder]:
    clock = FakeClock()
    store = Store(make_config(folder, **overrides), monotonic=clock)  # type: ignore[arg-type]
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(seconds)
    return store, feeder


def _reopen(folder: Path, **overrides: object) -> Store:
    store = Store(make_config(folder, **overrides), monotonic=FakeClock())  # type: ignore[arg-type]
    store.open()
    return store


def _check_exact(store: Store) -> None:
    assert aggregate_bytes(store) == segment_data(store)
    assert files_on_disk(store.readings_dir) == sorted(store.file_list())


def test_torn_rows_are_cut_and_the_segment_repadded(tmp_path: Path) -> None:
    store, _ = _written_store(tmp_path, 25, segment_seconds=10)
    newest = store.readings_dir / store.file_list()[0]
    flushed_rows = parse_rows(newest.read_bytes()[len(HEADER) :])[0].shape[0]
    # the process dies mid-write: half a row in the segment, a partial copy in the aggregate
    with newest.open("ab") as f:
        f.write(b"2026-11-27T15:22:24.9")
    with (store.readings_dir / AGGREGATE_NAME).open("ab") as f:
        f.write(b"2026-11-27T15:22:2")
    again = _reopen(tmp_path, segment_seconds=10)
    body = newest.read_bytes()[len(HEADER) :]
    assert body.endswith(b"\n") and len(body) % block_bytes(again.readings_dir) == 0
    assert parse_rows(body)[0].shape[0] == flushed_rows
    _check_exact(again)
    again.close()


def _collapse_oldest(store: Store, *, header: bool) -> str:
    """Do the first step(s) of an eviction by hand, as a crash would leave them."""
    oldest = store.file_list()[-1]
    data_bytes = (store.readings_dir / oldest).stat().st_size - len(HEADER)
    fd = os.open(store.readings_dir / AGGREGATE_NAME, os.O_RDWR)
    collapse_range(fd, 0, data_bytes)
    if header:
        os.pwrite(fd, HEADER, 0)
    os.close(fd)
    return oldest


def test_an_eviction_cut_short_after_the_collapse_is_finished(tmp_path: Path) -> None:
    store, _ = _written_store(tmp_path, 35, segment_seconds=10)
    # crash between the collapse and the header rewrite: the file still starts with old data
    oldest = _collapse_oldest(store, header=False)
    again = _reopen(tmp_path, segment_seconds=10)
    assert oldest not in again.file_list()
    assert not (again.readings_dir / oldest).exists()
    assert aggregate_bytes(again).startswith(HEADER)
    _check_exact(again)
    again.close()


def test_an_eviction_cut_short_before_the_unlink_is_finished(tmp_path: Path) -> None:
    store, _ = _written_store(tmp_path, 35, segment_seconds=10)
    _collapse_oldest(store, header=True)
    again = _reopen(tmp_path, segment_seconds=10)
    assert again.file_list() == store.file_list()[:-1]
    _check_exact(again)
    again.close()


def test_a_lost_or_garbled_aggregate_is_rebuilt(tmp_path: Path) -> None:
    store, _ = _written_store(tmp_path, 25, segment_seconds=10)
    store.close()
    aggregate = store.readings_dir / AGGREGATE_NAME
    aggregate.unlink()
    again = _reopen(tmp_path, segment_seconds=10)
    _check_exact(again)
    again.close()
    aggregate.write_bytes(b"rubbish\n" * 1000)
    (store.readings_dir / (AGGREGATE_NAME + ".tmp")).write_bytes(b"half a rebuild")
    third = _reopen(tmp_path, segment_seconds=10)
    _check_exact(third)
    assert not (store.readings_dir / (AGGREGATE_NAME + ".tmp")).exists()
    third.close()


def test_an_empty_segment_from_a_crash_is_removed(tmp_path: Path) -> None:
    store, _ = _written_store(tmp_path, 12, segment_seconds=10)
    store.close()
    stray = store.readings_dir / "2026/11/Week_4/27/160000.csv"
    stray.write_bytes(HEADER)
    again = _reopen(tmp_path, segment_seconds=10)
    assert not stray.exists()
    _check_exact(again)
    again.close()


def test_retention_continues_at_start_up(tmp_path: Path) -> None:
    store, _ = _written_store(tmp_path, 45, segment_seconds=10)
    store.close()
    assert len(store.file_list()) == 5
    again = _reopen(tmp_path, segment_seconds=10, max_files=2)
    assert again.file_list() == store.file_list()[:2]
    _check_exact(again)
    again.close()


def test_missing_summaries_are_rebuilt_from_csv(tmp_path: Path) -> None:
    store, feeder = _written_store(tmp_path, 25, segment_seconds=10)
    spike = feeder.batch(5)
    spike.xyz[2] = [0.0, 0.0, -140.0]
    store.append(spike)
    feeder.feed(2)
    store.close()
    for sidecar in (tmp_path / "summaries").iterdir():
        sidecar.unlink()
    again = _reopen(tmp_path, segment_seconds=10)
    peak = max(row["acceleration"] for row in again.recent(3600, 200))
    assert abs(peak - 140.0) < 1e-5
    assert len(list((tmp_path / "summaries").iterdir())) == len(again.file_list())
    again.close()


def test_every_byte_of_the_newest_segment_is_compared_with_the_aggregate_tail(
    tmp_path: Path,
) -> None:
    """A crash mid-copy can leave any byte of the newest segment's rows wrong in the aggregate,
    not only near its ends: a single changed digit anywhere must be found and repaired."""
    store, _ = _written_store(tmp_path, 25, segment_seconds=10)
    newest = store.readings_dir / store.file_list()[0]
    newest_rows = newest.stat().st_size - len(HEADER)
    store.close()
    aggregate = store.readings_dir / AGGREGATE_NAME
    size = aggregate.stat().st_size
    for fraction in (0.31, 0.5, 0.77):  # well away from both ends of the segment's rows
        offset = size - newest_rows + int(newest_rows * fraction)
        data = bytearray(aggregate.read_bytes())
        while not chr(data[offset]).isdigit():
            offset += 1
        data[offset] = ord("7") if data[offset] != ord("7") else ord("3")  # still a valid number
        aggregate.write_bytes(bytes(data))
        again = _reopen(tmp_path, segment_seconds=10)
        _check_exact(again)
        again.close()
