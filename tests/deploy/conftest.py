"""Helpers for the deployment tests: run Ansible locally with its files kept in tmp_path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
PRODUCTION_INVENTORY = ANSIBLE_DIR / "inventory" / "production.yml"

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook run: exit code, output and the PLAY RECAP per host."""

    returncode: int
    output: str
    recap: dict[str, dict[str, int]]


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """`host : ok=7 changed=2 unreachable=0 failed=0 ...` lines → {host: {ok, changed, ...}}."""
    tail = output.rsplit("PLAY RECAP", 1)[-1]
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in _RECAP.finditer(tail)
    }


def make_ansible_env(home: Path) -> dict[str, str]:
    """Environment for Ansible tools: the repo's ansible.cfg, its state under `home`, no colour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


@pytest.fixture
def ansible_env(tmp_path: Path) -> dict[str, str]:
    return make_ansible_env(tmp_path / "ansible-home")


@pytest.fixture(scope="module")
def module_ansible_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_ansible_env(tmp_path_factory.mktemp("ansible-home"))


def run_playbook(
    env: dict[str, str], inventory: Path | str, playbook: Path, *args: str
) -> PlaybookRun:
    """ansible-playbook with the test's Python as the (local) interpreter."""
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(inventory),
            str(playbook),
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    return PlaybookRun(proc.returncode, output, parse_recap(output))
