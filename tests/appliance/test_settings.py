"""The operator's settings file: forgiving about form, every bad line and key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from wilo_backend.appliance.settings import SettingsError, parse_settings, read_settings

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMzHWsNfFhS2OW1bPEKmo78hFjCFfXltX5fyxdKfIvXB op@laptop"
GOOD = f"""\
# wilo appliance settings
hostname = pump-07
ssh_authorized_key = {KEY}
auth_token = s3cret-token-0123456789
timezone = Europe/Berlin
sensor.driver = sim
"""


@pytest.fixture
def zoneinfo(tmp_path: Path) -> Path:
    root = tmp_path / "zoneinfo"
    (root / "Europe").mkdir(parents=True)
    (root / "Europe/Berlin").write_bytes(b"TZif")
    (root / "UTC").write_bytes(b"TZif")
    return root


def problems(text: str, zoneinfo: Path) -> list[str]:
    with pytest.raises(SettingsError) as err:
        parse_settings(text, zoneinfo=zoneinfo)
    return err.value.problems


def test_good_file_with_windows_line_ends_and_bom(zoneinfo: Path) -> None:
    s = parse_settings("\ufeff" + GOOD.replace("\n", "\r\n"), zoneinfo=zoneinfo)
    assert s.hostname == "pump-07"
    assert s.ssh_authorized_keys == (KEY,)
    assert (s.auth_token, s.timezone, s.sensor_driver) == (
        "s3cret-token-0123456789",
        "Europe/Berlin",
        "sim",
    )


def test_only_required_keys_leave_the_rest_to_the_image(zoneinfo: Path) -> None:
    s = parse_settings(f"hostname=a\nssh_authorized_key={KEY}\nauth_token=\n", zoneinfo=zoneinfo)
    assert (s.auth_token, s.timezone, s.sensor_driver) == ("", None, None)


def test_several_keys_may_be_given(zoneinfo: Path) -> None:
    text = GOOD + f"ssh_authorized_key = {KEY.replace('op@laptop', 'second')}\n"
    assert len(parse_settings(text, zoneinfo=zoneinfo).ssh_authorized_keys) == 2


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hostname = Pump_07", "line 2: hostname: must be 1-63"),
        ("hostname = -pump", "line 2: hostname: must be 1-63"),
        ("hostname = " + "a" * 64, "line 2: hostname: must be 1-63"),
        ("timezone = Mars/Olympus", "line 2: timezone: unknown time zone 'Mars/Olympus'"),
        ("timezone = ../../etc/passwd", "line 2: timezone: must be an IANA name"),
        ("sensor.driver = bmi160", "line 2: sensor.driver: must be one of mpu6050, sim"),
        ("auth_token = has space and is long", "line 2: auth_token: must be 16-256 visible"),
        ("auth_token = short-token", "line 2: auth_token: must be 16-256 visible"),
        ("hostnme = pump", "line 2: unknown key 'hostnme'"),
        ("just some words", "line 2: expected 'key = value'"),
        ("sensor.driver = sim\nsensor.driver = sim", "line 3: sensor.driver given twice"),
    ],
)
def test_each_bad_value_is_named_with_its_line(line: str, expected: str, zoneinfo: Path) -> None:
    text = f"ssh_authorized_key = {KEY}\n{line}\n"
    text += "" if line.startswith("hostname") else "hostname = pump\n"
    text += "" if line.startswith("auth_token") else "auth_token =\n"
    found = problems(text, zoneinfo)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("ssh-ed25519", "expected '<type> <base64> [comment]'"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "unknown key type 'ssh-dss'"),
        ("ssh-ed25519 not*base64", "the key data is not base64"),
        # an RSA key's data labelled ed25519: a paste mix-up
        ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "the key data is not a ssh-ed25519 key"),
        (KEY.split()[0] + " " + KEY.split()[1][:12], "the key data is not a ssh-ed25519 key"),
    ],
)
def test_bad_ssh_keys_say_what_is_wrong(key: str, expected: str, zoneinfo: Path) -> None:
    found = problems(f"hostname = pump\nssh_authorized_key = {key}\nauth_token =\n", zoneinfo)
    assert len(found) == 1, found
    assert found[0].startswith(f"line 2: ssh_authorized_key: {expected}"), found


def test_all_problems_are_reported_at_once(zoneinfo: Path) -> None:
    found = problems("sensor.driver = x\ntimezone = Nowhere\n", zoneinfo)
    assert [p.split(":")[0] for p in found] == [
        "line 1",
        "line 2",
        "hostname",
        "ssh_authorized_key",
        "auth_token",
    ]
    assert found[-1] == "auth_token: missing (required)"


def test_missing_and_non_utf8_files(tmp_path: Path, zoneinfo: Path) -> None:
    with pytest.raises(SettingsError, match="file not found"):
        read_settings(tmp_path / "wilo-settings.txt", zoneinfo=zoneinfo)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("hostname = pümp\n".encode("latin-1"))
    with pytest.raises(SettingsError, match=r"not UTF-8 text \(byte 12\)"):
        read_settings(latin1, zoneinfo=zoneinfo)
