"""image/vmtest.py's row rate: readings_gap.py counts the rows by their own timestamps.

`make image-test` runs the same command on the VM over SSH; here it runs in a local shell on
segments written as the service writes them, so the command line, the polling while the window's
end is not flushed, and the reading of the script's answer are the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from image.vmtest import GAP_SCRIPT, CheckError, counter_deltas, loss_counters, window_rate

from wilo_backend.model import SamplerStats, StorageStatus
from wilo_backend.server.metrics import ServerCounters, render_metrics

from .test_readings_gap import T0, _segment

# the VM runs `python3`; here the test's own interpreter is found first on the PATH
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


class LocalShell:
    """A host's shell as vmtest's Shell: the commands run, each noted."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def __call__(self, command: str, stdin: str | None) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        return subprocess.run(
            ["bash", "-c", command], input=stdin, capture_output=True, text=True, env=ENV
        )


def _rate(readings: Path, shell: LocalShell, polls: int = 5) -> tuple[int, dict[str, Any]]:
    return window_rate(
        shell, T0, seconds=10, readings=str(readings), script=str(GAP_SCRIPT), polls=polls, poll_s=0
    )


def test_800_rows_a_second_by_timestamp_pass_wherever_the_flushes_fall(tmp_path: Path) -> None:
    # rows written in two flushes of uneven size: a count of lines between two looks would
    # read whatever happened to be flushed, the timestamps read 800/s
    stamps = [T0 + i / 800 for i in range(8001)]
    _segment(tmp_path, "000000.csv", [t for t in stamps if t < T0 + 7.3], T0 + 7.4)
    _segment(tmp_path, "000007.csv", [t for t in stamps if t >= T0 + 7.3], T0 + 10.5)
    rc, report = _rate(tmp_path, LocalShell())
    assert (rc, report["samples"], report["rows_per_s"]) == (0, 8001, 800.1), report


def test_rows_lost_fail_the_rate_and_the_hole(tmp_path: Path) -> None:
    # 0.3 s lost: 7760 rows over 10 s is 776/s, below 800 - 1
    stamps = [T0 + i / 800 for i in range(8001) if not 2.0 < i / 800 < 2.3]
    _segment(tmp_path, "000000.csv", stamps, T0 + 10.5)
    rc, report = _rate(tmp_path, LocalShell())
    assert rc == 1, report
    assert report["max_gap_s"] == 0.3


def test_a_rate_off_by_more_than_one_a_second_fails_without_a_hole(tmp_path: Path) -> None:
    # 790 rows/s evenly: no hole above 0.1 s, but the rate is not 800 +- 1
    _segment(tmp_path, "000000.csv", [T0 + i / 790 for i in range(7901)], T0 + 10.5)
    rc, report = _rate(tmp_path, LocalShell())
    assert (rc, report["rows_per_s"]) == (1, 790.1), report


def test_the_window_end_not_yet_flushed_is_polled_again(tmp_path: Path) -> None:
    stamps = [T0 + i / 800 for i in range(8001)]
    _segment(tmp_path, "000000.csv", [t for t in stamps if t < T0 + 9], T0 + 9)
    shell = LocalShell()

    def flushing(command: str, stdin: str | None) -> subprocess.CompletedProcess[str]:
        # the service's next flush lands between the first look and the second
        if len(shell.commands) == 1:
            _segment(tmp_path, "000000.csv", stamps, T0 + 10.5)
        return shell(command, stdin)

    rc, report = window_rate(
        flushing, T0, seconds=10, readings=str(tmp_path), script=str(GAP_SCRIPT), poll_s=0
    )
    assert (rc, report["samples"], len(shell.commands)) == (0, 8001, 2), report


def test_a_window_never_flushed_is_reported_after_the_last_poll(tmp_path: Path) -> None:
    _segment(tmp_path, "000000.csv", [T0 + i / 800 for i in range(7000)], T0 + 9)
    shell = LocalShell()
    rc, _ = _rate(tmp_path, shell, polls=3)
    assert (rc, len(shell.commands)) == (2, 3)


def test_no_rows_at_all_is_a_failed_rate_not_a_crash(tmp_path: Path) -> None:
    rc, report = _rate(tmp_path, LocalShell())
    assert (rc, report["rows_per_s"]) == (1, 0.0)
    assert "only 0 samples" in str(report["message"])


def test_python_failing_to_run_the_script_is_not_taken_for_poll_again(tmp_path: Path) -> None:
    # python exits 2 for a script it cannot open, as the script does for "not flushed yet"
    shell = LocalShell()
    with pytest.raises(CheckError, match="No such file"):
        window_rate(shell, T0, readings=str(tmp_path), script=str(tmp_path / "none.py"), poll_s=0)
    assert len(shell.commands) == 1


def _metrics(samples: int, overflow: int, rows: int, dropped: int) -> str:
    """The service's own /metrics text for these counters."""
    stats = SamplerStats(samples=samples, lost_overflow=overflow, lost_handoff=1, alive=True)
    storage = StorageStatus(True, "", 3, "x.csv", 10, 10**9, rows, 0, dropped)
    return render_metrics(stats, storage, ServerCounters(), collecting=True, paused=False)


def test_the_loss_counters_over_a_window_say_where_rows_went() -> None:
    # the service's real rendering: a renamed metric or label fails here, not silently on the VM
    before = loss_counters(_metrics(1000, 5, 990, 0))
    after = loss_counters(_metrics(45_572, 3_433, 45_500, 2))
    assert counter_deltas(before, after) == {
        "wilo_samples_lost_total{fifo_overflow}": 3428.0,
        "wilo_samples_lost_total{handoff}": 0.0,
        "wilo_samples_lost_total{missed_deadline}": 0.0,
        "wilo_samples_total": 44_572.0,
        "wilo_storage_rows_dropped_total": 2.0,
        "wilo_storage_rows_total": 44_510.0,
    }


def test_a_counter_first_seen_after_the_window_starts_counts_from_zero() -> None:
    assert counter_deltas({}, {"wilo_samples_total": 7.0}) == {"wilo_samples_total": 7.0}
