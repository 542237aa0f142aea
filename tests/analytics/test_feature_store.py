"""Feature files: restarts, roll-ups for long trends, retention by age, torn lines, power cuts."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from analytics.signals import START_NS, tone_batches
from clocks import FakeClock
from wilo_backend.analytics import Analytics
from wilo_backend.analytics.feature_store import (
    HEADER,
    ROLLUP_HEADER,
    FeatureStore,
)
from wilo_backend.analytics.features import N_COLUMNS, VRMS_COLUMN
from wilo_backend.config import AnalyticsConfig
from wilo_backend.timestamps import iso_z

NS = 10**9
DAY_S = 86400


def row(value: float) -> np.ndarray:
    values = np.full(N_COLUMNS, value)
    values[VRMS_COLUMN] = value
    return values


def day_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.csv"))


def test_rows_land_in_one_file_per_day_and_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(START_NS / NS + 10)
    analytics = Analytics(AnalyticsConfig(), tmp_path, fsync=False, clock=clock)
    analytics.open()
    for batch in tone_batches([(24.5, 1.0)], 10):
        analytics.feed(batch)
    before = analytics.features(3600, 1000)
    assert len(before) == 10
    analytics.close()
    root = tmp_path / "features"
    assert day_files(root) == ["2026/11/18.csv", "2026/11/18.minutes.csv"]
    text = (root / "2026/11/18.csv").read_text()
    assert text.startswith(HEADER)
    assert len(text.splitlines()) == 11
    again = Analytics(AnalyticsConfig(), tmp_path, fsync=False, clock=clock)
    again.open()
    after = again.features(3600, 1000)
    assert [r["timestamp"] for r in after] == [r["timestamp"] for r in before]
    for a, b in zip(after, before, strict=True):
        assert a["x_vrms_mms"] == pytest.approx(b["x_vrms_mms"], rel=1e-4)
        assert a["zone"] == b["zone"]
    # more rows after the restart append to the same day file
    for batch in tone_batches([(24.5, 1.0)], 2, start_ns=START_NS + 10 * NS, first_index=8000):
        again.feed(batch)
    assert len(again.features(3600, 1000)) == 12
    assert len((root / "2026/11/18.csv").read_text().splitlines()) == 13


def test_long_trends_come_from_minute_rollups_and_survive_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "features"
    hours = 3
    clock = FakeClock(START_NS / NS)
    store = FeatureStore(root, retention_days=30, fsync=False, clock=clock)
    store.open()
    for i in range(hours * 3600):
        store.append(START_NS + i * NS, 1 if i % 600 else 2, row(1.0 + (i // 3600)))
    clock.now = START_NS / NS + hours * 3600
    points = store.query(hours * 3600, 100)
    assert 90 <= len(points) <= 100
    assert sum(p["windows"] for p in points) == hours * 3600
    assert points[0]["vrms_mms"] == pytest.approx(1.0)
    assert points[-1]["vrms_mms"] == pytest.approx(3.0)
    # each bucket keeps its worst zone: one C window every 10 minutes, buckets of ~2 minutes
    assert [p["zone"] for p in points].count("C") == hours * 6
    assert {p["zone"] for p in points} == {"B", "C"}
    # crash: no close(), the minute in progress has no roll-up row on disk
    rollups = (root / "2026/11/18.minutes.csv").read_text().splitlines()
    assert rollups[0] + "\n" == ROLLUP_HEADER
    assert len(rollups) == 1 + (hours * 60 + 1) - 1  # 181 minutes touched, the last in progress
    reopened = FeatureStore(root, retention_days=30, fsync=False, clock=clock)
    reopened.open()
    again = reopened.query(hours * 3600, 100)
    assert sum(p["windows"] for p in again) == hours * 3600
    assert [p["vrms_mms"] for p in again] == pytest.approx([p["vrms_mms"] for p in points])
    # the last hour is served window by window from the tail of the day file
    assert len(reopened.query(600, 1000)) == 600


def test_max_points_keeps_the_largest_velocity(tmp_path: Path) -> None:
    clock = FakeClock(START_NS / NS + 600)
    store = FeatureStore(tmp_path, retention_days=30, fsync=False, clock=clock)
    store.open()
    for i in range(600):
        store.append(START_NS + i * NS, 0, row(9.0 if i == 301 else 0.5))
    points = store.query(600, 10)
    assert len(points) == 10
    assert max(p["vrms_mms_max"] for p in points) == pytest.approx(9.0)
    assert max(p["vrms_mms"] for p in points) < 1.0  # the mean of 60 windows hides it...
    assert sum(p["windows"] for p in points) == 600  # ...but none is lost


def test_retention_by_age_with_an_injected_clock(tmp_path: Path) -> None:
    root = tmp_path / "features"
    day0_s = dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC).timestamp()
    clock = FakeClock(day0_s)
    store = FeatureStore(root, retention_days=30, fsync=False, clock=clock)
    store.open()
    for day in range(3):  # 1, 2 and 3 October
        clock.now = day0_s + day * DAY_S
        for i in range(120):
            store.append(int((clock.now + i) * NS), 0, row(0.3))
    store.close()
    assert len(day_files(root)) == 6
    # 1 November 11:00: 1 October ended more than 30 days ago, 2 October (rows from 12:00) not
    clock.now = day0_s + 31 * DAY_S - 3600
    store = FeatureStore(root, retention_days=30, fsync=False, clock=clock)
    store.open()
    assert day_files(root) == [
        "2026/10/02.csv",
        "2026/10/02.minutes.csv",
        "2026/10/03.csv",
        "2026/10/03.minutes.csv",
    ]
    assert sum(p["windows"] for p in store.query(40 * DAY_S, 1000)) == 240
    # time goes on while running: the day change sweeps, no restart needed
    clock.now = day0_s + 33 * DAY_S + 1
    store.append(int(clock.now * NS), 0, row(0.3))
    assert day_files(root) == ["2026/11/03.csv"]
    assert not (root / "2026/10").exists()  # emptied folders go too
    assert sum(p["windows"] for p in store.query(40 * DAY_S, 1000)) == 1
    assert store.status().deleted_files == 6


def test_a_torn_last_line_is_cut_when_reopened(tmp_path: Path) -> None:
    clock = FakeClock(START_NS / NS + 5)
    store = FeatureStore(tmp_path, retention_days=30, fsync=False, clock=clock)
    store.open()
    for i in range(5):
        store.append(START_NS + i * NS, 0, row(0.2))
    store.close()
    path = tmp_path / "2026/11/18.csv"
    with path.open("a") as f:
        f.write(iso_z(START_NS + 5 * NS) + ",A,0.2,0.")  # the power went mid-line
    reopened = FeatureStore(tmp_path, retention_days=30, fsync=False, clock=clock)
    reopened.open()
    assert len(reopened.query(3600, 100)) == 5
    assert reopened.status().bad_lines == 1
    reopened.append(START_NS + 6 * NS, 0, row(0.2))
    lines = path.read_text().splitlines()
    assert len(lines) == 7
    assert all(len(line.split(",")) == 2 + N_COLUMNS for line in lines)


def test_write_errors_are_counted_and_writing_resumes(tmp_path: Path) -> None:
    root = tmp_path / "features"
    clock = FakeClock(START_NS / NS)
    store = FeatureStore(root, retention_days=30, fsync=True, clock=clock)
    store.open()
    (root / "2026").write_text("not a folder")  # the year folder cannot be made
    store.append(START_NS, 0, row(0.2))
    status = store.status()
    assert status.write_errors == 1
    assert "FileExistsError" in status.error or "NotADirectoryError" in status.error
    assert len(store.query(3600, 10)) == 1  # the trend still has the window
    (root / "2026").unlink()
    store.append(START_NS + NS, 0, row(0.2))
    assert store.status().error == ""
    assert store.status().rows_written == 1
    assert len((root / "2026/11/18.csv").read_text().splitlines()) == 2


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from wilo_backend.analytics.feature_store import FeatureStore
    from wilo_backend.analytics.features import N_COLUMNS
    start_ns = int(sys.argv[2])
    clock = lambda: start_ns / 1e9
    store = FeatureStore(Path(sys.argv[1]), retention_days=30, fsync=True, clock=clock)
    store.open()
    i = 0
    while True:
        store.append(start_ns + i * 1_000_000_000, 0, np.full(N_COLUMNS, 0.25))
        i += 1
        print(i, flush=True)
    """
)


def test_a_killed_writer_loses_at_most_the_window_in_flight(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(START_NS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported = 0
    while reported < 40:
        line = child.stdout.readline()
        assert line, "writer died early"
        reported = int(line)
    os.kill(child.pid, signal.SIGKILL)
    reported = max([reported, *(int(x) for x in child.stdout.read().split())])
    child.wait(10)
    lines = (tmp_path / "2026/11/18.csv").read_text().splitlines()
    on_disk = len(lines) - 1
    assert reported <= on_disk <= reported + 1  # every acknowledged window is on disk
    store = FeatureStore(tmp_path, retention_days=30, fsync=False, clock=FakeClock(START_NS / NS))
    store.open()
    assert sum(p["windows"] for p in store.query(3600, 10_000)) == on_disk


def test_trends_of_days_use_ten_minute_rows_and_lose_nothing(tmp_path: Path) -> None:
    clock = FakeClock(START_NS / NS)
    store = FeatureStore(tmp_path, retention_days=30, fsync=False, clock=clock)
    store.open()
    step_s = 10  # sparse windows keep the test fast; the store does not care
    total = 2 * DAY_S // step_s
    for i in range(total):
        clock.now = START_NS / NS + i * step_s
        loud = i == total // 3
        store.append(START_NS + i * step_s * NS, 3 if loud else 0, row(7.5 if loud else 0.4))
    clock.now += step_s
    points = store.query(2 * DAY_S, 100)
    assert 90 <= len(points) <= 100
    assert sum(p["windows"] for p in points) == total
    assert max(p["vrms_mms_max"] for p in points) == pytest.approx(7.5)
    assert [p["zone"] for p in points].count("D") == 1
    assert points[0]["timestamp"] == iso_z(START_NS - START_NS % (600 * NS))
    # the same figures after a restart, rebuilt from the minute files
    store.close()
    reopened = FeatureStore(tmp_path, retention_days=30, fsync=False, clock=clock)
    reopened.open()
    again = reopened.query(2 * DAY_S, 100)
    assert [p["windows"] for p in again] == [p["windows"] for p in points]
    assert [p["x_rms_ms2"] for p in again] == pytest.approx([p["x_rms_ms2"] for p in points])


def test_an_unusable_features_folder_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "features").write_text("a file where the folder should be")
    store = FeatureStore(tmp_path / "features", retention_days=30, clock=FakeClock(START_NS / NS))
    store.open()
    assert "FileExistsError" in store.status().error or "NotADirectory" in store.status().error
    store.append(START_NS, 0, row(0.2))  # counted, not raised
    assert store.status().write_errors == 1
    assert len(store.query(60, 10)) == 1
    assert len(store.query(1e308, 10)) == 1  # any span is clipped to the retention
