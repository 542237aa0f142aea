"""Shared by the pi_tuning modules: back up and rewrite a file on the Pi's FAT boot partition."""

from __future__ import annotations

import os
import shutil
import tempfile
import time


def backup(path: str) -> str:
    """Copy `path` beside itself; FAT forbids ':' so Ansible's own backup names cannot be used."""
    target = f"{path}.{time.strftime('%Y%m%dT%H%M%S')}.bak"
    shutil.copy2(path, target)
    return target


def write_atomically(path: str, content: str) -> None:
    """Write a temp file in the same directory, fsync it, rename it over `path` (mode kept)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
