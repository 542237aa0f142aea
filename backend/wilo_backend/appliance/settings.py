"""Parse the operator's settings file (`wilo-settings.txt` on the card's FAT partition).

The file is edited on any computer, so it is forgiving about form (a UTF-8 BOM, CRLF line ends,
blank lines, `#` comments, spaces around `=`) and strict about content: every problem is
reported with its line and key, all at once, and nothing is applied unless the whole file is good.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

SETTINGS_FILE_NAME = "wilo-settings.txt"
DRIVERS = ("mpu6050", "sim")
# auth_token too: an image flashed onto many cards must not run them open by omission (an
# empty value runs the service open on purpose, as wilo_backend_require_auth=false does).
REQUIRED = ("hostname", "ssh_authorized_key", "auth_token")
KNOWN = (*REQUIRED, "timezone", "sensor.driver")
# A key may repeat only where a list makes sense: several operators' SSH keys.
REPEATABLE = ("ssh_authorized_key",)
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
# as the deploy role asks (wilo_backend_auth_token): at least 16 characters
_TOKEN = re.compile(r"^[\x21-\x7e]{16,256}$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")


class SettingsError(ValueError):
    """The settings file is unusable; `problems` names each bad line or key."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True)
class Settings:
    """One device's settings; absent optional keys keep the image's values (None)."""

    hostname: str
    ssh_authorized_keys: tuple[str, ...]
    auth_token: str | None = None
    timezone: str | None = None
    sensor_driver: str | None = None


def _check_key(value: str) -> str | None:
    """Why `value` is not one OpenSSH public key line, or None when it is."""
    parts = value.split(None, 2)
    if len(parts) < 2:
        return "expected '<type> <base64> [comment]'"
    kind, blob = parts[0], parts[1]
    if kind not in _KEY_TYPES:
        return f"unknown key type {kind!r} (one of {', '.join(_KEY_TYPES)})"
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "the key data is not base64"
    # The blob starts with its own type name (uint32 length + name): catches pasted halves.
    if len(raw) < 4 or raw[4 : 4 + int.from_bytes(raw[:4], "big")] != kind.encode():
        return f"the key data is not a {kind} key (truncated or mixed up?)"
    return None


def _check(key: str, value: str, zoneinfo: Path) -> str | None:
    """Why `value` is bad for `key`, or None when it is good."""
    if key == "hostname":
        if not _HOSTNAME.match(value):
            return "must be 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
    elif key == "ssh_authorized_key":
        return _check_key(value)
    elif key == "auth_token":
        if value and not _TOKEN.match(value):
            return "must be 16-256 visible ASCII characters without spaces (or empty: no token)"
    elif key == "timezone":
        if not _TIMEZONE.match(value) or ".." in value:
            return "must be an IANA name such as Europe/Berlin or UTC"
        if not (zoneinfo / value).is_file():
            return f"unknown time zone {value!r} (no {zoneinfo / value})"
    elif key == "sensor.driver" and value not in DRIVERS:
        return f"must be one of {', '.join(DRIVERS)}"
    return None


def parse_settings(text: str, *, source: str = SETTINGS_FILE_NAME, zoneinfo: Path) -> Settings:
    """`key = value` lines → Settings; SettingsError lists every problem (line and key)."""
    problems: list[str] = []
    values: dict[str, list[str]] = {}
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            problems.append(f"line {number}: expected 'key = value', got {line[:40]!r}")
            continue
        if key not in KNOWN:
            problems.append(f"line {number}: unknown key {key!r} (known: {', '.join(KNOWN)})")
            continue
        if key in values and key not in REPEATABLE:
            problems.append(f"line {number}: {key} given twice")
            continue
        why = _check(key, value, zoneinfo)
        if why:
            problems.append(f"line {number}: {key}: {why}")
        values.setdefault(key, []).append(value)
    problems += [f"{key}: missing (required)" for key in REQUIRED if key not in values]
    if problems:
        raise SettingsError(source, problems)

    def one(key: str) -> str | None:
        return values[key][0] if key in values else None

    return Settings(
        hostname=values["hostname"][0],
        ssh_authorized_keys=tuple(values["ssh_authorized_key"]),
        auth_token=one("auth_token"),
        timezone=one("timezone"),
        sensor_driver=one("sensor.driver"),
    )


def read_settings(path: Path, *, zoneinfo: Path) -> Settings:
    """Read and parse the file; a missing or unreadable file is a SettingsError too."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SettingsError(path, ["file not found: copy wilo-settings.example.txt"]) from None
    except OSError as exc:
        raise SettingsError(path, [f"cannot read: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(path, [f"not UTF-8 text (byte {exc.start})"]) from None
    return parse_settings(text, source=str(path), zoneinfo=zoneinfo)
