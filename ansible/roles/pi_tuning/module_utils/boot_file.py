"""Shared by the pi_tuning modules: back up and rewrite a file on the Pi's FAT boot partition."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any


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


def edit_file(module: Any, path: str, edit: Callable[[str], str]) -> dict[str, object]:
    """Run `edit` over the file's text; write it back (backup first if asked) when it changed.

    `edit` raises ValueError for content it refuses; that fails the task naming the file.
    Honours check mode and --diff. Returns the module result (changed, path, diff).
    """
    if not os.path.isfile(path):
        module.fail_json(msg=f"{path}: no such file (is the boot partition mounted?)")
    with open(path, encoding="utf-8") as handle:
        before = handle.read()
    try:
        after = edit(before)
    except ValueError as exc:
        module.fail_json(msg=f"{path}: {exc}")
    result: dict[str, object] = {"changed": after != before, "path": path, "content": after}
    if module._diff:
        result["diff"] = {
            "before": before,
            "after": after,
            "before_header": path,
            "after_header": path,
        }
    if after != before and not module.check_mode:
        if module.params.get("backup"):
            result["backup_file"] = backup(path)
        write_atomically(path, after)
    return result
