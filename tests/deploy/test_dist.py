"""make dist builds a wheelhouse that installs offline into a fresh venv and runs check-config."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO
from .render import render_role_templates


def _clean_env() -> dict[str, str]:
    """No PIP_* settings of this machine (find-links, extra indexes) may help the install."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}


def _make_dist(out: Path) -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "dist",
            f"DIST_DIR={out}",
            f"DIST_PLATFORM={platform.machine()}",
            f"TARGET_PYTHON={python}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _make_dist(out)
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with wilo-backend installed from the wheelhouse alone (no index)."""
    path = tmp_path_factory.mktemp("release") / "venv"
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=env, timeout=120)
    version = json.loads((dist / "build-info.json").read_text())["version"]
    proc = subprocess.run(
        [
            str(path / "bin/pip"),
            "install",
            "--isolated",
            "--no-index",
            "--no-cache-dir",
            "--only-binary=:all:",
            "--find-links",
            str(dist / "wheelhouse"),
            f"wilo-backend=={version}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


def test_dist_holds_the_wheel_every_runtime_dependency_and_a_build_record(dist: Path) -> None:
    wheels = sorted(p.name for p in (dist / "wheelhouse").glob("*.whl"))
    pins = [
        line.split("==")[0].lower()
        for line in (REPO / "backend/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = {w.split("-")[0].lower() for w in wheels}
    assert set(pins) | {"wilo_backend"} <= names
    info = json.loads((dist / "build-info.json").read_text())
    assert info["platform"] == platform.machine()
    assert info["wheel"] in wheels
    sums = (dist / "SHA256SUMS").read_text().split("\n")
    assert sorted(line.split("/")[-1] for line in sums if line) == wheels
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary and all(platform.machine() in w for w in binary)


@pytest.mark.parametrize(
    ("variables", "returncode", "expected"),
    [
        ({"wilo_backend_sensor_driver": "sim"}, 0, 'driver = "sim"'),
        (
            {"wilo_backend_config_overrides": {"storage": {"max_filez": 3}}},
            2,
            "storage.max_filez: unknown key",
        ),
    ],
    ids=["good", "bad-key"],
)
def test_offline_install_checks_the_rendered_config(
    venv: Path,
    tmp_path: Path,
    ansible_env: dict[str, str],
    variables: dict[str, object],
    returncode: int,
    expected: str,
) -> None:
    _, config = render_role_templates(ansible_env, tmp_path, **variables)
    proc = subprocess.run(
        [str(venv / "bin/wilo-backend"), "check-config", str(config)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == returncode, proc.stderr
    assert expected in proc.stdout + proc.stderr


def test_same_sources_build_the_same_dist_so_a_redeploy_is_no_change(
    dist: Path, tmp_path: Path
) -> None:
    # The role names a release after SHA256SUMS: a rebuilt but unchanged wheel must hash the same.
    _make_dist(tmp_path)
    assert (tmp_path / "SHA256SUMS").read_text() == (dist / "SHA256SUMS").read_text()


def test_default_dist_targets_the_pi() -> None:
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", "dist"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--platform manylinux2014_aarch64" in proc.stdout
    assert "--platform manylinux_2_28_aarch64" in proc.stdout
    assert "--python-version 3.11 --implementation cp --abi cp311" in proc.stdout
