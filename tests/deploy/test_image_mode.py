"""The roles' image mode (ansible/image.yml, `make image`), run for real on local fixtures.

The whole image mode, through the chroot connection on an arm64 root, runs in `make image` and
is checked by booting the result (`make image-test`); here: what it writes and what it refuses,
each refusal naming the variable and coming before any change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import PlaybookRun, run_playbook
from .test_pi_tuning import CMDLINE, STOCK_BOOKWORM, STUB

PLAY = """\
- name: The roles in image mode
  hosts: all
  gather_facts: false
  roles:
    - role: {role}
"""


def _hosts(hosts: dict[str, dict[str, object]]) -> str:
    lines = ["all:", "  hosts:"]
    for name, host_vars in hosts.items():
        lines.append(f"    {name}:")
        lines += [f"      {key}: {value!r}" for key, value in host_vars.items()]
    return "\n".join(lines) + "\n"


def _boot_dir(root: Path) -> Path:
    (root / "firmware").mkdir(parents=True)
    (root / "firmware/config.txt").write_text(STOCK_BOOKWORM)
    (root / "firmware/cmdline.txt").write_text(CMDLINE)
    (root / "config.txt").write_text(STUB)
    return root


def _contents(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pi_tuning_run(
    tmp_path_factory: pytest.TempPathFactory, module_ansible_env: dict[str, str]
) -> tuple[PlaybookRun, dict[str, Path], dict[str, str]]:
    work = tmp_path_factory.mktemp("image-mode")
    cases: dict[str, dict[str, object]] = {
        "image": {"pi_tuning_image_mode": True},
        "image_reboot": {"pi_tuning_image_mode": True, "pi_tuning_reboot": True},
        "image_runtime": {"pi_tuning_image_mode": True, "pi_tuning_apply_runtime": True},
        "bad_type": {"pi_tuning_image_mode": "perhaps"},
    }
    boots = {name: _boot_dir(work / name) for name in cases}
    before = _contents(boots["image"])
    hosts = {
        name: {
            "ansible_connection": "local",
            "pi_tuning_boot_dir": str(boots[name]),
            "pi_tuning_reboot_required_file": str(boots[name] / "reboot-required"),
            **host_vars,
        }
        for name, host_vars in cases.items()
    }
    (work / "hosts.yml").write_text(_hosts(hosts))
    (work / "play.yml").write_text(PLAY.format(role="pi_tuning"))
    run = run_playbook(
        module_ansible_env, work / "hosts.yml", work / "play.yml", "--tags", "pi_tuning_boot"
    )
    return run, boots, before


def test_pi_tuning_image_mode_edits_the_boot_files_but_flags_no_reboot(
    pi_tuning_run: tuple[PlaybookRun, dict[str, Path], dict[str, str]],
) -> None:
    run, boots, _ = pi_tuning_run
    assert run.recap["image"]["failed"] == 0, run.output
    assert run.recap["image"]["changed"] == 2, run.output  # config.txt and cmdline.txt only
    config = (boots["image"] / "firmware/config.txt").read_text()
    assert "\ndtparam=i2c_arm=on\ndtparam=i2c_arm_baudrate=400000\n" in config
    assert "isolcpus=3" in (boots["image"] / "firmware/cmdline.txt").read_text()
    # the image's first boot is the boot that applies them: no flag left in the image's /run
    assert not (boots["image"] / "reboot-required").exists()


@pytest.mark.parametrize(
    ("host", "named"),
    [
        ("image_reboot", "pi_tuning_reboot must be false"),
        ("image_runtime", "pi_tuning_apply_runtime must be auto or false, not True"),
        ("bad_type", "pi_tuning_image_mode"),
    ],
)
def test_pi_tuning_image_mode_refuses_what_needs_a_running_pi_before_any_change(
    pi_tuning_run: tuple[PlaybookRun, dict[str, Path], dict[str, str]], host: str, named: str
) -> None:
    run, boots, before = pi_tuning_run
    assert run.recap[host]["failed"] == 1, run.output
    assert run.recap[host]["changed"] == 0, run.output
    assert named in run.output
    assert _contents(boots[host]) == before


@pytest.fixture(scope="module")
def wilo_backend_run(
    tmp_path_factory: pytest.TempPathFactory, module_ansible_env: dict[str, str]
) -> tuple[PlaybookRun, Path]:
    work = tmp_path_factory.mktemp("image-mode-backend")
    common = {
        "ansible_connection": "local",
        "wilo_backend_image_mode": True,
        "wilo_backend_dist_dir": str(work / "no-dist"),
    }
    hosts = {
        name: {**common, "wilo_backend_home": str(work / name / "opt"), **host_vars}
        for name, host_vars in {
            "token": {"wilo_backend_auth_token": "a-token-for-every-card"},
            "no_token": {"wilo_backend_auth_token": ""},
            "bad_type": {"wilo_backend_image_mode": "sometimes"},
        }.items()
    }
    (work / "hosts.yml").write_text(_hosts(hosts))
    (work / "play.yml").write_text(PLAY.format(role="wilo_backend"))
    return run_playbook(module_ansible_env, work / "hosts.yml", work / "play.yml"), work


def test_wilo_backend_image_mode_refuses_a_token_every_card_would_share(
    wilo_backend_run: tuple[PlaybookRun, Path],
) -> None:
    run, work = wilo_backend_run
    assert run.recap["token"]["failed"] == 1, run.output
    assert "wilo_backend_auth_token is set in image mode" in run.output
    assert not (work / "token").exists()


def test_wilo_backend_image_mode_needs_no_token_and_still_checks_the_dist(
    wilo_backend_run: tuple[PlaybookRun, Path],
) -> None:
    # An empty token passes in image mode (the card's settings give it at first boot, where
    # it is required); the next check, the dist, still stops the play before any change.
    run, work = wilo_backend_run
    assert run.recap["no_token"]["failed"] == 1, run.output
    assert f"{work}/no-dist/build-info.json not found" in run.output
    assert not (work / "no_token").exists()


def test_wilo_backend_image_mode_must_be_a_bool(
    wilo_backend_run: tuple[PlaybookRun, Path],
) -> None:
    run, work = wilo_backend_run
    assert run.recap["bad_type"]["failed"] == 1, run.output
    assert "wilo_backend_image_mode" in run.output
    assert not (work / "bad_type").exists()
