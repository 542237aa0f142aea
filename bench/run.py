"""make bench: run each benchmark section, write BENCHMARKS.md with the command and machine."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import psutil

SECTIONS = ("acquisition", "storage", "server", "analytics", "service", "abuse", "efficiency")
OUTPUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.node()}: {os.cpu_count()} × {cpu}, {memory_gib:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test of the bench)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write the report")
    args = parser.parse_args(argv)
    chosen = args.only or list(SECTIONS)
    given = sys.argv[1:] if argv is None else argv
    command = "make bench" + (f" BENCH_ARGS='{' '.join(given)}'" if given else "")
    parts = [
        "# Benchmarks",
        "",
        f"Command: `{command}` — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine_description()}",
        "",
        "Figures are ratios or distributions from whole runs; a figure that misses its target is",
        "reported as measured.",
        "",
    ]
    failed = False
    for name in chosen:
        started = time.monotonic()
        print(f"== bench {name} ...", flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            section = module.run(quick=args.quick)
        except Exception:
            failed = True
            section = f"## {name}\n\nFAILED:\n\n```\n{traceback.format_exc()}```\n"
        print(section, flush=True)
        parts += [section.rstrip(), "", f"_({name}: {time.monotonic() - started:.0f} s)_", ""]
    args.output.write_text("\n".join(parts))
    print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
