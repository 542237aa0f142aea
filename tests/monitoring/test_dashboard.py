"""The Grafana dashboard: provisioned from the repo, every panel on the chosen Prometheus."""

from __future__ import annotations

import json

import yaml

from .promhelp import DASHBOARD, MONITORING, RECORDING_RULES, dashboard_queries, rules

PROVISIONING = MONITORING / "grafana" / "provisioning"


def test_the_provider_loads_the_dashboards_folder_of_a_checkout() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "wilo-backend.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    path = entry["options"]["path"]
    assert path == "${WILO_BACKEND_REPO}/" + str(DASHBOARD.parent.relative_to(MONITORING.parent))
    sources = yaml.safe_load((PROVISIONING / "datasources" / "wilo-prometheus.yml").read_text())
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]


def test_every_panel_queries_the_dashboards_prometheus_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "wilo-fleet"  # links to it stay valid across versions
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    queried = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_dashboard_plots_the_recorded_series() -> None:
    queries = " ".join(dashboard_queries(json.loads(DASHBOARD.read_text())))
    for rule in rules(RECORDING_RULES):
        assert rule["record"] in queries, f"{rule['record']} is recorded for nothing"
