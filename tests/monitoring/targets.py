"""Runs ansible/monitoring-targets.yml on a test inventory (on the controller only, no SSH)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from deploy.conftest import PlaybookRun, make_ansible_env, run_playbook

from .promhelp import TARGETS_PLAYBOOK


def write_inventory(path: Path, hosts: dict[str, dict[str, Any]], **group_vars: Any) -> Path:
    inventory = {"wilo_pis": {"hosts": hosts, "vars": group_vars}}
    path.write_text(yaml.safe_dump(inventory))
    return path


def generate_targets(workdir: Path, inventory: Path, out: Path) -> tuple[PlaybookRun, Any]:
    """(the run, the file_sd JSON it wrote or None)."""
    run = run_playbook(
        make_ansible_env(workdir / "ansible-home"),
        inventory,
        TARGETS_PLAYBOOK,
        "-e",
        f"wilo_monitoring_file_sd={out}",
    )
    return run, json.loads(out.read_text()) if out.exists() else None
