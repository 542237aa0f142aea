"""Feature rows on disk (features/YYYY/MM/DD.csv, one a day) and in memory for fast trends.

Each window's row is appended and flushed (fdatasync) on its own, so a power cut costs at most
the window being written; a torn last line is cut off when the file is next opened. Beside each
day file, DD.minutes.csv holds one roll-up row per minute (count-weighted means, the largest
velocity, the worst zone); start-up loads those (1,440 rows a day) instead of re-parsing
86,400 rows a day, and reads only the tail of the newest day file for the last hour in full
resolution. Files older than the retention (by age, against an injectable clock) are deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wilo_backend.analytics.features import COLUMNS, N_COLUMNS, VRMS_COLUMN
from wilo_backend.analytics.series import Series, decimate
from wilo_backend.analytics.zones import NO_ZONE, ZONES, zone_name
from wilo_backend.durable import open_append, remove_empty_parents, write_all
from wilo_backend.timestamps import iso_z, parse_iso_z

log = logging.getLogger("wilo_backend.analytics.store")

HEADER = "timestamp,zone," + ",".join(COLUMNS) + "\n"
ROLLUP_HEADER = "timestamp,windows,zone,vrms_mms_max," + ",".join(COLUMNS) + "\n"
ROLLUP_SECONDS = 60
# In memory only: minutes folded into 10-minute rows, for trends of days (30 days = 4,320 rows).
COARSE_SECONDS = 600
# Full-resolution rows kept in memory: trends up to this long are served window by window.
RAW_MEMORY_SECONDS = 3600
TAIL_CHUNK_BYTES = 1 << 20
NS = 1_000_000_000
_DAY_FILE = re.compile(r"^([0-9]{4})/([0-9]{2})/([0-9]{2})(\.minutes)?\.csv$")


def _number(value: float) -> str:
    return f"{value:.6g}"


@dataclass
class _Minute:
    """The roll-up of the minute being filled."""

    start_ns: int
    count: int
    sums: npt.NDArray[np.float64]
    vmax: float
    zone: int


@dataclass(frozen=True)
class FeatureStoreStatus:
    """Counters for status and /metrics."""

    rows_written: int
    write_errors: int
    error: str
    day_files: int
    bytes_on_disk: int
    bad_lines: int
    deleted_files: int


class FeatureStore:
    """Appends feature rows, keeps the trend index, applies retention. Thread-safe."""

    def __init__(
        self,
        root: Path,
        *,
        retention_days: int,
        timezone: dt.tzinfo = dt.UTC,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.retention_days = retention_days
        self.timezone = timezone
        self.fsync = fsync
        self.clock = clock
        self._lock = threading.Lock()
        self._raw = Series(4096)
        self._minutes = Series(4096)
        self._coarse = Series(1024)
        self._minute: _Minute | None = None
        self._fd: int | None = None
        self._fd_day: dt.date | None = None
        self._swept_day: dt.date | None = None
        self.rows_written = 0
        self.write_errors = 0
        self.bad_lines = 0
        self.deleted_files = 0
        self.error = ""

    # --- layout ---------------------------------------------------------------------------

    def day_of(self, t_ns: int) -> dt.date:
        return dt.datetime.fromtimestamp(t_ns / NS, self.timezone).date()

    def day_path(self, day: dt.date, rollup: bool = False) -> Path:
        suffix = ".minutes.csv" if rollup else ".csv"
        return self.root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}{suffix}"

    def _day_files(self) -> Iterator[tuple[dt.date, bool, Path]]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/*.csv")):
            match = _DAY_FILE.match(path.relative_to(self.root).as_posix())
            if not match:
                continue
            try:
                day = dt.date(int(match[1]), int(match[2]), int(match[3]))
            except ValueError:
                continue
            yield day, bool(match[4]), path

    def _day_end_s(self, day: dt.date) -> float:
        following = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), self.timezone)
        return following.timestamp()

    # --- start-up -------------------------------------------------------------------------

    def open(self) -> None:
        """Apply retention, load the minute roll-ups and the last hour; repair after a crash.

        An unreadable folder is logged and counted, never fatal: the service runs on with an
        empty trend and every write retries.
        """
        try:
            self._load()
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load feature files from %s: %s; trends start empty", self.root, exc)

    def _load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        now_s = self.clock()
        self.sweep(now_s)
        for _, rollup, path in self._day_files():
            if rollup:
                self._load_rollups(path)
        rolled_until_ns = self._minutes.last_t_ns()
        rolled_until_ns = None if rolled_until_ns is None else rolled_until_ns + ROLLUP_SECONDS * NS
        since_ns = int((now_s - RAW_MEMORY_SECONDS) * NS)
        if rolled_until_ns is not None:
            since_ns = min(since_ns, rolled_until_ns)
        days = sorted({day for day, rollup, _ in self._day_files() if not rollup})[-2:]
        for day in days:
            for t_ns, zone, values in self._read_tail(self.day_path(day), since_ns):
                if t_ns >= (now_s - RAW_MEMORY_SECONDS) * NS:
                    self._raw.append(t_ns, 1, zone, values[VRMS_COLUMN], values)
                if rolled_until_ns is None or t_ns >= rolled_until_ns:
                    # Rows a crash left without a roll-up: roll them up now.
                    self._accumulate(t_ns, zone, np.asarray(values))
        self._flush_minute()
        self._raw.drop_before(int((now_s - RAW_MEMORY_SECONDS) * NS))
        log.info(
            "feature store %s: %d minute roll-ups, %d recent windows loaded",
            self.root,
            len(self._minutes),
            len(self._raw),
        )

    def _load_rollups(self, path: Path) -> None:
        """One DD.minutes.csv into the minute and 10-minute tiers, converted by numpy as a
        whole (30 days = 43,200 rows at start-up); a damaged file is read row by row."""
        lines = path.read_bytes().decode("utf-8", "replace").split("\n")
        fields = [line.split(",") for line in lines if line and not line.startswith("timestamp,")]
        try:
            if any(len(f) != 4 + N_COLUMNS or not f[0].endswith("Z") for f in fields):
                raise ValueError("a row of the wrong shape")
            t_ns = np.array([parse_iso_z(f[0]) for f in fields], np.int64)
            # float() on a flat list beats numpy's own str → float conversion by ~10×
            flat = [v for f in fields for v in (f[1], f[3], *f[4:])]
            numbers = np.array(list(map(float, flat))).reshape(len(fields), 2 + N_COLUMNS)
        except ValueError:
            good = list(self._rows([line.encode() for line in lines], 4 + N_COLUMNS))
            t_ns = np.array([parse_iso_z(f[0]) for f in good], np.int64)
            numbers = np.array([[float(v) for v in (f[1], f[3], *f[4:])] for f in good])
            fields = good
        if not fields:
            return
        zones = {name: i for i, name in enumerate(ZONES)}
        zone = np.array([zones.get(f[2], NO_ZONE) for f in fields], np.int8)
        count = numbers[:, 0].astype(np.int32)
        sums = numbers[:, 2:] * count[:, None]
        self._minutes.extend(t_ns, count, zone, numbers[:, 1], sums)
        coarse_t = t_ns - t_ns % (COARSE_SECONDS * NS)
        self._coarse.extend(coarse_t, count, zone, numbers[:, 1], sums)

    def _rows(self, lines: list[bytes], width: int) -> Iterator[list[str]]:
        for raw_line in lines:
            line = raw_line.decode("utf-8", "replace").strip()
            if not line or line.startswith("timestamp,"):
                continue
            fields = line.split(",")
            try:
                if len(fields) != width:
                    raise ValueError(f"{len(fields)} fields, expected {width}")
                parse_iso_z(fields[0])
            except ValueError:
                self.bad_lines += 1
                continue
            yield fields

    def _read_tail(self, path: Path, since_ns: int) -> Iterator[tuple[int, int, list[float]]]:
        """Rows of a day file at or after since_ns, reading backwards only as far as needed."""
        try:
            with path.open("rb") as f:
                position = f.seek(0, os.SEEK_END)
                data = b""
                while position > 0:
                    start = max(0, position - TAIL_CHUNK_BYTES)
                    f.seek(start)
                    data = f.read(position - start) + data
                    position = start
                    lines = data.split(b"\n", 2)
                    if position > 0 and len(lines) == 3:
                        try:
                            if parse_iso_z(lines[1].split(b",", 1)[0].decode()) < since_ns:
                                break
                        except (ValueError, UnicodeDecodeError):
                            pass
        except OSError as exc:
            log.warning("cannot read feature file %s: %s; its rows are left out", path, exc)
            return
        lines = data.split(b"\n")
        if position > 0:
            lines = lines[1:]  # the first piece is the end of an earlier line
        for fields in self._rows(lines, 2 + N_COLUMNS):
            t_ns = parse_iso_z(fields[0])
            if t_ns >= since_ns:
                zone = ZONES.index(fields[1]) if fields[1] in ZONES else NO_ZONE
                yield t_ns, zone, [float(v) for v in fields[2:]]

    # --- writing --------------------------------------------------------------------------

    def append(self, t_ns: int, zone: int, row: npt.NDArray[np.float64]) -> None:
        """Record one window: flushed to its day file, then added to the in-memory index."""
        day = self.day_of(t_ns)
        line = f"{iso_z(t_ns)},{zone_name(zone)}," + ",".join(map(_number, row.tolist()))
        self._write(day, False, line + "\n")
        with self._lock:
            self._raw.append(t_ns, 1, zone, float(row[VRMS_COLUMN]), row)
        self._accumulate(t_ns, zone, row)
        now_s = self.clock()
        today = dt.datetime.fromtimestamp(now_s, self.timezone).date()
        if today != self._swept_day:
            self.sweep(now_s)
        elif (
            len(self._raw)
            and self._raw.t_ns[self._raw.start] < (now_s - RAW_MEMORY_SECONDS - 60) * NS
        ):
            with self._lock:
                self._raw.drop_before(int((now_s - RAW_MEMORY_SECONDS) * NS))

    def _accumulate(self, t_ns: int, zone: int, row: npt.NDArray[np.float64]) -> None:
        minute_ns = t_ns - t_ns % (ROLLUP_SECONDS * NS)
        if self._minute is not None and self._minute.start_ns != minute_ns:
            self._flush_minute()
        if self._minute is None:
            self._minute = _Minute(minute_ns, 0, np.zeros(N_COLUMNS), 0.0, NO_ZONE)
        m = self._minute
        m.count += 1
        m.sums += row
        m.vmax = max(m.vmax, float(row[VRMS_COLUMN]))
        m.zone = max(m.zone, zone)

    def _flush_minute(self) -> None:
        m, self._minute = self._minute, None
        if m is None or m.count == 0:
            return
        means = m.sums / m.count
        cells = [iso_z(m.start_ns), str(m.count), zone_name(m.zone), _number(m.vmax)]
        self._write(
            self.day_of(m.start_ns), True, ",".join(cells + list(map(_number, means))) + "\n"
        )
        with self._lock:
            self._add_minute(m.start_ns, m.count, m.zone, m.vmax, means)

    def _add_minute(self, t_ns: int, count: int, zone: int, vmax: float, means: Any) -> None:
        self._minutes.add(t_ns, count, zone, vmax, means)
        self._coarse.add(t_ns - t_ns % (COARSE_SECONDS * NS), count, zone, vmax, means)

    def _write(self, day: dt.date, rollup: bool, text: str) -> None:
        """Append and flush; an I/O error is counted and logged, and the next row retries."""
        try:
            if rollup:
                fd = self._open_append(self.day_path(day, rollup=True), ROLLUP_HEADER)
                try:
                    self._write_all(fd, text)
                finally:
                    os.close(fd)
            else:
                if self._fd is None or self._fd_day != day:
                    self._close_fd()
                    self._fd = self._open_append(self.day_path(day), HEADER)
                    self._fd_day = day
                self._write_all(self._fd, text)
                self.rows_written += 1
            if self.error:
                log.info("feature files writable again")
            self.error = ""
        except OSError as exc:
            self.write_errors += 1
            if not self.error:
                log.error(
                    "cannot write feature file for %s: %s; retrying with the next row", day, exc
                )
            self.error = f"{type(exc).__name__}: {exc}"
            self._close_fd()

    def _write_all(self, fd: int, text: str) -> None:
        write_all(fd, text.encode(), fsync=self.fsync)

    def _open_append(self, path: Path, header: str) -> int:
        """Open for appending; a torn last line (a crash mid-write) is cut off first."""
        return open_append(path, header.encode(), fsync=self.fsync)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._fd_day = None, None

    def close(self) -> None:
        """Write the roll-up of the minute in progress and close the day file."""
        self._flush_minute()
        self._close_fd()

    # --- retention ------------------------------------------------------------------------

    def sweep(self, now_s: float) -> None:
        """Delete day files whose whole day is older than the retention; trim the index."""
        cutoff_s = now_s - self.retention_days * 86400
        for day, _, path in list(self._day_files()):
            if self._day_end_s(day) > cutoff_s or day == self._fd_day:
                continue
            try:
                path.unlink()
                self.deleted_files += 1
                log.info("deleted feature file %s (older than %d days)", path, self.retention_days)
            except OSError as exc:
                log.warning("cannot delete expired feature file %s: %s", path, exc)
            remove_empty_parents(path, self.root)  # its month and year, once empty
        with self._lock:
            self._minutes.drop_before(int(cutoff_s * NS))
            self._coarse.drop_before(int(cutoff_s * NS))
            self._raw.drop_before(int((now_s - RAW_MEMORY_SECONDS) * NS))
        self._swept_day = dt.datetime.fromtimestamp(now_s, self.timezone).date()

    # --- reading --------------------------------------------------------------------------

    def query(self, seconds: float, max_points: int) -> list[dict[str, Any]]:
        """Trend points of the last `seconds`, oldest first, at most max_points."""
        # nothing older than the retention is kept: a larger span (1e308 s) would only overflow
        seconds = min(seconds, self.retention_days * 86400.0 + RAW_MEMORY_SECONDS)
        now_ns = int(self.clock() * NS)
        since_ns = now_ns - int(seconds * NS)
        with self._lock:  # held while decimating: the columns are views
            if seconds <= RAW_MEMORY_SECONDS:
                columns = self._raw.since(since_ns)
            else:
                # the row that overlaps `since` counts whole
                coarse = seconds / max_points >= COARSE_SECONDS
                series, step_ns = (
                    (self._coarse, COARSE_SECONDS * NS)
                    if coarse
                    else (self._minutes, ROLLUP_SECONDS * NS)
                )
                rolled = series.since(since_ns - since_ns % step_ns)
                last_minute = self._minutes.last_t_ns()
                last = since_ns if last_minute is None else last_minute + ROLLUP_SECONDS * NS
                recent = self._raw.since(max(last, since_ns))
                if recent[0].shape[0]:
                    columns = tuple(
                        np.concatenate(pair) for pair in zip(rolled, recent, strict=True)
                    )
                else:
                    columns = rolled
            return decimate(columns, since_ns, now_ns, max_points)

    def status(self) -> FeatureStoreStatus:
        files = [path for _, _, path in self._day_files()]
        size = 0
        for path in files:
            try:
                size += path.stat().st_size
            except OSError:
                continue
        return FeatureStoreStatus(
            rows_written=self.rows_written,
            write_errors=self.write_errors,
            error=self.error,
            day_files=sum(1 for p in files if not p.name.endswith(".minutes.csv")),
            bytes_on_disk=size,
            bad_lines=self.bad_lines,
            deleted_files=self.deleted_files,
        )
