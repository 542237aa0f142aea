#!/usr/bin/python
"""Ansible module: make Raspberry Pi config.txt settings hold for every board ([all] scope)."""

from __future__ import annotations

import re

DOCUMENTATION = r"""
module: rpi_config_txt
short_description: Ensure settings in a Raspberry Pi config.txt apply to every board
description:
  - Each setting (C(key=value), or C(dtparam=name=value)) must hold in an C([all]) scope, i.e.
    before any conditional filter such as C([pi4]) or after an C([all]) line.
  - An active line with a different value in the C([all]) scope is rewritten in place (also one
    item of a comma-separated C(dtparam=) line); a commented-out line (C(#dtparam=i2c_arm=on))
    is uncommented; the rest is inserted after the last managed line, or appended at the end of
    the file, behind a fresh C([all]) line when the file ends inside a filter such as C([pi4]).
  - Other lines are kept byte for byte; a second run changes nothing.
options:
  path: {description: The config.txt to edit (must exist)., type: path, required: true}
  settings: {description: "Lines such as C(dtparam=i2c_arm=on).", type: list, elements: str,
             required: true}
  backup: {description: Keep a timestamped copy before changing the file., type: bool,
           default: false}
"""

EXAMPLES = r"""
- name: Enable I2C at 400 kHz
  rpi_config_txt:
    path: /boot/firmware/config.txt
    settings: [dtparam=i2c_arm=on, dtparam=i2c_arm_baudrate=400000]
"""

RETURN = r"""
backup_file: {description: The copy made when I(backup) is true and the file changed., type: str,
              returned: changed and backup}
"""

_SECTION = re.compile(r"^\[[^\]]*\]$")


class SettingError(ValueError):
    """A requested setting is not of the form key=value."""


def parse_setting(setting: str) -> tuple[str, str]:
    """`dtparam=i2c_arm=on` → ("dtparam=i2c_arm", "on"); `gpu_mem=16` → ("gpu_mem", "16")."""
    text = setting.strip()
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise SettingError(f"setting {setting!r} is not of the form key=value")
    if key == "dtparam":
        name, sep, param_value = value.partition("=")
        if not sep or not name or "," in value:
            raise SettingError(f"setting {setting!r} must be dtparam=name=value (one parameter)")
        return f"dtparam={name}", param_value
    return key, value


def _line_items(line: str) -> tuple[str, list[tuple[str, str | None]]] | None:
    """An active line's key and its items: dtparam lines may carry `a=1,b=2`."""
    key, sep, value = line.strip().partition("=")
    if not sep:
        return None
    if key == "dtparam":
        items: list[tuple[str, str | None]] = []
        for item in value.split(","):
            name, has_value, item_value = item.partition("=")
            items.append((f"dtparam={name.strip()}", item_value if has_value else None))
        return key, items
    return key, [(key, value)]


def _rewrite(line: str, wanted: dict[str, str]) -> tuple[str, set[str]]:
    """Fix the values of wanted settings on one active line; return it and the keys it sets."""
    parsed = _line_items(line)
    if parsed is None:
        return line, set()
    key, items = parsed
    found = {name for name, _ in items if name in wanted}
    if not found or all(value == wanted[name] for name, value in items if name in wanted):
        return line, found
    if key == "dtparam":
        parts = []
        for name, value in items:
            param = name.removeprefix("dtparam=")
            new_value = wanted.get(name, value)
            parts.append(param if new_value is None else f"{param}={new_value}")
        return "dtparam=" + ",".join(parts), found
    return f"{key}={wanted[key]}", found


def ensure_config_txt(text: str, settings: list[str]) -> str:
    """Return `text` with every setting in force for all boards (unchanged if it already is)."""
    wanted = dict(parse_setting(s) for s in settings)
    lines = text.splitlines()
    in_all = True
    present: set[str] = set()
    for line in lines:
        stripped = line.strip()
        if _SECTION.match(stripped):
            in_all = stripped.lower() == "[all]"
        elif in_all and stripped and not stripped.startswith("#"):
            parsed = _line_items(stripped)
            if parsed:
                present.update(name for name, _ in parsed[1] if name in wanted)

    out: list[str] = []
    anchor: int | None = None
    in_all = True
    for line in lines:
        stripped = line.strip()
        if _SECTION.match(stripped):
            in_all = stripped.lower() == "[all]"
            out.append(line)
            continue
        if in_all and stripped.startswith("#"):
            candidate = stripped.lstrip("#").strip()
            try:
                key, _ = parse_setting(candidate)
            except SettingError:
                key = ""
            if key in wanted and key not in present:
                out.append(f"{key}={wanted[key]}")
                present.add(key)
                anchor = len(out)
                continue
        if in_all and stripped and not stripped.startswith("#"):
            new_line, found = _rewrite(stripped, wanted)
            if found:
                out.append(new_line if new_line != stripped else line)
                anchor = len(out)
                continue
        out.append(line)

    missing = [f"{key}={value}" for key, value in wanted.items() if key not in present]
    if missing:
        if anchor is not None:
            out[anchor:anchor] = missing
        else:
            if not in_all:
                if out and out[-1].strip():
                    out.append("")
                out.append("[all]")
            out.extend(missing)
    if out == lines:
        return text
    return "\n".join(out) + "\n"


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.boot_file import edit_file

    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "settings": {"type": "list", "elements": "str", "required": True},
            "backup": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    settings = module.params["settings"]
    result = edit_file(
        module, module.params["path"], lambda text: ensure_config_txt(text, settings)
    )
    result.pop("content")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
