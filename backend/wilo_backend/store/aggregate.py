"""readings/aggregate_data.csv: header + the data of every retained segment, trimmed in O(1).

Appends go at the tracked end with pwrite, so a failed write is undone by truncating back.
Evicting the oldest segment collapses its data length at offset 0 (FALLOC_FL_COLLAPSE_RANGE,
metadata only on ext4/XFS) and rewrites the header in place: with the segment's data a multiple
of the block size and at least one header long, what remains is exactly header + the rest.
Where the filesystem refuses (tmpfs, EOPNOTSUPP) or the segment is unaligned, a streaming
rebuild into a temporary file that is renamed over the aggregate.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wilo_backend.durable import pwrite_all

FALLOC_FL_COLLAPSE_RANGE = 0x08
_COPY_CHUNK_BYTES = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


def collapse_range(fd: int, offset: int, length: int) -> None:
    """Remove [offset, offset+length) from the file, shifting the rest down; OSError if refused."""
    if _fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fallocate(COLLAPSE_RANGE): {os.strerror(err)}")


def collapse_supported_in(folder: Path) -> bool:
    """Try COLLAPSE_RANGE on a scratch file in `folder` (tmpfs, vfat, btrfs refuse it)."""
    probe = folder / ".collapse-probe"
    block = block_bytes(folder)
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        pwrite_all(fd, bytes(3 * block), 0)
        collapse_range(fd, 0, block)
        return os.fstat(fd).st_size == 2 * block
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def block_bytes(path: Path) -> int:
    """Filesystem block size, the unit COLLAPSE_RANGE works in."""
    return int(os.statvfs(path).f_bsize)


def copy_range(src_fd: int, dst_fd: int, src_offset: int, length: int, dst_offset: int) -> None:
    """Copy bytes between files without passing them through Python objects where possible."""
    while length > 0:
        try:
            copied = os.copy_file_range(src_fd, dst_fd, length, src_offset, dst_offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            chunk = os.pread(src_fd, min(length, _COPY_CHUNK_BYTES), src_offset)
            if not chunk:
                raise OSError(errno.EIO, "source ended early while copying") from exc
            pwrite_all(dst_fd, chunk, dst_offset)
            copied = len(chunk)
        if copied == 0:
            raise OSError(errno.EIO, "source ended early while copying")
        src_offset += copied
        dst_offset += copied
        length -= copied


class Aggregate:
    """The aggregate file, open for the store's lifetime; `size` is its committed length."""

    def __init__(self, path: Path, header: bytes, *, fsync: bool) -> None:
        self.path = path
        self.header = header
        self.fsync = fsync
        self.fd = -1
        self.size = 0
        self.collapse_supported = True
        self.collapses = 0
        self.rebuilds = 0
        self.bytes_appended = 0  # counted for the write-amplification figure
        self.bytes_rebuilt = 0

    def open(self) -> None:
        self.collapse_supported = collapse_supported_in(self.path.parent)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.drop_cache()

    def drop_cache(self) -> None:
        """Write back and forget the aggregate's cached pages (see append)."""
        if self.fsync and self.size:
            os.fdatasync(self.fd)
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def sync(self) -> None:
        if self.fsync:
            os.fdatasync(self.fd)

    def append(self, data: bytes) -> None:
        """Add `data` at the end; on error the file is cut back so no partial row remains."""
        try:
            pwrite_all(self.fd, data, self.size)
            self.sync()
        except OSError:
            self.truncate(self.size)
            raise
        if self.fsync:
            # Nobody reads the aggregate back; keeping its ~300 MB in the page cache would make
            # every COLLAPSE_RANGE drop (and the Pi hold) all those pages. Synced pages are clean.
            os.posix_fadvise(self.fd, self.size, len(data), os.POSIX_FADV_DONTNEED)
        self.size += len(data)
        self.bytes_appended += len(data)

    def truncate(self, size: int) -> None:
        """Cut the file to `size` (best effort on a failing disk: shrinking needs no space)."""
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            return
        self.size = size

    def write_header(self) -> None:
        pwrite_all(self.fd, self.header, 0)

    def can_collapse(self, data_bytes: int, block: int) -> bool:
        return (
            self.collapse_supported
            and data_bytes % block == 0
            and data_bytes >= len(self.header)
            and self.size > data_bytes
        )

    def collapse_head(self, data_bytes: int) -> bool:
        """Drop the oldest segment's `data_bytes` in O(1); False if the filesystem refuses."""
        try:
            collapse_range(self.fd, 0, data_bytes)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
                self.collapse_supported = False
                return False
            if exc.errno == errno.EINVAL:
                return False
            raise
        self.size -= data_bytes
        # no sync here: if the header write is lost, start-up sees the data regions still
        # matching the segments and rewrites the header (recovery.reconcile_aggregate)
        self.write_header()
        self.collapses += 1
        return True

    def rebuild(self, sources: Iterable[tuple[Path, int, int]]) -> None:
        """Rewrite as header + each (path, offset, length) source, streamed, then renamed over.

        A crash leaves either the old file or the new one (plus a stray .tmp removed at start-up).
        """
        tmp, fd = self._new_tmp()
        try:
            offset = len(self.header)
            for path, start, length in sources:
                src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    copy_range(src, fd, start, length, offset)
                finally:
                    os.close(src)
                offset += length
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._install(tmp, fd, offset)

    def trim_copy(self, drop_bytes: int, end: int) -> TrimJob:
        """First half of a background trim: a new file of header + this file's bytes from
        after the dropped head up to `end` (no lock needed: that range no longer changes)."""
        tmp, fd = self._new_tmp()
        start = len(self.header) + drop_bytes
        try:
            copy_range(self.fd, fd, start, end - start, len(self.header))
            if self.fsync:
                os.fdatasync(fd)  # the bulk reaches the disk here, not under the writer's lock
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return TrimJob(tmp, fd, start, end)

    def trim_finish(self, job: TrimJob) -> None:
        """Second half, under the writer's lock: copy what was appended meanwhile, swap files."""
        try:
            copy_range(
                self.fd,
                job.fd,
                job.end,
                self.size - job.end,
                job.end - job.start + len(self.header),
            )
        except BaseException:
            self.trim_abandon(job)
            raise
        self._install(job.tmp, job.fd, self.size - job.start + len(self.header))

    def trim_abandon(self, job: TrimJob) -> None:
        with contextlib.suppress(OSError):
            os.close(job.fd)
        job.tmp.unlink(missing_ok=True)

    def _new_tmp(self) -> tuple[Path, int]:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            pwrite_all(fd, self.header, 0)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return tmp, fd

    def _install(self, tmp: Path, fd: int, size: int) -> None:
        """fsync the new file, rename it over the aggregate, and continue appending to it."""
        try:
            os.ftruncate(fd, size)
            if self.fsync:
                os.fsync(fd)
            tmp.replace(self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.close()
        self.fd = fd
        self.size = size
        self.rebuilds += 1
        self.bytes_rebuilt += size
        self.drop_cache()


@dataclass(frozen=True, slots=True)
class TrimJob:
    """A background trim in progress: the new file and the old file's range copied so far."""

    tmp: Path
    fd: int
    start: int
    end: int
