"""The name of the deployed release this process runs from (for wilo_build_info)."""

from __future__ import annotations

import sys
from pathlib import Path

# Outside a release made by the Ansible role (a checkout's .venv, a test): no release name.
UNRELEASED = "dev"


def release_name(prefix: str = sys.prefix) -> str:
    """`<release>` when the interpreter is `<home>/releases/<release>/venv`, else "dev".

    The role (ansible/roles/wilo_backend) installs every release there and names it after the
    build and the config, so this tells a fleet dashboard which build + config each Pi runs.
    """
    venv = Path(prefix)
    if venv.name == "venv" and venv.parent.parent.name == "releases" and venv.parent.name:
        return venv.parent.name
    return UNRELEASED
