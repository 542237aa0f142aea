"""Pass `molecule test` output through and print how long each action of each scenario took."""

import re
import sys
import time

# "INFO     default ➜ converge: Executing" / "... ➜ converge: Executed: Successful" (ANSI colours)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEP = re.compile(r"INFO\s+(\S+) ➜ (\S+): (Executing|Executed)")


def main() -> int:
    started: dict[tuple[str, str], float] = {}
    rows: list[tuple[str, str, float]] = []
    t0 = time.monotonic()
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
        match = STEP.search(ANSI.sub("", line))
        if match is None:
            continue
        scenario, action, what = match.groups()
        if what == "Executing":
            started[scenario, action] = time.monotonic()
        elif (scenario, action) in started:
            rows.append((scenario, action, time.monotonic() - started.pop((scenario, action))))
    print("\nmolecule timings (s):")
    for scenario, action, seconds in rows:
        print(f"  {scenario:<10} {action:<12} {seconds:6.1f}")
    print(f"  {'total':<23} {time.monotonic() - t0:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
