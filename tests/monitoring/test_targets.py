"""Scrape targets from the inventory: file_sd JSON with pump and site labels, bad input named."""

from __future__ import annotations

from pathlib import Path

from .targets import generate_targets, write_inventory


def test_every_pi_becomes_a_target_with_its_pump_and_site(tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path / "inventory.yml",
        {
            "pi-b": {"ansible_host": "192.0.2.12", "wilo_pump": "cooling-2"},
            "pi-a": {"ansible_host": "192.0.2.11", "wilo_backend_port": 9000},
            "pi-v6": {"ansible_host": "2001:db8::7", "wilo_site": "plant-north"},
        },
        wilo_site="plant-south",
    )
    out = tmp_path / "file_sd" / "wilo-backend.json"
    out.parent.mkdir()
    run, targets = generate_targets(tmp_path, inventory, out)
    assert run.returncode == 0, run.output
    assert set(run.recap) == {"localhost"}  # no Pi was contacted
    assert targets == [
        {"targets": ["192.0.2.11:9000"], "labels": {"pump": "pi-a", "site": "plant-south"}},
        {"targets": ["192.0.2.12:8765"], "labels": {"pump": "cooling-2", "site": "plant-south"}},
        {"targets": ["[2001:db8::7]:8765"], "labels": {"pump": "pi-v6", "site": "plant-north"}},
    ]
    assert run.recap["localhost"]["changed"] == 1
    again, _ = generate_targets(tmp_path, inventory, out)
    assert again.returncode == 0 and again.recap["localhost"]["changed"] == 0


def test_a_pi_without_a_site_is_named(tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path / "inventory.yml",
        {"pi-a": {"wilo_site": "plant-south"}, "pi-lost": {}},
    )
    run, targets = generate_targets(tmp_path, inventory, tmp_path / "out.json")
    assert run.returncode != 0 and targets is None
    assert "wilo_site is not set for pi-lost" in run.output


def test_a_pump_name_used_twice_is_named(tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path / "inventory.yml",
        {"pi-a": {"wilo_pump": "p1"}, "pi-b": {"wilo_pump": "p1"}, "pi-c": {}},
        wilo_site="s",
    )
    run, targets = generate_targets(tmp_path, inventory, tmp_path / "out.json")
    assert run.returncode != 0 and targets is None
    assert "the same wilo_pump on more than one Pi" in run.output and "p1" in run.output


def test_an_inventory_without_the_fleet_group_is_refused(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("other:\n  hosts:\n    pi-a: {}\n")
    run, targets = generate_targets(tmp_path, inventory, tmp_path / "out.json")
    assert run.returncode != 0 and targets is None
    assert "group wilo_pis has no hosts in this inventory" in run.output
