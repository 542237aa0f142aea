"""Two `make molecule` runs on one machine would boot test hosts of the same names: one waits."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.mark.parametrize("target", ["molecule", "molecule-arm64"])
def test_a_second_make_molecule_gives_up_while_the_lock_is_held(
    tmp_path: Path, target: str
) -> None:
    lock = tmp_path / "molecule.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.run(
            # BIN points nowhere and the dist goes to tmp_path: were the lock ignored, the run
            # would stop at its first step, touching nothing of the checkout
            [
                "make",
                target,
                f"MOLECULE_LOCK={lock}",
                "MOLECULE_LOCK_WAIT=0",
                "BIN=/nonexistent",
                f"MOLECULE_DIST_DIR={tmp_path / 'dist'}",
                f"MOLECULE_DIST_DIR_AARCH64={tmp_path / 'dist-aarch64'}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode != 0
    assert f"another run holds {lock}" in proc.stdout
    assert f"{lock} still held, giving up" in proc.stderr
    assert "molecule-locked" not in proc.stdout + proc.stderr
