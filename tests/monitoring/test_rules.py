"""monitoring/: promtool accepts the rules and the example config, and their unit tests pass."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from .promhelp import ALERT_RULES, MONITORING, RECORDING_RULES, REPO, promtool, rules

ALERT_TESTS = MONITORING / "tests" / "wilo-alerts.test.yml"
RECORDING_TESTS = MONITORING / "tests" / "wilo-recording.test.yml"


def test_promtool_check_rules_accepts_the_shipped_rules() -> None:
    proc = promtool("check", "rules", ALERT_RULES, RECORDING_RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules(ALERT_RULES))} rules found" in proc.stdout


def test_promtool_unit_tests_of_every_rule_pass() -> None:
    proc = promtool("test", "rules", ALERT_TESTS, RECORDING_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 2


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in rules(ALERT_RULES):
        name = rule["alert"]
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} fires"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name} quiet"


def test_every_recording_rule_is_tested() -> None:
    tested = {
        case["expr"]
        for test in yaml.safe_load(RECORDING_TESTS.read_text())["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert {rule["record"] for rule in rules(RECORDING_RULES)} <= tested


def test_unit_tests_catch_a_moved_threshold(tmp_path: Path) -> None:
    shutil.copytree(MONITORING / "rules", tmp_path / "rules")
    shutil.copytree(MONITORING / "tests", tmp_path / "tests")
    alerts = tmp_path / "rules" / ALERT_RULES.name
    text = alerts.read_text()
    assert 'wilo_vibration_zone{job="wilo-backend"} == 2' in text
    alerts.write_text(text.replace("== 2", ">= 2").replace("for: 30m", "for: 20m"))
    proc = promtool("test", "rules", tmp_path / "tests" / ALERT_TESTS.name)
    assert proc.returncode != 0
    assert "alertname: WiloVibrationZoneC" in proc.stdout + proc.stderr


def test_example_config_passes_check_config_with_the_rules() -> None:
    proc = promtool("check", "config", MONITORING / "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 2 rule files found" in proc.stdout
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "wilo-backend"  # what every rule selects
    (file_sd,) = job["file_sd_configs"]
    # the playbook's default output matches the example's glob
    assert file_sd["files"] == ["file_sd/wilo-backend*.json"]


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_points_at_its_readme_section() -> None:
    anchors = {
        _github_anchor(line.lstrip("#"))
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("#")
    }
    for rule in rules(ALERT_RULES):
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"README.md#{rule['alert'].lower()}"
        assert runbook.split("#")[1] in anchors, f"README has no section {rule['alert']}"
