"""First boot applies the card's settings to a root filesystem: all of it, or none of it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from wilo_backend.appliance.firstboot import main

from .test_settings import KEY

IMAGE_CONFIG = """\
[sensor]
driver = "mpu6050"
i2c_bus = 1

[storage]
data_dir = "/var/lib/wilo-backend"

[server]
host = "0.0.0.0"
port = 8765
auth_token = ""
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root laid out like the image's: config.toml → current → releases/<r>/config.toml."""
    root = tmp_path / "root"
    release = root / "opt/wilo-backend/releases/1.0-abc"
    release.mkdir(parents=True)
    (release / "config.toml").write_text(IMAGE_CONFIG)
    (root / "opt/wilo-backend/current").symlink_to("/opt/wilo-backend/releases/1.0-abc")
    (root / "etc/wilo-backend").mkdir(parents=True)
    (root / "etc/wilo-backend/config.toml").symlink_to("/opt/wilo-backend/current/config.toml")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\twilo-appliance\n")
    (root / "usr/share/zoneinfo/Europe").mkdir(parents=True)
    (root / "usr/share/zoneinfo/Europe/Berlin").write_bytes(b"TZif")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (f"-> {p.readlink()}" if p.is_symlink() else p.read_text())
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def run(root: Path, text: str) -> int:
    settings = root.parent / "wilo-settings.txt"
    settings.write_text(text)
    return main(["--settings", str(settings), "--root", str(root)])


def test_good_settings_are_applied(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        f"hostname = pump-07\nssh_authorized_key = {KEY}\nauth_token = tok-123-0123456789ab\n"
        "timezone = Europe/Berlin\nsensor.driver = sim\n"
    )
    assert run(root, text) == 0
    assert (root / "etc/hostname").read_text() == "pump-07\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert hosts == ["127.0.0.1\tlocalhost", "127.0.1.1\tpump-07"]
    keys = root / "root/.ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert (root / "root/.ssh").stat().st_mode & 0o777 == 0o700
    assert (root / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Europe/Berlin")
    # the release's own file is rewritten, the links to it stay links
    assert (root / "etc/wilo-backend/config.toml").is_symlink()
    config = tomllib.loads((root / "opt/wilo-backend/releases/1.0-abc/config.toml").read_text())
    assert config["server"] == {
        "host": "0.0.0.0",
        "port": 8765,
        "auth_token": "tok-123-0123456789ab",
    }
    assert config["sensor"] == {"driver": "sim", "i2c_bus": 1}
    assert config["storage"] == {"data_dir": "/var/lib/wilo-backend"}
    assert "settings applied (hostname pump-07)" in capsys.readouterr().err


def test_an_empty_token_and_no_driver_keep_the_image_config(root: Path) -> None:
    config = root / "opt/wilo-backend/releases/1.0-abc/config.toml"
    before = tomllib.loads(config.read_text())
    assert run(root, f"hostname = pump\nssh_authorized_key = {KEY}\nauth_token =\n") == 0
    assert tomllib.loads(config.read_text()) == before
    assert not (root / "etc/localtime").exists()


def test_bad_settings_change_nothing_and_name_the_key(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(root)
    text = f"hostname = pump\nssh_authorized_key = {KEY}\nauth_token =\nsensor.driver = i2c\n"
    assert run(root, text) == 2
    assert snapshot(root) == before
    err = capsys.readouterr().err
    assert "settings NOT applied" in err
    assert "line 4: sensor.driver: must be one of mpu6050, sim" in err


def test_a_config_the_service_rejects_changes_nothing(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The image's config itself is broken (a port out of range): the hostname, keys and
    # time zone, which come first in the plan, must not be written either.
    config = root / "opt/wilo-backend/releases/1.0-abc/config.toml"
    config.write_text(IMAGE_CONFIG.replace("8765", "99999"))
    before = snapshot(root)
    text = (
        f"hostname = pump\nssh_authorized_key = {KEY}\nauth_token = t-0123456789abcdef\n"
        "timezone = Europe/Berlin\n"
    )
    assert run(root, text) == 2
    assert snapshot(root) == before
    assert "server.port" in capsys.readouterr().err


def test_missing_settings_file_is_reported(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(root)
    assert main(["--settings", str(root / "nope.txt"), "--root", str(root)]) == 2
    assert snapshot(root) == before
    err = capsys.readouterr().err
    assert "nope.txt:" in err
    assert "file not found" in err
