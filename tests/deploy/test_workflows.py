"""The GitHub workflows: actions pinned by SHA, no token left on disk, a deploy job that only
downloads, verifies and deploys the dist CI built (SPEC §7 CD)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SHA_PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
# What a job that builds or installs the dev toolchain runs.
BUILDS_OR_DEV = re.compile(
    r"\bmake\b|requirements-dev|pip\s+wheel|python\s+-m\s+build|pip\s+download|\bpip\b.*\s-e\s"
)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _unpinned(workflow: dict[str, Any]) -> list[str]:
    uses = [step["uses"] for step in _steps(workflow) if "uses" in step]
    uses += [job["uses"] for job in workflow["jobs"].values() if "uses" in job]
    return [u for u in uses if not u.startswith("./") and not SHA_PINNED.match(u)]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha(path: Path) -> None:
    assert _unpinned(_load(path)) == []


def test_the_pin_check_catches_a_tag() -> None:
    workflow = {"jobs": {"a": {"steps": [{"uses": "actions/checkout@v4"}]}}}
    assert _unpinned(workflow) == ["actions/checkout@v4"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_checkout_keeps_its_token_on_disk(path: Path) -> None:
    steps = _steps(_load(path))
    checkouts = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    assert all(s.get("with", {}).get("persist-credentials") is False for s in checkouts)


def _deploy_job() -> dict[str, Any]:
    job: dict[str, Any] = _load(REPO / ".github/workflows/cd.yml")["jobs"]["deploy"]
    return job


def test_the_deploy_job_neither_builds_nor_installs_dev_requirements() -> None:
    runs = [step.get("run", "") for step in _deploy_job()["steps"]]
    assert [run for run in runs if BUILDS_OR_DEV.search(run)] == []
    installs = [run for run in runs if re.search(r"\bpip\b.*\binstall\b", run, re.DOTALL)]
    assert installs and all("--require-hashes" in run for run in installs)
    assert all("-r ansible/requirements-deploy.txt" in run for run in installs)


def test_the_builds_check_sees_make_install() -> None:
    assert BUILDS_OR_DEV.search("make install")
    assert BUILDS_OR_DEV.search("pip install -r requirements-dev.txt")
    assert not BUILDS_OR_DEV.search("sha256sum --check --strict SHA256SUMS")


def test_the_deploy_job_deploys_the_verified_ci_artifact() -> None:
    steps = _deploy_job()["steps"]
    download = [s for s in steps if s.get("uses", "").startswith("actions/download-artifact@")]
    assert len(download) == 1
    assert download[0]["with"]["name"] == "wilo-dist-aarch64"
    assert "github.event.workflow_run.id" in download[0]["with"]["run-id"]
    runs = [step.get("run", "") for step in steps]
    verify = next(i for i, run in enumerate(runs) if "sha256sum --check" in run)
    deploy = next(i for i, run in enumerate(runs) if "ansible-playbook" in run)
    assert verify < deploy
    assert 'wilo_backend_dist_dir="$PWD/dist"' in runs[deploy]
    assert "ServerAliveInterval" in steps[deploy]["env"]["ANSIBLE_SSH_ARGS"]
    ci = _load(REPO / ".github/workflows/ci.yml")
    upload = [s for s in _steps(ci) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert [u["with"]["name"] for u in upload] == ["wilo-dist-aarch64"]
    assert "dist/SHA256SUMS" in upload[0]["with"]["path"]


def test_deploy_requirements_pin_every_package_by_hash() -> None:
    text = (REPO / "ansible/requirements-deploy.txt").read_text()
    entries = re.split(r"\n(?=\S)", re.sub(r"^#.*\n", "", text, flags=re.MULTILINE).strip())
    assert len(entries) >= 5
    for entry in entries:
        assert re.match(r"^[a-z0-9_.-]+==\S+ \\", entry), entry
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry
    dev = (REPO / "requirements-dev.txt").read_text()
    core = re.search(r"^ansible-core==(\S+)", dev, re.MULTILINE)
    assert core and f"ansible-core=={core.group(1)} " in text  # the version the tests ran


def test_dependabot_watches_actions_and_pip() -> None:
    config = _load(REPO / ".github/dependabot.yml")
    ecosystems = {(u["package-ecosystem"], u["directory"]) for u in config["updates"]}
    assert {("github-actions", "/"), ("pip", "/ansible")} <= ecosystems
