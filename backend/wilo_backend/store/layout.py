"""Where segments live: dated folder names, file names, and safe resolution of requested paths."""

from __future__ import annotations

import os
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wilo_backend.model import PathRejectedError

READINGS_DIR = "readings"
EXPORTS_DIR = "exports"
SUMMARIES_DIR = "summaries"
AGGREGATE_NAME = "aggregate_data.csv"

# YYYY/MM/Week_N/DD/HHMMSS.csv, or HHMMSS_k.csv when that second already has a file (a repeated
# local hour, a wall-clock step backwards, a stop/start within one second).
_SEGMENT_RE = re.compile(
    r"^(?P<year>[0-9]{4})/(?P<month>0[1-9]|1[0-2])/Week_(?P<week>[1-5])/"
    r"(?P<day>0[1-9]|[12][0-9]|3[01])/(?P<hms>[0-9]{6})(?:_(?P<suffix>[1-9][0-9]{0,3}))?\.csv$"
)
MAX_SUFFIX = 9999


def week_of_month(day: int) -> int:
    """Week of the month as the seed defines it: days 1-7 are week 1, 29-31 week 5."""
    if not 1 <= day <= 31:
        raise ValueError(f"day of month {day} is not in 1..31")
    return (day - 1) // 7 + 1


@dataclass(frozen=True, slots=True)
class SegmentName:
    """The folder and base name of a segment, from its first sample's local time."""

    folder: str  # "2026/11/Week_4/27"
    stem: str  # "152200"

    def relative(self, suffix: int = 0) -> str:
        name = f"{self.stem}_{suffix}.csv" if suffix else f"{self.stem}.csv"
        return f"{self.folder}/{name}"


def segment_name(first_t_ns: int, tz: zoneinfo.ZoneInfo) -> SegmentName:
    """Name a segment after its first sample (UTC epoch ns), in the configured zone."""
    seconds = first_t_ns // 1_000_000_000
    local = datetime.fromtimestamp(seconds, UTC).astimezone(tz)
    folder = f"{local.year:04d}/{local.month:02d}/Week_{week_of_month(local.day)}/{local.day:02d}"
    return SegmentName(folder=folder, stem=f"{local.hour:02d}{local.minute:02d}{local.second:02d}")


def check_relative(relative: str) -> str:
    """Return `relative` if it names a segment in the hierarchy; PathRejectedError otherwise."""
    if not isinstance(relative, str):
        raise PathRejectedError(f"file name must be a string, got {type(relative).__name__}")
    if "\x00" in relative:
        raise PathRejectedError("file name contains a NUL byte")
    if "\\" in relative:
        raise PathRejectedError(f"file name {relative!r} contains a backslash")
    if relative.startswith("/"):
        raise PathRejectedError(f"file name {relative!r} is absolute; use a path from the list")
    if any(part in ("..", ".") for part in relative.split("/")):
        raise PathRejectedError(f"file name {relative!r} climbs out of the readings folder")
    match = _SEGMENT_RE.match(relative)
    if match is None:
        raise PathRejectedError(
            f"file name {relative!r} is not a segment path like 2026/11/Week_4/27/152200.csv"
        )
    if int(match["week"]) != week_of_month(int(match["day"])):
        raise PathRejectedError(f"file name {relative!r}: week does not match the day")
    return relative


def is_segment_relative(relative: str) -> bool:
    try:
        check_relative(relative)
    except PathRejectedError:
        return False
    return True


def resolve_inside(base: Path, relative: str) -> Path:
    """`base/relative` with every symlink resolved, refused if it lands outside `base`."""
    real_base = Path(os.path.realpath(base))
    target = Path(os.path.realpath(real_base / relative))
    if target != real_base and real_base not in target.parents:
        raise PathRejectedError(f"file name {relative!r} resolves outside its folder")
    return target


def resolve_segment(readings_dir: Path, relative: str) -> Path:
    """The absolute path of an existing segment file named by `relative`."""
    target = resolve_inside(readings_dir, check_relative(relative))
    if not target.is_file():
        raise PathRejectedError(f"file {relative!r} does not exist (it may have been rotated out)")
    return target
