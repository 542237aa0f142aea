"""Render the wilo_backend role's templates locally with its defaults (plus overrides)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import ANSIBLE_DIR, run_playbook

ROLE = ANSIBLE_DIR / "roles" / "wilo_backend"
UNIT_TEMPLATE = ROLE / "templates/etc/systemd/system/wilo-backend.service.j2"
CONFIG_TEMPLATE = ROLE / "templates/etc/wilo-backend/config.toml.j2"

_PLAY = f"""\
- name: Render the wilo_backend templates
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {ROLE / "defaults/main.yml"}
    - {ROLE / "vars/main.yml"}
  tasks:
    - name: Render the unit
      ansible.builtin.template:
        src: {UNIT_TEMPLATE}
        dest: "{{{{ out }}}}/wilo-backend.service"
        mode: "0644"
    - name: Render the config
      ansible.builtin.template:
        src: {CONFIG_TEMPLATE}
        dest: "{{{{ out }}}}/config.toml"
        mode: "0644"
"""


def render_role_templates(env: dict[str, str], out: Path, **variables: Any) -> tuple[Path, Path]:
    """wilo-backend.service and config.toml rendered into `out`, as the role would."""
    out.mkdir(parents=True, exist_ok=True)
    playbook = out / "render.yml"
    playbook.write_text(_PLAY)
    run = run_playbook(
        env, "localhost,", playbook, "-e", json.dumps({"out": str(out), **variables})
    )
    assert run.returncode == 0, run.output
    return out / "wilo-backend.service", out / "config.toml"
