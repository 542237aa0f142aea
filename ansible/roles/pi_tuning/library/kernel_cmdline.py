#!/usr/bin/python
"""Ansible module: merge key=value tokens into the single line of a Raspberry Pi cmdline.txt."""

from __future__ import annotations

import re

DOCUMENTATION = r"""
module: kernel_cmdline
short_description: Merge parameters into the one-line kernel command line file (cmdline.txt)
description:
  - Each parameter in I(params) ends up exactly once as C(key=value); a token with the same key
    and another value is replaced where it stands, duplicates are dropped, missing ones are
    appended. An empty value removes the key. Every other token is kept in its place.
  - The Raspberry Pi firmware reads only one line; a file with more fails loudly.
options:
  path: {description: The cmdline.txt to edit (must exist)., type: path, required: true}
  params: {description: "Key to value, e.g. C({isolcpus: '3'}); an empty value removes the key.",
           type: dict, required: true}
  backup: {description: Keep a timestamped copy before changing the file., type: bool,
           default: false}
"""

EXAMPLES = r"""
- name: Isolate core 3
  kernel_cmdline:
    path: /boot/firmware/cmdline.txt
    params: {isolcpus: "3", nohz_full: "3", rcu_nocbs: "3"}
"""

RETURN = r"""
cmdline: {description: The resulting command line., type: str, returned: always}
"""

# A token is a run of non-blanks where a double-quoted part may hold blanks (dyndbg="a b").
_TOKEN = re.compile(r'(?:[^\s"]+|"[^"]*")+')


class CmdlineError(ValueError):
    """The file is not a one-line kernel command line."""


def split_cmdline(line: str) -> list[str]:
    """Tokens of a kernel command line, quotes kept."""
    return _TOKEN.findall(line)


def merge_cmdline(text: str, params: dict[str, str]) -> str:
    """Return `text` with `params` merged in; `text` itself when nothing needs to change."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        raise CmdlineError(f"expected one line, found {len(lines)}: the firmware reads only one")
    tokens = split_cmdline(lines[0]) if lines else []
    out: list[str] = []
    placed: set[str] = set()
    for token in tokens:
        key = token.split("=", 1)[0]
        if key not in params:
            out.append(token)
        elif params[key] and key not in placed:
            out.append(f"{key}={params[key]}")
            placed.add(key)
    out.extend(f"{key}={value}" for key, value in params.items() if value and key not in placed)
    if out == tokens:
        return text
    return " ".join(out) + "\n"


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.boot_file import edit_file

    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "params": {"type": "dict", "required": True},
            "backup": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = {str(k): "" if v is None else str(v) for k, v in module.params["params"].items()}
    bad = [k for k in params if not k or "=" in k or any(c.isspace() for c in k)]
    if bad:
        module.fail_json(msg=f"invalid kernel parameter names: {bad}")
    result = edit_file(module, module.params["path"], lambda text: merge_cmdline(text, params))
    result["cmdline"] = str(result.pop("content")).strip()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
