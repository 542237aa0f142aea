"""ZIP exports of the retained segments streamed to exports/, bounded in number and age."""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import time
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from wilo_backend.config import StorageConfig
from wilo_backend.model import ExportResult, PathRejectedError
from wilo_backend.store.layout import EXPORTS_DIR, READINGS_DIR, resolve_inside
from wilo_backend.store.recovery import scan_segment_files

log = logging.getLogger(__name__)

_EXPORT_RE = re.compile(r"^readings_[0-9]{8}T[0-9]{6}Z(?:_[0-9]+)?\.zip$")
_CHUNK_BYTES = 1 << 20

README = """wilo-backend vibration readings
===============================

Exported {exported}; {count} segment file(s).

Layout: YYYY/MM/Week_N/DD/HHMMSS.csv, N = (day - 1) // 7 + 1 (week of the month).
Folder and file names are the local time of the file's first sample in time zone {tz};
a name with a suffix (HHMMSS_1.csv) is a second that already had a file (a repeated local
hour or a clock step).

Each file is plain CSV with the header
    timestamp,x,y,z,acceleration
timestamp     ISO 8601 in UTC with microseconds and a trailing Z (always UTC, whatever the
              folder time zone)
x, y, z       acceleration along the sensor axes in m/s^2 (1 g = 9.80665 m/s^2)
acceleration  magnitude sqrt(x^2 + y^2 + z^2) in m/s^2
Samples are 800 per second. The last rows of a file may carry extra trailing zeros in their
decimals (the files are padded to a disk block size); the values are unchanged.
"""


def prune_exports(exports_dir: Path, config: StorageConfig, *, keep_extra: int = 0) -> None:
    """Delete exports older than export_max_age_seconds and all but the newest export_keep."""
    try:
        entries = [p for p in exports_dir.iterdir() if _EXPORT_RE.match(p.name)]
    except FileNotFoundError:
        return
    for stray in exports_dir.glob("*.zip.part"):
        stray.unlink(missing_ok=True)
    now = time.time()
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for index, path in enumerate(entries):
        too_old = now - path.stat().st_mtime > config.export_max_age_seconds
        if too_old or index >= config.export_keep - keep_extra:
            path.unlink(missing_ok=True)


def _export_name(exports_dir: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"readings_{stamp}.zip"
    suffix = 0
    while (exports_dir / name).exists():
        suffix += 1
        name = f"readings_{stamp}_{suffix}.zip"
    return name


def write_export(
    data_dir: Path, config: StorageConfig, segments: Iterable[tuple[str, Path, int]]
) -> ExportResult:
    """Stream (relative, path, size) segments into a new ZIP; only `size` bytes of each are read,
    so a segment still being written is exported as of now. Memory stays at one chunk."""
    exports_dir = data_dir / EXPORTS_DIR
    exports_dir.mkdir(parents=True, exist_ok=True)
    prune_exports(exports_dir, config, keep_extra=1)
    name = _export_name(exports_dir)
    final = exports_dir / name
    part = exports_dir / (name + ".part")
    count = 0
    listed = list(segments)
    try:
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            readme = README.format(
                exported=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                count=len(listed),
                tz=config.timezone,
            )
            zf.writestr("README.txt", readme)
            for relative, path, size in listed:
                try:
                    src = _open_segment(data_dir / READINGS_DIR, path)
                except FileNotFoundError:
                    continue  # rotated out while exporting
                except PathRejectedError as exc:
                    log.warning("export: %s; left out of the ZIP", exc)
                    continue
                with src, zf.open(relative, "w", force_zip64=True) as dst:
                    remaining = size
                    while remaining > 0:
                        chunk = src.read(min(_CHUNK_BYTES, remaining))
                        if not chunk:
                            break
                        dst.write(chunk)
                        remaining -= len(chunk)
                count += 1
        part.replace(final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    log.info("export %s: %d segment(s)", final, count)
    return ExportResult(path=final, filename=name, file_count=count)


def _open_segment(readings: Path, path: Path) -> BinaryIO:
    """Open a retained segment, refusing a symlink (O_NOFOLLOW) or a path leading out of
    readings/: a segment replaced by a link must not copy its target into the ZIP."""
    if not os.path.realpath(path.parent).startswith(os.path.realpath(readings) + os.sep):
        raise PathRejectedError(f"{path} is not inside {readings}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathRejectedError(f"{path} is a symbolic link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PathRejectedError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def resolve_export(exports_dir: Path, filename: str) -> Path:
    """The path of a finished export named `filename`; PathRejectedError for anything else."""
    if not isinstance(filename, str) or not _EXPORT_RE.match(filename):
        raise PathRejectedError(f"{filename!r} is not an export file name")
    target = resolve_inside(exports_dir, filename)
    if not target.is_file():
        raise PathRejectedError(f"export {filename!r} does not exist (it may have expired)")
    return target


def export_readings(data_dir: Path, config: StorageConfig) -> ExportResult:
    """Export what is on disk (for `wilo-backend export`, also while the service runs)."""
    readings = data_dir / READINGS_DIR
    segments = []
    for relative in scan_segment_files(readings):
        path = readings / relative
        segments.append((relative, path, _whole_rows_size(path)))
    return write_export(data_dir, config, segments)


def _whole_rows_size(path: Path) -> int:
    """The file's length up to its last newline: a running service may be mid-write."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        start = max(0, size - 65536)
        f.seek(start)
        tail = f.read()
    return start + tail.rfind(b"\n") + 1
