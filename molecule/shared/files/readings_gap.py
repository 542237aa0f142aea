#!/usr/bin/python3
"""Largest hole between consecutive stored samples in a time window (the data a restart lost),
and the rate stored over it (rows per second of the window, with --rate).

Exit 0: gap within --max-gap (and the rate within --rate +- --rate-tolerance); 1: gap too large,
rate off, or no data; 2: the window's end is not on disk yet (flushes run every second; poll again).

Only segments written to since shortly before the window are read, and only rows whose timestamp
text falls in it are parsed: under qemu user-mode emulation, reading every retained segment with
strptime took minutes per poll.
"""

import argparse
import csv
import itertools
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

# more than this missing at the window's end means the last flush is still to come
NOT_FLUSHED_S = 0.05
# A segment last modified this long before the window starts holds none of its rows: rows are
# written (flush every second) after their timestamp; the margin covers a flush late under load.
MTIME_MARGIN_S = 30.0


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()  # "2026-12-02T13:22:43.233974Z" (3.11+)


def iso_z(epoch_s: float) -> str:
    """The stored timestamp text of an epoch time; fixed width, so text order is time order."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("readings", type=Path, help="the readings/ folder")
    parser.add_argument("--since", type=float, required=True, help="window start, epoch seconds")
    parser.add_argument("--until", type=float, required=True, help="window end, epoch seconds")
    parser.add_argument("--max-gap", type=float, required=True, help="seconds; exit 1 above it")
    parser.add_argument("--rate", type=float, help="rows per second the window must hold")
    parser.add_argument("--rate-tolerance", type=float, default=1.0, help="rows per second")
    args = parser.parse_args()
    # the text bounds a microsecond wider than the window: the float check below is exact
    low, high = iso_z(args.since - 1e-6), iso_z(args.until + 1e-6)
    stamps: list[float] = []
    for path in sorted(args.readings.glob("[0-9][0-9][0-9][0-9]/**/*.csv")):
        try:
            if path.stat().st_mtime < args.since - MTIME_MARGIN_S:
                continue
            with path.open(newline="") as f:
                rows = csv.reader(f)
                column = next(rows, ["timestamp"]).index("timestamp")
                for row in rows:
                    if row and low <= row[column] <= high:
                        t = parse_ts(row[column])
                        if args.since <= t <= args.until:
                            stamps.append(t)
        except FileNotFoundError:  # evicted by retention while we looked
            continue
    stamps.sort()
    if len(stamps) < 2:  # a gap needs two samples
        print(f"only {len(stamps)} samples stored between {args.since} and {args.until}")
        return 1
    gap_s, at = max((b - a, a) for a, b in itertools.pairwise(stamps))
    first_s, last_s = stamps[0] - args.since, args.until - stamps[-1]
    report = {
        "samples": len(stamps),
        "max_gap_s": round(gap_s, 4),
        "gap_starts_at": datetime.fromtimestamp(at, UTC).isoformat(),
        "window_head_missing_s": round(first_s, 4),
        "window_tail_missing_s": round(last_s, 4),
        "rows_per_s": round(len(stamps) / (args.until - args.since), 3),
    }
    print(json.dumps(report))
    if last_s > NOT_FLUSHED_S:
        return 2
    rate_ok = args.rate is None or abs(report["rows_per_s"] - args.rate) <= args.rate_tolerance
    return 0 if gap_s <= args.max_gap and rate_ok else 1


if __name__ == "__main__":
    sys.exit(main())
