"""Start-up repair: find segments, cut torn last lines, re-pad, reconcile the aggregate."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from wilo_backend.durable import complete_prefix, pwrite_all
from wilo_backend.store.aggregate import Aggregate, copy_range
from wilo_backend.store.csvformat import HEADER, TIMESTAMP_BYTES, pad_rows, padding_for
from wilo_backend.store.layout import is_segment_relative
from wilo_backend.timestamps import parse_iso_z

log = logging.getLogger(__name__)

_TAIL_BYTES = 65536
# enough for any row, padded ones included (padding is < one 4 KiB block): a cold start reads
# this much of each retained segment
_REPAIR_BYTES = 16384
_PROBE_BYTES = 64


def scan_segment_files(readings_dir: Path) -> list[str]:
    """Relative paths of every segment-named regular file below `readings_dir` (no symlinks)."""
    found: list[str] = []
    for root, dirs, files in os.walk(readings_dir, followlinks=False):
        dirs.sort()
        rel_root = os.path.relpath(root, readings_dir)
        for name in sorted(files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            rel = rel.replace(os.sep, "/")
            full = Path(root) / name
            if is_segment_relative(rel) and full.is_file() and not full.is_symlink():
                found.append(rel)
    return found


def _line_ok(line: bytes) -> bool:
    """A complete data row: timestamp, four numbers."""
    if len(line) < TIMESTAMP_BYTES + 8 or line[TIMESTAMP_BYTES - 1 : TIMESTAMP_BYTES + 1] != b"Z,":
        return False
    parts = line.split(b",")
    if len(parts) != 5:
        return False
    try:
        for number in parts[1:]:
            float(number)
    except ValueError:
        return False
    return True


def repair_tail(path: Path, size: int) -> int:
    """Cut everything after the last complete row (a torn write); returns the new size."""
    with path.open("rb") as f:
        start = max(len(HEADER), size - _REPAIR_BYTES)
        f.seek(start)
        tail = f.read(size - start)
    # a line cut by the read window was written long before: trusted
    new_size = start + complete_prefix(tail, _line_ok, trust_first=start > len(HEADER))
    if new_size != size:
        log.warning("segment %s: cut %d bytes of a torn last row", path, size - new_size)
        os.truncate(path, new_size)
    return new_size


def pad_tail(path: Path, size: int, block: int) -> int:
    """Make the segment's data a block multiple by re-writing its last rows padded."""
    data_bytes = size - len(HEADER)
    pad = padding_for(data_bytes, block)
    if pad == 0 or data_bytes <= 0:
        return size
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        start = max(len(HEADER), size - _TAIL_BYTES)
        tail = os.pread(fd, size - start, start)
        cut = tail.find(b"\n") + 1 if start > len(HEADER) else 0
        rows = tail[cut:]
        # reserve the space first: on a full disk this fails before any row is touched
        os.posix_fallocate(fd, size, pad)
        pwrite_all(fd, pad_rows(rows, pad), start + cut)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("segment %s: padded its last rows by %d bytes to a block multiple", path, pad)
    return size + pad


def header_ok(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(HEADER)) == HEADER


def first_timestamp_ns(path: Path) -> int | None:
    with path.open("rb") as f:
        f.seek(len(HEADER))
        stamp = f.read(TIMESTAMP_BYTES)
    try:
        return parse_iso_z(stamp.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True, slots=True)
class SegmentExtent:
    path: Path
    data_bytes: int


def _same(agg_fd: int, agg_offset: int, seg: SegmentExtent, seg_offset: int, length: int) -> bool:
    if length <= 0:
        return True
    fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        expected = os.pread(fd, length, seg_offset)
    finally:
        os.close(fd)
    return os.pread(agg_fd, length, agg_offset) == expected


def _first_mismatch(agg: Aggregate, segments: list[SegmentExtent], first: int) -> int:
    """Index of the first segment (from `first`) whose data is not where it should be."""
    offset = len(HEADER)
    header = len(HEADER)
    for i in range(first, len(segments)):
        seg = segments[i]
        end = offset + seg.data_bytes
        if end > agg.size:
            return i
        if i == len(segments) - 1:
            # the newest segment is the one a crash may have left half-copied: compare it all
            ok = _same(agg.fd, offset, seg, header, seg.data_bytes)
        else:
            probe = min(_PROBE_BYTES, seg.data_bytes)
            ok = _same(agg.fd, offset, seg, header, probe) and _same(
                agg.fd, end - probe, seg, header + seg.data_bytes - probe, probe
            )
        if not ok:
            return i
        offset = end
    return len(segments)


def reconcile_aggregate(agg: Aggregate, segments: list[SegmentExtent]) -> int:
    """Bring the aggregate to header + segments; returns how many leading segments it had
    already dropped (an eviction interrupted before the segment file was deleted)."""
    header = len(HEADER)
    if not segments:
        agg.truncate(0)
        agg.append(HEADER)
        return 0
    skip = 0
    if _first_mismatch(agg, segments, 0) == 0:
        for k in range(1, len(segments)):
            if _first_mismatch(agg, segments[k:], 0) > 0:
                # An eviction only cuts the head: the aggregate holds the rest and no more. Longer
                # means the segments are in another order than recorded (a backward wall-clock
                # step: time order ≠ recording order); those are not evicted (soak-found loss).
                if agg.size <= header + sum(s.data_bytes for s in segments[k:]):
                    log.warning("aggregate: finishing an interrupted eviction of %d segment(s)", k)
                    skip = k
                break
    rest = segments[skip:]
    j = _first_mismatch(agg, rest, 0)
    if j == len(rest) and agg.size == header + sum(s.data_bytes for s in rest):
        if os.pread(agg.fd, header, 0) != HEADER:
            agg.write_header()
            agg.sync()
        return skip
    if j == 0:
        log.warning("aggregate: does not match the segments; rebuilding it")
        agg.rebuild((s.path, header, s.data_bytes) for s in rest)
        return skip
    offset = header + sum(s.data_bytes for s in rest[:j])
    log.warning("aggregate: re-appending %d segment(s) from byte %d", len(rest) - j, offset)
    agg.truncate(offset)
    for seg in rest[j:]:
        fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            copy_range(fd, agg.fd, header, seg.data_bytes, agg.size)
        finally:
            os.close(fd)
        agg.size += seg.data_bytes
    os.ftruncate(agg.fd, agg.size)
    agg.write_header()
    os.fsync(agg.fd)
    return skip
