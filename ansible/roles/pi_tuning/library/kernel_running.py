#!/usr/bin/python
"""Ansible module: how the running kernel's parameters differ from the wanted ones (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_running
short_description: Compare the wanted kernel parameters with the running kernel's
description:
  - Reads C(/proc/cmdline) and C(/sys/devices/system/cpu/isolated) and lists every difference
    from I(params) (an empty value means the key must be absent) and I(isolated_cpus).
  - Changes nothing; the boot files may already be right while the kernel still runs with the
    old ones (a reboot that never happened), which is exactly what this finds.
options:
  params: {description: "Key to value as in cmdline.txt; an empty value means absent.", type: dict,
           required: true}
  isolated_cpus: {description: The CPUs the kernel must report as isolated; null skips the check.,
                  type: list, elements: int, required: false}
  cmdline_path: {description: The running kernel's command line., type: path,
                 default: /proc/cmdline}
  isolated_path: {description: The running kernel's isolated CPUs., type: path,
                  default: /sys/devices/system/cpu/isolated}
"""

RETURN = r"""
differences: {description: "One line per difference, e.g. 'isolcpus=3 not in /proc/cmdline'.",
              type: list, elements: str, returned: always}
cmdline: {description: The running kernel command line., type: str, returned: always}
"""


def parse_cpu_list(text: str) -> set[int]:
    """The kernel's CPU list format ("2-3,5") as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def kernel_differences(
    cmdline: str, isolated: str, params: dict[str, str], isolated_cpus: list[int] | None
) -> list[str]:
    """Every way the running kernel (`cmdline`, `isolated`) differs from the wanted parameters."""
    tokens = cmdline.split()
    keys = {token.split("=", 1)[0] for token in tokens}
    out = []
    for key, value in params.items():
        if value and f"{key}={value}" not in tokens:
            out.append(f"{key}={value} not in /proc/cmdline")
        elif not value and key in keys:
            out.append(f"{key} in /proc/cmdline but not wanted")
    if isolated_cpus is not None and parse_cpu_list(isolated) != set(isolated_cpus):
        out.append(
            f"isolated CPUs are {sorted(parse_cpu_list(isolated))}, not {sorted(isolated_cpus)}"
        )
    return out


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "params": {"type": "dict", "required": True},
            "isolated_cpus": {"type": "list", "elements": "int", "required": False},
            "cmdline_path": {"type": "path", "default": "/proc/cmdline"},
            "isolated_path": {"type": "path", "default": "/sys/devices/system/cpu/isolated"},
        },
        supports_check_mode=True,
    )
    params = {str(k): "" if v is None else str(v) for k, v in module.params["params"].items()}
    try:
        with open(module.params["cmdline_path"], encoding="utf-8") as f:
            cmdline = f.read().strip()
        with open(module.params["isolated_path"], encoding="utf-8") as f:
            isolated = f.read()
    except OSError as e:
        module.fail_json(msg=f"cannot read the running kernel's parameters: {e}")
    differences = kernel_differences(cmdline, isolated, params, module.params["isolated_cpus"])
    module.exit_json(changed=False, differences=differences, cmdline=cmdline)


if __name__ == "__main__":
    main()
