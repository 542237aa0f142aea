"""Durable append-only files, for segments and feature files alike: whole writes (pwrite or
append), synced folders, a torn last line cut back to the last complete one, emptied folders
removed."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

TORN_TAIL_WINDOW_BYTES = 1 << 16


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` (a short write is continued, none at all is EIO)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view = view[written:]
        offset += written


def write_all(fd: int, data: bytes, *, fsync: bool) -> None:
    """Append all of `data` (an O_APPEND descriptor), then fdatasync when asked."""
    while data:
        data = data[os.write(fd, data) :]
    if fsync:
        os.fdatasync(fd)


def sync_dir(path: Path) -> None:
    """fsync a folder, so that a file just created in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_prefix(
    tail: bytes, line_ok: Callable[[bytes], bool] | None = None, *, trust_first: bool = False
) -> int:
    """Bytes of `tail` up to and including its last complete line (one `line_ok` accepts, if
    given); 0 if there is none. `trust_first`: the first line of `tail` was cut by the read
    window, so it was written long before and is accepted as it is."""
    keep = len(tail)
    while True:
        end = tail.rfind(b"\n", 0, keep)
        if end < 0:
            return 0
        line_start = tail.rfind(b"\n", 0, end) + 1
        if line_ok is None or (line_start == 0 and trust_first) or line_ok(tail[line_start:end]):
            return end + 1
        keep = line_start


def open_append(path: Path, header: bytes, *, fsync: bool) -> int:
    """Open for appending (folders made, synced when new); a torn last line (a crash mid-write)
    is cut off first, and an empty file gets `header`."""
    new_dir = not path.parent.is_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            start = max(0, size - TORN_TAIL_WINDOW_BYTES)
            tail = os.pread(fd, size - start, start)
            prefix = complete_prefix(tail)
            keep = 0 if prefix == 0 else start + prefix
            os.ftruncate(fd, keep)
            log.warning("%s: cut a torn last line (%d bytes)", path, size - keep)
            size = keep
        if size == 0:
            write_all(fd, header, fsync=fsync)
            if fsync:
                sync_dir(path.parent)
                if new_dir:
                    sync_dir(path.parent.parent)
    except OSError:
        os.close(fd)
        raise
    return fd


def remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove `path`'s parent folders while empty, up to but not including `stop`."""
    folder = path.parent
    while folder != stop and stop in folder.parents:
        with contextlib.suppress(OSError):
            folder.rmdir()
        if folder.exists():
            return
        folder = folder.parent
