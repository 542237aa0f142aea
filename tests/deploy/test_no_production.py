"""Only `make deploy` (and cd.yml, which runs its playbook) may point at the production Pi."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from .conftest import REPO

PRODUCTION_MARKERS = ("inventory/production", "172.168.4.70")
# Files allowed to name production: they define it, run it, or read it without connecting.
ALLOWED = {
    "Makefile",  # INVENTORY's default, used by the deploy target only (checked below)
    ".github/workflows/cd.yml",
    "README.md",
    "tests/deploy/conftest.py",  # the path, for the read-only ansible-inventory test
    "tests/deploy/test_playbooks.py",
    "tests/deploy/test_no_production.py",
    "tests/reliability/test_production_guard.py",  # the reliability issue's resolver-based guard
}
SCANNED = ("tests", "molecule", ".ci", "bench", ".github", "backend", "Makefile", "README.md")


def _make_targets() -> list[str]:
    text = (REPO / "Makefile").read_text()
    return sorted(set(re.findall(r"^([a-z][a-z0-9-]*):(?!=)", text, re.MULTILINE)))


def _dry_run(target: str) -> str:
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.stdout + proc.stderr


def test_only_the_deploy_target_uses_the_production_inventory() -> None:
    targets = _make_targets()
    assert {"deploy", "test", "lint", "dist", "molecule"} <= set(targets)
    assert "inventory/production.yml" in _dry_run("deploy")  # the check can see it
    for target in targets:
        if target != "deploy":
            out = _dry_run(target)
            assert not any(m in out for m in PRODUCTION_MARKERS), f"make {target}:\n{out}"


def _repo_files() -> list[str]:
    """Tracked and new files, not what .gitignore hides (build output, egg-info copies)."""
    proc = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.splitlines()


def test_no_file_of_tests_ci_or_molecule_names_production() -> None:
    offenders = []
    for rel in _repo_files():
        if rel in ALLOWED or not rel.startswith(SCANNED) or not (REPO / rel).is_file():
            continue
        text = (REPO / rel).read_text(errors="replace")
        offenders += [f"{rel}: {m}" for m in PRODUCTION_MARKERS if m in text]
    assert offenders == []


def test_ci_never_deploys_and_cd_deploys_only_after_checks_never_for_pull_requests() -> None:
    ci = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    ci_runs = [step.get("run", "") for job in ci["jobs"].values() for step in job["steps"]]
    assert "make molecule" in "\n".join(ci_runs)
    assert not [run for run in ci_runs if "deploy" in run or "ansible-playbook" in run]
    cd = yaml.safe_load((REPO / ".github/workflows/cd.yml").read_text())
    triggers = cd[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"workflow_run", "push"}
    assert triggers["workflow_run"]["workflows"] == ["CI"]
    assert triggers["workflow_run"]["branches"] == ["main"]
    assert triggers["push"] == {"tags": ["v*"]}
    deploy = cd["jobs"]["deploy"]
    assert deploy["needs"] == ["checks"]
    assert cd["jobs"]["checks"]["uses"] == "./.github/workflows/ci.yml"
    assert "github.event.workflow_run.conclusion == 'success'" in deploy["if"]
    assert "github.event.workflow_run.event == 'push'" in deploy["if"]
    assert "needs.checks.result == 'success'" in deploy["if"]
    assert deploy["environment"] == "production"
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    assert deploy["runs-on"] == "${{ vars.DEPLOY_RUNNER || 'ubuntu-latest' }}"
    # the playbook `make deploy` runs, on the CI-built artifact (make deploy would build one)
    [run] = [s["run"] for s in deploy["steps"] if s.get("name") == "Deploy the artifact"]
    assert "-i ansible/inventory/production.yml" in run and "ansible/deploy.yml" in run


def test_scanner_would_catch_an_offender(tmp_path: Path) -> None:
    sample = tmp_path / "x.yml"
    sample.write_text("inventory: ansible/inventory/production.yml\n")
    assert any(m in sample.read_text() for m in PRODUCTION_MARKERS)
