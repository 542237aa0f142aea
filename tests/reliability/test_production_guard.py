"""No test, CI step or non-deploy make target would resolve an inventory to the production Pi.

tests/deploy/test_no_production.py scans for the production path and address as text; this one
follows what Ansible would load: every `-i`/`--inventory`/ANSIBLE_INVENTORY/`inventory:` value,
resolved like Ansible does (a folder means every inventory file in it), and ansible.cfg defaults.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from deploy.test_no_production import _dry_run as _make_dry_run
from deploy.test_no_production import _make_targets

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = (REPO / "ansible" / "inventory" / "production.yml").resolve()
PRODUCTION_HOST = "172.168.4.70"
SCANNERS = {"tests/reliability/test_production_guard.py", "tests/deploy/test_no_production.py"}
INVENTORY_REF = re.compile(
    r"""(?:\s-i\s*|--inventory[=\s]+|ANSIBLE_INVENTORY\s*[=:]\s*|\binventory\s*[=:]\s*|"""
    r"""\bINVENTORY\s*[?:]?=\s*)["']?([\w.~/][\w.~/,@:-]*)"""
)


def resolves_to_production(reference: str, base: Path) -> bool:
    """Would Ansible, given this inventory source from `base`, load the production inventory?"""
    if PRODUCTION_HOST in reference:
        return True
    for source in reference.split(","):  # "host1,host2," lists and comma-separated sources
        if not source or "{" in source or "$" in source:
            continue
        for root in (base, REPO, REPO / "ansible"):
            path = (root / source).resolve()
            if path == PRODUCTION or (path.is_dir() and PRODUCTION.is_relative_to(path)):
                return True
    return False


COMMENT = re.compile(r"(?m)(^|\s)#.*$")


def _offenders(text: str, base: Path) -> list[str]:
    text = " " + COMMENT.sub(r"\1", text)
    return [m for m in INVENTORY_REF.findall(text) if m != "/" and resolves_to_production(m, base)]


def test_the_resolver_sees_every_way_to_name_production() -> None:
    for line in [
        "ansible-playbook -i ansible/inventory/production.yml site.yml",
        "ansible-playbook -i ansible/inventory site.yml",  # the folder loads production.yml
        "ANSIBLE_INVENTORY=inventory/production.yml ansible all -m ping",
        "  inventory: ../../ansible/inventory/",
        "ansible all -i 172.168.4.70, -m ping",
        "ansible-playbook --inventory=./ansible/inventory/../inventory/production.yml x.yml",
    ]:
        assert _offenders(line, REPO / "molecule" / "default"), line
    assert not _offenders("ansible-playbook -i molecule/inventory.yml site.yml", REPO)
    assert not _offenders("ansible-playbook -i localhost, x.yml", REPO)


def test_no_test_or_ci_file_would_load_the_production_inventory() -> None:
    files = [
        *(REPO / "tests").rglob("*.py"),
        *(REPO / "molecule").rglob("*.yml"),
        *(REPO / "molecule").rglob("*.sh"),
        REPO / ".ci" / "run",
        REPO / ".github" / "workflows" / "ci.yml",
    ]
    offenders = []
    for path in files:
        if path.relative_to(REPO).as_posix() in SCANNERS:
            continue  # they name production on purpose, to show their check can fail
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(REPO)}: {m}" for m in _offenders(text, path.parent)]
    assert offenders == []


def test_no_make_target_but_deploy_would_load_it() -> None:
    targets = _make_targets()
    assert "deploy" in targets and "soak" in targets
    assert _offenders(_make_dry_run("deploy"), REPO)  # the guard sees the one legitimate use
    offenders = {t: _offenders(_make_dry_run(t), REPO) for t in targets if t != "deploy"}
    assert {t: o for t, o in offenders.items() if o} == {}


def test_ci_runs_only_make_targets_that_stay_off_production() -> None:
    ci_texts = [
        COMMENT.sub(r"\1", (REPO / name).read_text())
        for name in (".ci/run", ".github/workflows/ci.yml")
    ]
    called = {t for text in ci_texts for t in re.findall(r"\bmake\s+([a-z][a-z0-9-]*)", text)}
    assert "test" in called and "deploy" not in called
    for target in called:
        assert not _offenders(_make_dry_run(target), REPO), target


def test_no_ansible_cfg_defaults_to_production() -> None:
    for cfg_path in REPO.rglob("ansible.cfg"):
        if ".venv" in cfg_path.parts:
            continue
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.read(cfg_path)
        inventory = cfg.get("defaults", "inventory", fallback="")
        assert not resolves_to_production(inventory, cfg_path.parent), cfg_path
