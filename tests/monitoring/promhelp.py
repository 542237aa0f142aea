"""Shared by the monitoring tests: where monitoring/ is, Debian's Prometheus tools, the rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
ALERT_RULES = MONITORING / "rules" / "wilo-alerts.yml"
RECORDING_RULES = MONITORING / "rules" / "wilo-recording.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "wilo-fleet.json"
TARGETS_PLAYBOOK = REPO / "ansible" / "monitoring-targets.yml"


def tool(name: str) -> str:
    """The path of `prometheus` or `promtool` (Debian's package, installed by `make prometheus`)."""
    path = shutil.which(name)
    assert path, f"{name} not found: run `make prometheus` (Debian's prometheus package)"
    return path


def promtool(
    *args: str | Path, cwd: Path = REPO, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rules file, all groups."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries(node: Any) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and annotations."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(dashboard_queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(dashboard_queries(item))
    return found
