"""Role layout: every default is validated by meta/argument_specs.yml and the other way round."""

from __future__ import annotations

import pytest
import yaml

from .conftest import ANSIBLE_DIR


@pytest.mark.parametrize("role", ["pi_tuning", "wilo_backend"])
def test_argument_specs_cover_exactly_the_documented_defaults(role: str) -> None:
    base = ANSIBLE_DIR / "roles" / role
    defaults = yaml.safe_load((base / "defaults/main.yml").read_text())
    specs = yaml.safe_load((base / "meta/argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"]["options"]
    assert set(options) == set(defaults)
    assert all(name.startswith(f"{role}_") for name in defaults)
    for name, spec in options.items():
        assert spec.get("description"), name
        if "default" in spec:
            assert spec["default"] == defaults[name], name


@pytest.mark.parametrize(
    "template",
    [
        "pi_tuning/templates/etc/systemd/system/cpufreq-governor.service.j2",
        "pi_tuning/templates/etc/modules-load.d/wilo-backend.conf.j2",
        "wilo_backend/templates/etc/systemd/system/wilo-backend.service.j2",
        "wilo_backend/templates/etc/wilo-backend/config.toml.j2",
        "wilo_backend/templates/etc/systemd/system/wilo-backend-commit.service.j2",
        "wilo_backend/templates/etc/systemd/system/wilo-backend-commit.timer.j2",
    ],
)
def test_templates_mirror_the_paths_they_render_to(template: str) -> None:
    path = ANSIBLE_DIR / "roles" / template
    assert path.is_file()
    target = "/" + template.split("/templates/", 1)[1].removesuffix(".j2")
    role_tasks = "\n".join(
        p.read_text() for p in (path.parents[len(target.split("/")) - 1] / "tasks").glob("*.yml")
    )
    assert template.split("/templates/", 1)[1] in role_tasks, target
