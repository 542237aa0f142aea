"""backend/deploy.sh builds the inventory for local and remote mode and calls `make deploy`."""

from __future__ import annotations

import os
import subprocess

import yaml

from .conftest import REPO

SCRIPT = REPO / "backend/deploy.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERVER_")}
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _split(stdout: str) -> tuple[dict[str, object], str]:
    *inventory, command = stdout.strip().splitlines()
    return yaml.safe_load("\n".join(inventory)), command


def test_local_mode_targets_this_machine_over_a_local_connection() -> None:
    proc = _run(DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    inventory, command = _split(proc.stdout)
    assert inventory == {
        "wilo_pis": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "/usr/bin/python3",
                }
            }
        }
    }
    assert command.startswith("make deploy INVENTORY=/")
    assert "PLAYBOOK=ansible/deploy.yml" in command
    assert f"DIST_PLATFORM={os.uname().machine}" in command


def test_remote_mode_uses_server_host_user_and_port_2121() -> None:
    proc = _run(
        "remote",
        DRY_RUN="1",
        SERVER_HOST="10.20.30.40",
        SERVER_USER="pi",
        PLAYBOOK="ansible/site.yml",
    )
    assert proc.returncode == 0, proc.stderr
    inventory, command = _split(proc.stdout)
    assert inventory == {
        "wilo_pis": {
            "hosts": {
                "target": {
                    "ansible_host": "10.20.30.40",
                    "ansible_port": 2121,
                    "ansible_user": "pi",
                }
            }
        }
    }
    assert "PLAYBOOK=ansible/site.yml" in command and "DIST_PLATFORM=aarch64" in command
    assert "production" not in command


def test_remote_mode_without_server_host_fails_naming_it() -> None:
    proc = _run("remote", DRY_RUN="1", SERVER_USER="pi")
    assert proc.returncode != 0
    assert "SERVER_HOST" in proc.stderr


def test_bad_mode_and_bad_port_are_refused() -> None:
    assert "unknown mode 'sideways'" in _run("sideways").stderr
    proc = _run("remote", DRY_RUN="1", SERVER_HOST="h", SERVER_USER="u", SERVER_PORT="22a")
    assert proc.returncode == 2 and "SERVER_PORT must be a number" in proc.stderr
