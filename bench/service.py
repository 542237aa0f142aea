"""Whole-service bench: start-up over 120 full segments, main-process RSS under dashboard load."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.servicerun import live_subscriber as _subscriber
from bench.servicerun import request as _request
from bench.servicerun import running_service
from bench.storage import _populate

SLOWEST_TRIM = re.compile(r"malloc_trim took ([\d.]+) ms \(slowest so far\)")
SEGMENTS = 120


async def _reader(url: str, stop: asyncio.Event) -> int:
    replies = 0
    files = (await _request(url, "get_file_list"))["files"]
    assert isinstance(files, list)
    while not stop.is_set():
        await _request(url, "get_recent_data")
        await _request(url, "get_csv_data", filename=files[replies % len(files)])
        replies += 2
    return replies


async def _load(url: str, seconds: float, rss_mib: list[tuple[float, float]], pid: int) -> str:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_subscriber(url, stop)) for _ in range(10)]
    tasks += [asyncio.create_task(_reader(url, stop)) for _ in range(3)]
    export = await _request(url, "export_all_csv_zip")
    process = psutil.Process(pid)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        rss_mib.append((time.monotonic() - started, process.memory_info().rss / 2**20))
        await asyncio.sleep(5)
    stop.set()
    results = await asyncio.gather(*tasks)
    return (
        f"10 live subscribers ({sum(results[:10]):,} frames), 3 readers alternating "
        f"get_recent_data (whole window) and get_csv_data of a full segment "
        f"({sum(results[10:]):,} replies), one export ({export.get('file_count')} files)"
    )


def run(quick: bool) -> str:
    seconds = 60.0 if quick else 360.0
    base = Path(tempfile.mkdtemp(prefix="wilo-bench-service-", dir="/var/tmp"))
    try:
        _populate(base, SEGMENTS)
        subprocess.run(["sync"], check=False)
        started = time.monotonic()
        rss: list[tuple[float, float]] = []
        # DEBUG for heap.py's "malloc_trim took … (slowest so far)" lines
        with running_service(base, {"WILO_LOG_LEVEL": "DEBUG"}) as service:
            startup_s = time.monotonic() - started
            load = asyncio.run(_load(service.url, seconds, rss, service.process.pid))
        exit_code = service.exit_code
        log_path = service.log_path
        warm = [mib for t, mib in rss if t >= min(330.0, seconds / 2)]
        trims_ms = [float(ms) for ms in SLOWEST_TRIM.findall(log_path.read_text())]
        load_avg = os.getloadavg()[0]
        return "\n".join(
            [
                "## service",
                "",
                f"The real `wilo-backend run --sensor sim` (fsync on, default config) over a data "
                f"folder holding {SEGMENTS} full 60 s segments; load for {seconds:.0f} s: {load}. "
                f"Load average at the end: {load_avg:.1f} (2 CPUs).",
                "",
                "| figure | value | target |",
                "|---|---|---|",
                f"| start-up with {SEGMENTS} full segments (spawn → listening, incl. Python "
                f"imports) | {startup_s:.2f} s | ≤ 2 s |",
                f"| main-process RSS after warm-up (raw ring full): min / max | "
                f"{min(warm):.0f} / {max(warm):.0f} MiB | ≤ 100 MB |",
                f"| main-process RSS peak, whole run | {max(m for _, m in rss):.0f} MiB | |",
                f"| slowest `malloc_trim` (every 5 s, on the event loop; the first pays for "
                f"start-up's garbage) | {max(trims_ms, default=float('nan')):.2f} ms | |",
                f"| clean exit on SIGTERM | code {exit_code} | 0 |",
                "",
                "RSS every 30 s (MiB): "
                + ", ".join(f"{mib:.0f}" for t, mib in rss if int(t) % 30 < 5),
                "",
            ]
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
