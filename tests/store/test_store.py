"""The store on real files: rotation, names, retention, clock steps, views, restart."""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from storehelp import (
    T0_NS,
    FakeClock,
    Feeder,
    aggregate_bytes,
    files_on_disk,
    make_config,
    segment_data,
)

from wilo_backend.model import PathRejectedError, SampleBatch
from wilo_backend.store import store as store_module
from wilo_backend.store.aggregate import block_bytes
from wilo_backend.store.csvformat import HEADER, parse_rows
from wilo_backend.store.store import Store
from wilo_backend.store.summary import decimate, make_points, points_to_rows

OpenStore = Callable[..., tuple[Store, Feeder]]


def _rows(path: Path) -> bytes:
    return path.read_bytes()[len(HEADER) :]


def _assert_exact(store: Store) -> None:
    assert aggregate_bytes(store) == segment_data(store)
    assert files_on_disk(store.readings_dir) == sorted(store.file_list())


def test_segments_rotate_on_wall_time_boundaries(tmp_path: Path, clock: FakeClock) -> None:
    announced: list[tuple[str, int]] = []
    # 10 s segments: the same boundaries as the default minute, a sixth of the rows to write
    store = Store(
        make_config(tmp_path, segment_seconds=10),
        monotonic=clock,
        on_new_file=lambda rel, total: announced.append((rel, total)),
    )
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(25)
    day = "2026/11/Week_4/27"
    assert store.file_list() == [f"{day}/152220.csv", f"{day}/152210.csv", f"{day}/152200.csv"]
    assert announced == [
        (f"{day}/152200.csv", 1),
        (f"{day}/152210.csv", 2),
        (f"{day}/152220.csv", 3),
    ]
    t, _, _ = parse_rows(_rows(store.readings_dir / day / "152200.csv"))
    assert t.shape[0] == 10 * 800
    assert t[0] == T0_NS and t[-1] == T0_NS + (10 * 800 - 1) * 1_250_000
    # closed segments end on a block boundary, the aggregate is header + every segment
    oldest = store.readings_dir / store.file_list()[-1]
    assert (oldest.stat().st_size - len(HEADER)) % block_bytes(store.readings_dir) == 0
    _assert_exact(store)
    store.close()
    _assert_exact(store)
    total = sum(parse_rows(_rows(store.readings_dir / r))[0].shape[0] for r in store.file_list())
    assert total == 25 * 800  # nothing lost on a clean close


def test_segments_are_plain_csv_for_pandas_and_csv(tmp_path: Path, open_store: OpenStore) -> None:
    store, feeder = open_store(tmp_path, segment_seconds=2)
    feeder.feed(5)
    store.close_segment()
    import pandas as pd  # here: a second of every xdist worker's start-up otherwise

    for relative in store.file_list():
        path = store.readings_dir / relative
        frame = pd.read_csv(path)
        assert list(frame.columns) == ["timestamp", "x", "y", "z", "acceleration"]
        assert frame["acceleration"].dtype == np.float64
        mag = np.linalg.norm(frame[["x", "y", "z"]].to_numpy(), axis=1)
        assert np.allclose(frame["acceleration"], mag, atol=2e-6)
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(frame)
        assert all(r["timestamp"].endswith("Z") and len(r["timestamp"]) == 27 for r in rows)


def test_one_file_per_second_mode(tmp_path: Path, open_store: OpenStore) -> None:
    store, feeder = open_store(tmp_path, segment_seconds=1, max_files=5)
    feeder.feed(8.5)
    files = store.file_list()
    assert [f.rsplit("/", 1)[1] for f in files] == [
        "152208.csv",
        "152207.csv",
        "152206.csv",
        "152205.csv",
        "152204.csv",
    ]
    for relative in files[1:]:
        assert parse_rows(_rows(store.readings_dir / relative))[0].shape[0] == 800
    _assert_exact(store)


def test_retention_at_exactly_max_files_and_empty_folders(tmp_path: Path, clock: FakeClock) -> None:
    store = Store(make_config(tmp_path, segment_seconds=1, max_files=3), monotonic=clock)
    store.open()
    # 23:59:58 on the 31st: the next day (and month, and week) starts two seconds in
    feeder = Feeder(store, clock, t0_ns=T0_NS + (4 * 86400 + 8 * 3600 + 37 * 60 + 58) * 10**9)
    feeder.feed(2.5)
    assert len(store.file_list()) == 3
    first = store.file_list()[-1]
    assert first == "2026/12/Week_1/01/235958.csv"
    feeder.feed(0.4)  # the third segment fills; still exactly max_files, nothing evicted
    assert store.file_list()[-1] == first
    feeder.feed(0.2)  # the fourth segment starts: the oldest goes
    assert len(store.file_list()) == 3 and first not in store.file_list()
    assert store.wait_idle()  # its file is deleted off the writer's path
    assert not (store.readings_dir / first).exists()
    feeder.feed(2)
    assert all(f.startswith("2026/12/Week_1/02/") for f in store.file_list())
    assert store.wait_idle()
    assert not (store.readings_dir / "2026/12/Week_1/01").exists()
    _assert_exact(store)
    store.close()


def test_free_space_floor_evicts_early_but_never_the_open_segment(
    tmp_path: Path, clock: FakeClock
) -> None:
    free = {"bytes": 10**12}
    config = make_config(tmp_path, segment_seconds=1, max_files=100, min_free_mb=50)
    store = Store(config, monotonic=clock, free_bytes=lambda _path: free["bytes"])
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(6.5)
    assert len(store.file_list()) == 7
    free["bytes"] = 10 * 2**20  # below the 50 MB floor
    feeder.feed(1.2)
    # everything closed went; the open segment stays
    assert len(store.file_list()) == 1
    free["bytes"] = 10**12
    feeder.feed(3)
    assert len(store.file_list()) == 4
    _assert_exact(store)
    store.close()


def _assert_in_order(store: Store) -> None:
    for relative in store.file_list():
        t, _, _ = parse_rows(_rows(store.readings_dir / relative))
        assert np.all(np.diff(t) > 0), relative


def test_wall_clock_step_backwards_never_overwrites_or_disorders(
    tmp_path: Path, open_store: OpenStore
) -> None:
    store, feeder = open_store(tmp_path)
    feeder.feed(20)
    first = store.file_list()[0]
    feeder.step_clock(-15.0)  # back into the second the first file was named after
    feeder.feed(10)
    feeder.step_clock(+3600.0)  # NTP syncs: an hour forward
    feeder.feed(2)
    store.close_segment()
    files = store.file_list()
    assert store.status().clock_steps == 2
    assert files[-1] == first
    assert len(files) == len(set(files)) == 3
    assert parse_rows(_rows(store.readings_dir / first))[0].shape[0] == 20 * 800
    assert files[1].startswith("2026/11/Week_4/27/152205")
    _assert_in_order(store)
    _assert_exact(store)


def test_a_repeated_local_hour_gets_a_suffix(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, timezone="Europe/Berlin", segment_seconds=60)
    store = Store(config, monotonic=clock)
    store.open()
    # 2026-10-25T00:30:00Z = 02:30 CEST; an hour later 01:30Z = 02:30 CET again
    feeder = Feeder(store, clock, t0_ns=1_792_888_200 * 10**9)
    feeder.feed(2)
    feeder.t_ns += 3598 * 10**9
    feeder.index += 3598 * 800  # a gap (collection paused), not a clock step
    feeder.feed(2)
    store.close_segment()
    assert store.file_list() == [
        "2026/10/Week_4/25/023000_1.csv",
        "2026/10/Week_4/25/023000.csv",
    ]
    assert store.status().clock_steps == 0
    _assert_exact(store)


def test_close_segment_starts_a_new_file_on_next_append(
    tmp_path: Path, open_store: OpenStore
) -> None:
    store, feeder = open_store(tmp_path)
    feeder.feed(3)
    store.close_segment()
    feeder.t_ns += 5 * 10**9
    feeder.feed(1)
    assert len(store.file_list()) == 2
    _assert_exact(store)


def test_tick_flushes_without_new_samples(tmp_path: Path, open_store: OpenStore) -> None:
    store, feeder = open_store(tmp_path)
    feeder.feed(0.5)
    path = store.readings_dir / store.file_list()[0]
    before = path.stat().st_size
    feeder.clock.now += 1.0
    store.tick()
    # everything but the one row held back for the final padding is on disk
    rows = parse_rows(_rows(path))[0].shape[0]
    assert path.stat().st_size > before and rows == 399


def test_read_csv_decimates_keeping_peaks(tmp_path: Path, open_store: OpenStore) -> None:
    store, feeder = open_store(tmp_path)
    feeder.feed(10)
    spike = feeder.batch(20)
    spike.xyz[7] = [0.0, 0.0, 150.0]
    store.append(spike)
    feeder.feed(5)
    store.close_segment()
    relative = store.file_list()[0]
    rows = store.read_csv(relative, 100)
    assert len(rows) <= 100
    assert max(r["acceleration"] for r in rows) == pytest.approx(150.0)
    assert min(r["acceleration"] for r in rows) < 5
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps) and all(s.endswith("Z") for s in stamps)
    assert set(rows[0]) == {"timestamp", "acceleration", "x", "y", "z"}
    full = store.read_csv(relative, 10**6)
    assert len(full) == 15 * 800 + 20
    for bad in ["../aggregate_data.csv", "/etc/passwd", "2026/11/Week_4/27/999999.csv"]:
        with pytest.raises(PathRejectedError):
            store.read_csv(bad, 100)


def test_read_csv_in_blocks_answers_what_a_whole_file_decimation_would(
    tmp_path: Path, open_store: OpenStore
) -> None:
    store, feeder = open_store(tmp_path, segment_seconds=30)
    feeder.feed(20)  # 16,000 rows, ~1.2 MB: several 256 KiB blocks
    store.close_segment()
    relative = store.file_list()[0]
    t, xyz, accel = parse_rows(_rows(store.readings_dir / relative))
    assert t.shape[0] == 16_000
    for max_points in (2, 101, 1000, 15_999, 16_000):
        expected = points_to_rows(decimate(make_points(t, xyz, accel), max_points))
        assert store.read_csv(relative, max_points) == expected, max_points


def test_folder_structure_lists_every_segment(tmp_path: Path, open_store: OpenStore) -> None:
    store, feeder = open_store(tmp_path, segment_seconds=10)
    feeder.feed(25)
    tree = store.folder_structure()
    files = tree["2026"]["11"]["Week_4"]["27"]
    assert [f["filename"] for f in files] == ["152200.csv", "152210.csv", "152220.csv"]
    for entry in files:
        assert entry["path"] == "2026/11/Week_4/27/" + entry["filename"]
        assert entry["size"] == (store.readings_dir / entry["path"]).stat().st_size
        mtime = (store.readings_dir / entry["path"]).stat().st_mtime
        # the store's mtime may trail the last write by a moment; the dashboard shows seconds
        assert isinstance(entry["modified"], float) and abs(entry["modified"] - mtime) < 1.0
    assert store.resolve(files[0]["path"]) == store.readings_dir / files[0]["path"]


def test_recent_from_memory_is_decimated_and_in_time_order(
    tmp_path: Path, open_store: OpenStore
) -> None:
    store, feeder = open_store(tmp_path, raw_memory_seconds=20)
    feeder.feed(30)
    spike = feeder.batch(10)
    spike.xyz[3] = [120.0, 0.0, 0.0]
    store.append(spike)
    feeder.feed(30)
    rows = store.recent(10, 300)
    assert 250 <= len(rows) <= 300
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps)
    first = np.datetime64(stamps[0].rstrip("Z"))
    last = np.datetime64(stamps[-1].rstrip("Z"))
    assert np.timedelta64(9, "s") < last - first <= np.timedelta64(10, "s")
    # the whole window: older than the raw memory, answered by the summary levels
    everything = store.recent(3600, 500)
    assert len(everything) <= 500
    assert max(r["acceleration"] for r in everything) == pytest.approx(120.0, abs=1e-5)
    assert everything[0]["timestamp"] < "2026-11-27T15:22:02"
    assert everything[-1]["timestamp"] > "2026-11-27T15:22:59"


def test_recent_decimates_outside_the_lock_so_status_and_appends_do_not_wait(
    tmp_path: Path, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 100,000-point get_recent_data decimates on a worker thread while the event loop asks
    get_status and the pump appends: both take the store's lock, so recent() holds it only for
    its copy. With the decimation under the lock, a flood of such requests held get_status at
    50 ms p50 (bench abuse)."""
    store, feeder = open_store(tmp_path)
    feeder.feed(5)
    decimating, release = threading.Event(), threading.Event()
    real_decimate = store_module.decimate

    def parked(points: Any, max_points: int) -> Any:
        decimating.set()
        release.wait(10)
        return real_decimate(points, max_points)

    monkeypatch.setattr(store_module, "decimate", parked)
    worker = threading.Thread(target=store.recent, args=(5, 300))
    worker.start()
    try:
        assert decimating.wait(10), "recent() never decimated the store's copy"
        answered = threading.Event()
        threading.Thread(target=lambda: (store.status(), answered.set()), daemon=True).start()
        assert answered.wait(10), "status() waited for recent()'s decimation"
        feeder.feed(1)  # an append takes the lock too
    finally:
        release.set()
        worker.join(10)


def test_restart_recovers_index_aggregate_and_history(tmp_path: Path, clock: FakeClock) -> None:
    # 2 s segments: four of them, the newest open, as 10 s ones would be after 38 s
    config = make_config(tmp_path, segment_seconds=2, max_files=4)
    store = Store(config, monotonic=clock)
    store.open()
    feeder = Feeder(store, clock)
    feeder.feed(7)
    spike = feeder.batch(10)
    spike.xyz[0] = [0.0, 99.0, 0.0]
    store.append(spike)
    feeder.feed(0.6)
    assert len(store.file_list()) == 4
    files = store.file_list()
    store.close()

    again = Store(config, monotonic=clock)
    again.open()
    assert again.file_list() == files
    _assert_exact(again)
    history = again.recent(3600, 400)
    assert max(r["acceleration"] for r in history) == pytest.approx(99.0, abs=1e-5)
    # retention continues where it was
    more = Feeder(again, clock, t0_ns=feeder.t_ns)
    more.index = feeder.index
    more.feed(5)
    assert len(again.file_list()) == 4
    _assert_exact(again)
    again.close()


def test_export_zip_streams_segments_and_readme(tmp_path: Path, open_store: OpenStore) -> None:
    store, feeder = open_store(tmp_path, segment_seconds=5, export_keep=2)
    feeder.feed(12)
    results = [store.export_zip() for _ in range(3)]
    exports = sorted(p.name for p in (tmp_path / "exports").iterdir())
    assert len(exports) == 2 and results[-1].filename in exports
    result = results[-1]
    assert store.export_path(result.filename) == result.path
    with zipfile.ZipFile(result.path) as zf:
        names = zf.namelist()
        assert names[0] == "README.txt"
        assert "m/s^2" in zf.read("README.txt").decode() and "UTC" in zf.read("README.txt").decode()
        assert sorted(names[1:]) == sorted(store.file_list())
        closed = store.file_list()[-1]
        assert zf.read(closed) == (store.readings_dir / closed).read_bytes()
    assert result.file_count == 3
    for bad in ["../readings/aggregate_data.csv", "x.zip", "/etc/passwd"]:
        with pytest.raises(PathRejectedError):
            store.export_path(bad)


def test_batches_of_any_shape_and_zero_length(tmp_path: Path, open_store: OpenStore) -> None:
    store, feeder = open_store(tmp_path)
    store.append(SampleBatch(0, np.empty(0, dtype=np.int64), np.empty((0, 3))))
    feeder.feed(1.0, batch_samples=1)
    feeder.feed(3.0, batch_samples=2000)
    store.close_segment()
    t, _, _ = parse_rows(_rows(store.readings_dir / store.file_list()[0]))
    assert t.shape[0] == 3200
    assert io.BytesIO(aggregate_bytes(store)).read(len(HEADER)) == HEADER


def test_command_line_export_reads_the_tree_and_skips_a_half_written_row(
    tmp_path: Path, open_store: OpenStore
) -> None:
    from wilo_backend.store.export import export_readings

    store, feeder = open_store(tmp_path, segment_seconds=5)
    feeder.feed(7)
    newest = store.readings_dir / store.file_list()[0]
    complete = newest.read_bytes()
    with newest.open("ab") as f:
        f.write(b"2026-11-27T15:22:07.0")  # a write in progress
    result = export_readings(tmp_path, store.config)
    with zipfile.ZipFile(result.path) as zf:
        assert sorted(zf.namelist()) == sorted(["README.txt", *store.file_list()])
        assert zf.read(store.file_list()[0]) == complete


def test_read_csv_skips_a_line_damaged_by_someone_else(
    tmp_path: Path, open_store: OpenStore
) -> None:
    store, feeder = open_store(tmp_path, segment_seconds=5)
    feeder.feed(7)
    relative = store.file_list()[-1]
    path = store.readings_dir / relative
    lines = path.read_bytes().split(b"\n")
    lines[10] = b"this is not a row"
    path.write_bytes(b"\n".join(lines))
    rows = store.read_csv(relative, 10**6)
    assert len(rows) == 5 * 800 - 1
