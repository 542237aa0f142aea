"""Folder names, week of the month, and refusal of paths outside the readings hierarchy."""

from __future__ import annotations

import os
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wilo_backend.model import PathRejectedError
from wilo_backend.store.layout import (
    check_relative,
    resolve_segment,
    segment_name,
    week_of_month,
)

UTC_ZONE = zoneinfo.ZoneInfo("UTC")


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


@pytest.mark.parametrize(
    ("day", "week"), [(1, 1), (7, 1), (8, 2), (14, 2), (15, 3), (28, 4), (29, 5), (31, 5)]
)
def test_week_of_month_at_month_edges(day: int, week: int) -> None:
    assert week_of_month(day) == week


@pytest.mark.parametrize("day", [0, 32, -1])
def test_week_of_month_rejects_impossible_days(day: int) -> None:
    with pytest.raises(ValueError, match="day of month"):
        week_of_month(day)


@pytest.mark.parametrize(
    ("when", "relative"),
    [
        ("2026-11-01T00:00:00", "2026/11/Week_1/01/000000.csv"),
        ("2026-11-07T23:59:59", "2026/11/Week_1/07/235959.csv"),
        ("2026-11-08T00:00:00", "2026/11/Week_2/08/000000.csv"),
        ("2026-02-28T12:30:05", "2026/02/Week_4/28/123005.csv"),
        ("2028-02-29T01:02:03", "2028/02/Week_5/29/010203.csv"),
        ("2026-12-31T23:59:59", "2026/12/Week_5/31/235959.csv"),
        ("2027-01-01T00:00:00", "2027/01/Week_1/01/000000.csv"),
    ],
)
def test_segment_name_from_first_sample(when: str, relative: str) -> None:
    assert segment_name(_ns(when) + 999_999_999, UTC_ZONE).relative() == relative


def test_segment_name_in_a_local_zone_and_its_repeated_hour() -> None:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    # 2026-10-25: 03:00 CEST -> 02:00 CET; 00:30Z and 01:30Z are both 02:30 local
    first = segment_name(_ns("2026-10-25T00:30:00"), berlin)
    second = segment_name(_ns("2026-10-25T01:30:00"), berlin)
    assert first.relative() == second.relative() == "2026/10/Week_4/25/023000.csv"
    assert second.relative(1) == "2026/10/Week_4/25/023000_1.csv"
    # a year change in local time before UTC's
    assert (
        segment_name(_ns("2026-12-31T23:30:00"), berlin).relative().startswith("2027/01/Week_1/01/")
    )


@pytest.mark.parametrize(
    "bad",
    [
        "../etc/passwd",
        "2026/11/Week_4/27/../../../../../etc/passwd",
        "/etc/passwd",
        "2026/11/Week_4/27/152200.csv\x00.txt",
        "2026\\11\\Week_4\\27\\152200.csv",
        "aggregate_data.csv",
        "2026/11/Week_4/27/152200.txt",
        "2026/11/Week_3/27/152200.csv",
        "2026/13/Week_4/27/152200.csv",
        "2026/11/Week_4/27/./152200.csv",
        "",
        "\uff12026/11/Week_4/27/152200.csv",  # a fullwidth digit: \\d would take it
        "2026/11/Week_4/27/15220\u0660.csv",  # an Arabic-Indic zero
        "2026/11/Week_4/2\u0667/152200.csv",
        "2026/11/Week_4/27/152200_\u0661.csv",
    ],
)
def test_check_relative_rejects_non_segments(bad: str) -> None:
    with pytest.raises(PathRejectedError):
        check_relative(bad)


def test_check_relative_accepts_segment_names() -> None:
    assert check_relative("2026/11/Week_4/27/152200.csv") == "2026/11/Week_4/27/152200.csv"
    assert check_relative("2026/11/Week_4/27/152200_2.csv")


def test_resolve_refuses_a_symlink_leading_out(tmp_path: Path) -> None:
    readings = tmp_path / "readings"
    day = readings / "2026/11/Week_4/27"
    day.mkdir(parents=True)
    secret = tmp_path / "secret.csv"
    secret.write_text("nope")
    os.symlink(secret, day / "152200.csv")
    (day / "152300.csv").write_text("timestamp,x,y,z,acceleration\n")
    with pytest.raises(PathRejectedError, match="outside"):
        resolve_segment(readings, "2026/11/Week_4/27/152200.csv")
    assert resolve_segment(readings, "2026/11/Week_4/27/152300.csv") == day / "152300.csv"
    with pytest.raises(PathRejectedError, match="does not exist"):
        resolve_segment(readings, "2026/11/Week_4/27/152400.csv")
