"""The name of the deployed release this process runs from (wilo_build_info, /healthz)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

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


# Taken once, at start, for /healthz: the deploy switches `current` before it restarts the
# service, so the running process must name the release it was started from.
RUNNING_RELEASE: Final = release_name()
