"""Apply parsed settings to a root filesystem: all files prepared and checked, then written.

Nothing is half-applied: every new file's content (and the service config, checked by the
service's own loader) is built first; only then is each file replaced by an atomic rename.
`root` is "/" on the Pi and a temporary directory in the tests.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config
from .settings import Settings

CONFIG_PATH = Path("/etc/wilo-backend/config.toml")


@dataclass(frozen=True)
class Change:
    """One file to write: where (under root), what, and its mode; or a symlink target."""

    path: Path
    content: str = ""
    mode: int = 0o644
    link_to: str | None = None


def resolve_in_root(root: Path, path: Path, hops: int = 16) -> Path:
    """`path` as seen from inside `root`: every component's symlink followed, absolute links
    taken relative to `root` (the image's links point at /opt/..., not at the build host's)."""
    parts = list(path.relative_to("/").parts)
    current = root
    while parts:
        current = current / parts.pop(0)
        if current.is_symlink():
            hops -= 1
            if hops < 0:
                raise ValueError(f"{path}: too many symlinks")
            target = current.readlink()
            parts = (
                list(target.relative_to("/").parts if target.is_absolute() else target.parts)
                + parts
            )
            current = root if target.is_absolute() else current.parent
    return current


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # TOML basic strings accept JSON's escapes for what the service's values contain.
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A nested dict of scalars and lists as TOML (the shape the role renders)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    out = [f"[{prefix}]"] if prefix and scalars else []
    out += [f"{key} = {_toml_value(value)}" for key, value in scalars.items()]
    text = "\n".join(out) + ("\n" if out else "")
    for key, value in data.items():
        if isinstance(value, Mapping):
            text += ("\n" if text else "") + to_toml(value, f"{prefix}.{key}" if prefix else key)
    return text


def _config_change(root: Path, settings: Settings) -> Change | None:
    """The service config with the device's token and driver, checked by the service's loader."""
    if settings.auth_token is None and settings.sensor_driver is None:
        return None
    path = resolve_in_root(root, CONFIG_PATH)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    if settings.auth_token is not None:
        raw.setdefault("server", {})["auth_token"] = settings.auth_token
    if settings.sensor_driver is not None:
        raw.setdefault("sensor", {})["driver"] = settings.sensor_driver
    text = "# wilo-backend configuration: the image's, with the first boot's settings.\n"
    text += to_toml(raw)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", encoding="utf-8") as check:
        check.write(text)
        check.flush()
        load_config(Path(check.name), environ={})  # ConfigError names the bad key
    return Change(path, text, mode=path.stat().st_mode & 0o7777)


def plan(root: Path, settings: Settings) -> list[Change]:
    """Every file the settings change, prepared and checked; nothing is written yet."""
    hosts = root / "etc/hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    lines = [line for line in lines if not line.startswith("127.0.1.1")]
    lines.append(f"127.0.1.1\t{settings.hostname}")
    changes = [
        Change(root / "etc/hostname", settings.hostname + "\n"),
        Change(root / "etc/hosts", "\n".join(lines) + "\n"),
        Change(
            root / "root/.ssh/authorized_keys",
            "".join(key + "\n" for key in settings.ssh_authorized_keys),
            mode=0o600,
        ),
    ]
    if settings.timezone is not None:
        changes.append(Change(root / "etc/timezone", settings.timezone + "\n"))
        changes.append(
            Change(root / "etc/localtime", link_to=f"/usr/share/zoneinfo/{settings.timezone}")
        )
    config = _config_change(root, settings)
    if config is not None:
        changes.append(config)
    return changes


def write(change: Change) -> None:
    """Replace one file (or symlink) by an atomic rename; the owner of a replaced file stays."""
    change.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = change.path.with_name(f".{change.path.name}.wilo-new")
    tmp.unlink(missing_ok=True)
    if change.link_to is not None:
        tmp.symlink_to(change.link_to)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, change.mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(change.content)
        tmp.chmod(change.mode)
        if change.path.exists():
            st = change.path.stat()
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(change.path)


def apply(root: Path, settings: Settings) -> list[Path]:
    """Plan (may raise ConfigError), then write every change; returns the paths written."""
    changes = plan(root, settings)
    for change in changes:
        write(change)
    return [change.path for change in changes]


__all__ = ["CONFIG_PATH", "Change", "ConfigError", "apply", "plan", "resolve_in_root", "to_toml"]
