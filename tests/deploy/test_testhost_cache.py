"""molecule/testhost.sh's cache: a new rootfs drops its own architecture's older ones only.

The amd64 Molecule hosts and the arm64 image build share /var/cache/wilo-testhost; the arm64
build used to delete the amd64 rootfs (and the other way round) after each fresh debootstrap.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _lower(cache: Path, arch: str) -> Path:
    out = subprocess.run(
        [str(REPO / "molecule/testhost.sh"), "lower"],
        env={**os.environ, "TESTHOST_CACHE": str(cache), "TESTHOST_ARCH": arch},
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


@pytest.mark.skipif(os.geteuid() != 0, reason="testhost.sh runs as root only")
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_prune_keeps_the_other_architecture(tmp_path: Path, arch: str) -> None:
    current = {a: _lower(tmp_path, a) for a in ("amd64", "arm64")}
    old = {
        "amd64": tmp_path / "rootfs-bookworm-0123456789ab",
        "arm64": tmp_path / "rootfs-bookworm-arm64-0123456789ab",
    }
    for path in [*current.values(), *old.values()]:
        path.mkdir()
        path.with_name(path.name + ".tar").write_bytes(b"")
    subprocess.run(
        [str(REPO / "molecule/testhost.sh"), "prune"],
        env={**os.environ, "TESTHOST_CACHE": str(tmp_path), "TESTHOST_ARCH": arch},
        check=True,
    )
    other = "arm64" if arch == "amd64" else "amd64"
    assert not old[arch].exists() and not old[arch].with_name(old[arch].name + ".tar").exists()
    assert current[arch].is_dir() and current[arch].with_name(current[arch].name + ".tar").exists()
    assert old[other].is_dir() and current[other].is_dir()
