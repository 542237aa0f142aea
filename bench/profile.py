"""Where the running service spends its CPU, per process: py-spy samples sorted into categories.

`python -m bench.profile [--seconds S]` (root: py-spy attaches with ptrace) starts the real
`wilo-backend run --sensor sim`, and for each load (idle; one dashboard; 50 live subscribers)
measures each process's CPU time with psutil while py-spy samples its on-CPU stacks (idle
threads are not sampled, so sample shares are shares of CPU time). Each stack goes to the first
category below that any of its frames matches. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil

from bench.servicerun import RunningService, dashboard, live_subscriber, running_service

PY_SPY = Path(sys.executable).with_name("py-spy")
RATE_HZ = 250

# (category, substrings of a frame "function (file:line)"); the first category any frame
# of a stack matches wins, so the specific ones come first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("heap trimming", ("release_free_memory", "trim_periodically")),
    ("status pushes", ("notify_status", "status_data", "_status_loop", "_collection_state")),
    ("/metrics, /healthz", ("metrics.py", "render_", "health (")),
    ("live fan-out (encode, queue, send)", ("live.py", "_flush_if_due", "_write_pushes")),
    ("analytics windows", ("analytics/",)),
    ("CSV formatting", ("format_rows", "pad_rows", "csvformat.py")),
    ("summaries", ("summary.py",)),
    ("CSV writing + fdatasync", ("_write_run", "aggregate.py", "_flush (", "_create_file")),
    ("store bookkeeping (append, split)", ("store/",)),
    ("resampler", ("resample.py",)),
    ("timestamps (sensor clock regression)", ("timebase.py", "WallOffset")),
    ("hand-off (shared-memory ring)", ("transport.py",)),
    ("sensor reads (bus + simulator)", ("sim.py", "mpu6050.py", "fifo.py")),
    ("acquisition loop (stream, counters)", ("stream.py", "acquire.py", "_acquisition_main")),
    ("pump wakeups (waiting for batches)", ("_wait (", "Sampler.read (", "_pump (")),
    ("requests (dashboard commands)", ("protocol.py", "_serve_requests", "workers.py")),
    ("websockets I/O", ("websockets/",)),
    ("event-loop wakeups", ("base_events.py", "selectors.py", "events.py", "tasks.py")),
]
OTHER = "other (GC, imports, threads)"


def categorise(stack: str) -> str:
    frames = stack.split(";")
    for name, needles in CATEGORIES:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return OTHER


def read_raw(path: Path) -> Counter[str]:
    """py-spy's raw format: 'frame;frame;... count' per line, root first."""
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[categorise(stack)] += int(count)
    return counts


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def profile(
    service: RunningService, seconds: float, workdir: Path, label: str
) -> dict[str, tuple[float, Counter[str]]]:
    """{role: (% of a core, samples per category)} over `seconds`."""
    processes = service.processes()
    before = {role: _cpu_seconds(p) for role, p in processes.items()}
    started = time.monotonic()
    spies = {}
    for role, process in processes.items():
        out = workdir / f"{label}-{role.replace(' ', '_')}.txt"
        command = [str(PY_SPY), "record", "--pid", str(process.pid), "--format", "raw"]
        command += ["--rate", str(RATE_HZ), "--duration", str(int(seconds)), "--nonblocking"]
        command += ["--output", str(out)]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        spies[role] = (spy, out)
    for spy, _ in spies.values():
        spy.wait()
    elapsed = time.monotonic() - started
    result = {}
    for role, process in processes.items():
        percent = 100 * (_cpu_seconds(process) - before[role]) / elapsed
        result[role] = (percent, read_raw(spies[role][1]))
    return result


def _in_thread(make: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> Callable[[], None]:
    """Run the load on its own event loop in a thread; returns the function that stops it."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def body() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
            ready.set()
            await make(stop)

        asyncio.run(main())

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    ready.wait()

    def stop() -> None:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(30)

    return stop


async def _no_load(stop: asyncio.Event) -> None:
    await stop.wait()


def _loads(url: str) -> dict[str, Callable[[asyncio.Event], Coroutine[Any, Any, Any]]]:
    async def one_dashboard(stop: asyncio.Event) -> None:
        await dashboard(url, stop)

    async def fifty_live(stop: asyncio.Event) -> None:
        await asyncio.gather(*(live_subscriber(url, stop) for _ in range(50)))

    return {"idle": _no_load, "dashboard": one_dashboard, "50 live clients": fifty_live}


def table(results: dict[str, dict[str, tuple[float, Counter[str]]]]) -> list[str]:
    loads = list(results)
    roles = ["main", "sampler", "resource tracker"]
    lines = [
        "| process | where | " + " | ".join(loads) + " |",
        "|---|---|" + "---|" * len(loads),
    ]
    for role in roles:
        if not any(role in results[load] for load in loads):
            lines.append(f"| {role} | (no such process) |" + " |" * len(loads))
            continue
        cells = [f"**{results[load].get(role, (0.0, Counter()))[0]:.2f} %**" for load in loads]
        lines.append(f"| {role} | **all (% of a core)** | " + " | ".join(cells) + " |")
        names = [name for name, _ in CATEGORIES] + [OTHER]
        for name in names:
            row = []
            for load in loads:
                percent, counts = results[load].get(role, (0.0, Counter()))
                total = sum(counts.values())
                share = counts[name] / total if total else 0.0
                row.append(f"{percent * share:.2f}" if counts[name] else "")
            if any(row):
                lines.append(f"| | {name} | " + " | ".join(row) + " |")
    return lines


def run(seconds: float = 30.0, warmup: float = 20.0, env: dict[str, str] | None = None) -> str:
    if os.geteuid() != 0:
        return "## profile\n\nNot run: py-spy attaches with ptrace and needs root.\n"
    base = Path(tempfile.mkdtemp(prefix="wilo-bench-profile-", dir="/var/tmp"))
    results: dict[str, dict[str, tuple[float, Counter[str]]]] = {}
    loadavg = []
    try:
        with running_service(base / "data", env) as service:
            time.sleep(warmup)  # the raw ring fills, the first flushes and trims are done
            for label, load in _loads(service.url).items():
                stop = _in_thread(load)
                try:
                    time.sleep(3)
                    results[label] = profile(service, seconds, base, label.replace(" ", "_"))
                    loadavg.append(f"{label} {os.getloadavg()[0]:.1f}")
                finally:
                    stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(
        [
            f"py-spy {RATE_HZ} Hz, {seconds:.0f} s per load, CPU % of one core from psutil over "
            f"the same {seconds:.0f} s, split by the share of py-spy's on-CPU samples. "
            f"Load average (1 min) at the end of each: {', '.join(loadavg)} (2 CPUs, shared).",
            "",
            *table(results),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(run(args.seconds))
