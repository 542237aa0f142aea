"""Retention policy: how many of the oldest segments must go, and when free space is short."""

from __future__ import annotations

import os
from pathlib import Path

MIB = 1024 * 1024


def excess_files(file_count: int, max_files: int) -> int:
    """Segments over the limit (the caller never counts the open segment as evictable)."""
    return max(0, file_count - max_files)


def below_floor(free_bytes: int, min_free_mb: int) -> bool:
    """True when free space is under the configured floor."""
    return min_free_mb > 0 and free_bytes < min_free_mb * MIB


def free_bytes_of(path: Path) -> int:
    """Bytes available to an unprivileged writer on the filesystem holding `path`."""
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize)
