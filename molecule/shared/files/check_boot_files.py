#!/usr/bin/python3
"""Check the Pi boot files pi_tuning edited on a test host; exit 1 naming every problem."""

import argparse
import sys
from pathlib import Path

# What testhost.sh wrote into cmdline.txt; every one of these must survive the role.
ORIGINAL_TOKENS = (
    "console=serial0,115200",
    "console=tty1",
    "root=PARTUUID=4e639091-02",
    "rootfstype=ext4",
    "fsck.repair=yes",
    "rootwait",
    "quiet",
    "splash",
)
REQUIRED_DTPARAMS = ("dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000")


def config_problems(text: str) -> list[str]:
    """Each required dtparam set, uncommented, in [all] (a [pi4] filter would hide it)."""
    problems = []
    section = "[all]"  # config.txt starts unfiltered
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif line in REQUIRED_DTPARAMS:
            found.setdefault(line, section)
            if section != "[all]":
                problems.append(f"config.txt: {line!r} sits in {section}, not [all]")
    problems += [f"config.txt: {p!r} missing" for p in REQUIRED_DTPARAMS if p not in found]
    return problems


def cmdline_problems(text: str, cpu: str) -> list[str]:
    problems = []
    lines = text.splitlines()
    if len(lines) != 1:
        problems.append(f"cmdline.txt: {len(lines)} lines, the firmware reads only one")
    tokens = text.split()
    for key in ("isolcpus", "nohz_full", "rcu_nocbs"):
        values = [t for t in tokens if t.split("=", 1)[0] == key]
        if values != [f"{key}={cpu}"]:
            problems.append(f"cmdline.txt: {key} is {values}, want ['{key}={cpu}']")
    problems += [
        f"cmdline.txt: original token {t!r} lost" for t in ORIGINAL_TOKENS if t not in tokens
    ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("boot_dir", type=Path, help="where the real config.txt/cmdline.txt live")
    parser.add_argument("--cpu", default="3", help="the isolated core the role was given")
    parser.add_argument("--stub", type=Path, help="a do-not-edit stub that must stay untouched")
    args = parser.parse_args()
    problems = config_problems((args.boot_dir / "config.txt").read_text())
    problems += cmdline_problems((args.boot_dir / "cmdline.txt").read_text(), args.cpu)
    if args.stub is not None:
        stub = args.stub.read_text()
        if "dtparam" in stub or not stub.startswith("DO NOT EDIT"):
            problems.append(f"{args.stub}: the do-not-edit stub was changed")
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.boot_dir}: config.txt and cmdline.txt as expected (isolated core {args.cpu})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
