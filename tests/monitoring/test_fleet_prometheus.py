"""End to end: Debian's Prometheus scrapes two real services, the rules fire for the right pump.

Targets come from the inventory through ansible/monitoring-targets.yml, the config is the
shipped example with 1 s intervals, the alerts are the shipped ones with every `for:` cut to 2 s.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from test_service import RunningService, start_service

from .prometheus import Prometheus, eventually
from .promhelp import ALERT_RULES, DASHBOARD, MONITORING, dashboard_queries, promtool
from .targets import generate_targets, write_inventory

PUMPS = ("pump-a", "pump-b")
SITE = "plant-test"
TEST_FOR = "2s"


def _fast_rules(workdir: Path) -> None:
    """monitoring/ copied with every alert's `for:` cut to TEST_FOR (the expressions as shipped)."""
    shutil.copytree(MONITORING / "rules", workdir / "rules")
    config = yaml.safe_load(ALERT_RULES.read_text())
    for group in config["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
    (workdir / "rules" / ALERT_RULES.name).write_text(yaml.safe_dump(config, sort_keys=False))


def _fast_config(workdir: Path) -> Path:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        job.update(scrape_interval="1s", scrape_timeout="1s")
        for file_sd in job["file_sd_configs"]:
            file_sd["refresh_interval"] = "1s"
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, RunningService]]:
    running: dict[str, RunningService] = {}
    try:
        for pump in PUMPS:
            data = tmp_path / pump
            data.mkdir()
            env = {"WILO_SENSOR_SIM_FAULT_FILE": str(data / "faults.json")}
            running[pump] = start_service(data, "--sensor", "sim", env=env)
        yield running
    finally:
        for service in running.values():
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait()


def _firing(prom: Prometheus, alertname: str) -> list[str]:
    series = prom.query(f'ALERTS{{alertname="{alertname}",alertstate="firing"}}')
    return sorted(s["metric"]["pump"] for s in series)


def test_prometheus_fires_zone_d_and_down_for_the_right_pump(
    tmp_path: Path, services: dict[str, RunningService]
) -> None:
    started = time.monotonic()
    work = tmp_path / "prometheus"
    (work / "file_sd").mkdir(parents=True)
    inventory = write_inventory(
        tmp_path / "inventory.yml",
        {
            f"pi-{pump}": {
                "ansible_host": "127.0.0.1",
                "wilo_backend_port": service.port,
                "wilo_pump": pump,
            }
            for pump, service in services.items()
        },
        wilo_site=SITE,
    )
    run, _ = generate_targets(tmp_path, inventory, work / "file_sd" / "wilo-backend.json")
    assert run.returncode == 0, run.output
    _fast_rules(work)
    config = _fast_config(work)
    assert promtool("check", "config", config).returncode == 0
    prom = Prometheus(config, work)
    try:
        # both Pis scraped, labelled from the inventory; their window gauges recorded
        def both_up() -> bool:
            ups = prom.query('up{job="wilo-backend"} == 1')
            return sorted(s["metric"]["pump"] for s in ups if s["metric"]["site"] == SITE) == [
                *PUMPS
            ]

        eventually(both_up, "both services up, labelled pump and site from the inventory")

        def both_recorded() -> list[dict[str, Any]] | None:
            got = prom.query("pump:wilo_vibration_velocity_rms:mm_per_second")
            return got if len(got) == len(PUMPS) else None

        levels = eventually(both_recorded, "both velocities recorded")
        assert all(float(s["value"][1]) < 4.5 for s in levels)  # healthy: zones B
        assert _firing(prom, "WiloVibrationZoneD") == []

        # pump-a's bearing wears: 5× the vibration through the simulator's fault hook
        now = time.time()
        fault = {"id": "worn", "kind": "vibration", "start": now, "end": now + 600, "gain": 5.0}
        faults = tmp_path / "pump-a" / "faults.json"
        faults.write_text(json.dumps({"faults": [fault]}))
        raised = time.monotonic()
        zone_d = eventually(lambda: _firing(prom, "WiloVibrationZoneD"), "zone D", timeout_s=30)
        assert zone_d == ["pump-a"]
        zone_d_seconds = time.monotonic() - raised
        time.sleep(2)  # a few more evaluations: still pump-a only
        assert _firing(prom, "WiloVibrationZoneD") == ["pump-a"]
        labels = prom.query('ALERTS{alertname="WiloVibrationZoneD"}')[0]["metric"]
        assert labels["site"] == SITE and labels["severity"] == "critical"

        # every query of the Grafana dashboard has data (the alert annotation too, now)
        dashboard = json.loads(DASHBOARD.read_text())
        for expr in dashboard_queries(dashboard):
            concrete = expr.replace("$site", ".*").replace("$pump", ".*")
            assert prom.query(concrete), f"no data for the dashboard's {expr}"
        for variable in ("site", "pump"):
            values = prom.api(f"label/{variable}/values", **{"match[]": 'up{job="wilo-backend"}'})
            assert values == ([SITE] if variable == "site" else list(PUMPS))

        # a live scrape passes promtool's naming checks
        with urllib.request.urlopen(
            f"http://127.0.0.1:{services['pump-a'].port}/metrics", timeout=5
        ) as reply:
            scrape = reply.read()
        check = promtool("check", "metrics", cwd=tmp_path, stdin=scrape.decode())
        assert check.returncode == 0, check.stdout + check.stderr
        assert b'wilo_build_info{version="' in scrape and b"wilo_vibration_zone 3" in scrape

        # pump-b's service stops: the down alert, for pump-b only
        services["pump-b"].process.send_signal(signal.SIGTERM)
        services["pump-b"].process.wait(30)
        assert eventually(lambda: _firing(prom, "WiloServiceDown"), "down", 30) == ["pump-b"]
        assert _firing(prom, "WiloVibrationZoneD") == ["pump-a"]
        print(
            f"\nfleet test: zone D firing {zone_d_seconds:.1f} s after the fault, "
            f"whole test {time.monotonic() - started:.1f} s"
        )
    finally:
        prom.stop()
