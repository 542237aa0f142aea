"""molecule/shared/files/readings_gap.py: the hole and rate verify reads back from the segments.

It reads only segments written to since shortly before the window (under qemu, parsing every
retained segment made each poll take minutes), so a segment last written long before the window
must not count, and one written during it must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "molecule/shared/files/readings_gap.py"
T0 = 1_780_000_000.0  # the window's start, epoch seconds


def _segment(readings: Path, name: str, stamps: list[float], mtime: float) -> None:
    path = readings / "2026/05/Week_4/28" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"{datetime.fromtimestamp(t, UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')},0.1,0.2,9.8,9.8\n"
        for t in stamps
    )
    path.write_text("timestamp,x,y,z,acceleration\n" + rows)
    os.utime(path, (mtime, mtime))


def _run(readings: Path, *extra: str) -> tuple[int, dict[str, float]]:
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(readings),
            "--since",
            str(T0),
            "--until",
            str(T0 + 10),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode, json.loads(out.stdout)


def test_a_hole_and_the_rate_across_two_segments(tmp_path: Path) -> None:
    # 800 rows/s for 10 s over two files, 0.5 s missing at T0 + 4
    stamps = [T0 + i / 800 for i in range(8001) if not 4.0 < i / 800 < 4.5]
    _segment(tmp_path, "000000.csv", [t for t in stamps if t < T0 + 5], T0 + 5)
    _segment(tmp_path, "000005.csv", [t for t in stamps if t >= T0 + 5], T0 + 10.5)
    rc, report = _run(tmp_path, "--max-gap", "0.6", "--rate", "760")
    assert rc == 0, report
    assert report["max_gap_s"] == 0.5
    assert report["samples"] == len(stamps)
    rc, report = _run(tmp_path, "--max-gap", "0.4")
    assert rc == 1, report


def test_a_segment_written_long_before_the_window_is_not_read(tmp_path: Path) -> None:
    _segment(tmp_path, "000000.csv", [T0 + i / 800 for i in range(8001)], T0 + 10.5)
    # rows a stale file could not hold: if it were read, they would fill the count
    _segment(tmp_path, "235900.csv", [T0 + 3 + i / 800 for i in range(800)], T0 - 31)
    rc, report = _run(tmp_path, "--max-gap", "0.1", "--rate", "800")
    assert (rc, report["samples"]) == (0, 8001), report


def test_the_window_end_not_yet_flushed_says_poll_again(tmp_path: Path) -> None:
    _segment(tmp_path, "000000.csv", [T0 + i / 800 for i in range(7000)], T0 + 9)
    rc, report = _run(tmp_path, "--max-gap", "0.1")
    assert rc == 2, report
