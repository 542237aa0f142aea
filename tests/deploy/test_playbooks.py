"""Playbooks parse, the production inventory says what the spec says (read only, never used)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import ANSIBLE_DIR, BIN, PRODUCTION_INVENTORY


@pytest.mark.parametrize("playbook", ["site.yml", "deploy.yml", "rollback.yml"])
def test_playbook_passes_syntax_check(playbook: str, ansible_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "--syntax-check",
            str(ANSIBLE_DIR / playbook),
        ],
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"playbook: {ANSIBLE_DIR / playbook}" in proc.stdout


def test_syntax_check_catches_a_broken_playbook(
    tmp_path: Path, ansible_env: dict[str, str]
) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  tasks:\n    - ansible.builtin.no_such_module: {}\n")
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "--syntax-check", str(broken)],
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0


def test_production_inventory_has_the_pi_on_port_2121_in_the_fleet_group(
    ansible_env: dict[str, str],
) -> None:
    # ansible-inventory only reads the file; nothing connects.
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(PRODUCTION_INVENTORY), "--list"],
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    inventory = json.loads(proc.stdout)
    assert inventory["wilo_pis"]["hosts"] == ["wilo-pi-01"]
    host = inventory["_meta"]["hostvars"]["wilo-pi-01"]
    assert host["ansible_host"] == "172.168.4.70"
    assert host["ansible_port"] == 2121
    assert host["pi_tuning_reboot"] is True
    # serial is templated before hosts exist: an inventory value would be silently ignored
    assert "wilo_serial" not in host
    assert "wilo_max_fail_percentage" not in host


def test_every_playbook_targets_the_fleet_in_serial_batches() -> None:
    for name in ("site.yml", "deploy.yml", "rollback.yml"):
        (play,) = yaml.safe_load((ANSIBLE_DIR / name).read_text())
        assert play["hosts"] == "{{ wilo_hosts | default('wilo_pis') }}", name
        assert play["serial"] == "{{ wilo_serial | default([1, '25%']) }}", name
        assert "wilo_max_fail_percentage" in str(play["max_fail_percentage"]), name
        assert play["become"] is True, name
