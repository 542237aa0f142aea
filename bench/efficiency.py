"""Efficiency side by side: wilo-backend and the replaced design's loop at the same moment.

Both run at once on this machine, each on its own register-level simulated MPU-6050 (the same
simulator and bus code): the service as `wilo-backend run --sensor sim` (defaults, fsync on),
the loop as bench/replaced_loop.py. CPU time of every process of each over the same window,
divided by the samples each stored meanwhile; idle, then beside two CPU burners.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from bench.servicerun import RunningService, dashboard, request, running_service
from bench.storage import _populate
from wilo_backend.server.protocol import encode
from wilo_backend.store.summary import Summaries, make_points, points_to_rows, summarize_100ms

T0_NS = 1_795_792_920 * 1_000_000_000


def _burn() -> None:
    while True:
        pass


@contextmanager
def burners(count: int) -> Iterator[None]:
    processes = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        yield
    finally:
        for process in processes:
            process.kill()
            process.join()


@contextmanager
def replaced_loop(folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    out = folder / "loop.jsonl"
    with out.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.replaced_loop", str(folder / "files")], stdout=stdout
        )
    try:
        yield process, out
    finally:
        process.kill()
        process.wait()


def _loop_stored(out: Path) -> tuple[float, int]:
    """(its time, samples it had stored) from the loop's newest line."""
    lines = out.read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {"time": time.time(), "stored": 0}
    return float(last["time"]), int(last["stored"])


def _service_status(service: RunningService) -> dict[str, object]:
    reply = asyncio.run(request(service.url, "get_status"))
    data = reply["data"]
    assert isinstance(data, dict)
    return data


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def _pss_mib(processes: list[psutil.Process]) -> float:
    return sum(p.memory_full_info().pss for p in processes) / 2**20


@dataclass
class Row:
    label: str
    service_us: float
    loop_us: float
    service_rate: float
    loop_rate: float
    service_core: float
    loop_core: float
    main_core: float
    lost: int
    loadavg: float

    @property
    def ratio(self) -> float:
        return self.service_us / self.loop_us


def compare(
    label: str, service: RunningService, loop_out: Path, loop_pid: int, seconds: float
) -> Row:
    roles = service.processes()
    service_procs = list(roles.values())
    loop_proc = psutil.Process(loop_pid)
    status0 = _service_status(service)
    t0 = time.time()
    cpu0, main0, loop_cpu0 = _cpu(service_procs), _cpu([roles["main"]]), _cpu([loop_proc])
    loop0 = _loop_stored(loop_out)
    time.sleep(seconds)
    status1 = _service_status(service)
    t1 = time.time()
    cpu1, main1, loop_cpu1 = _cpu(service_procs), _cpu([roles["main"]]), _cpu([loop_proc])
    loop1 = _loop_stored(loop_out)
    stored = int(status1["samples_stored"]) - int(status0["samples_stored"])  # type: ignore[call-overload]
    loop_stored = loop1[1] - loop0[1]
    sampler1 = status1["sampler"]
    assert isinstance(sampler1, dict)
    lost = int(sampler1["lost_samples"]) + int(status1["samples_store_failed"])  # type: ignore[call-overload]
    elapsed = t1 - t0
    return Row(
        label,
        service_us=1e6 * (cpu1 - cpu0) / max(1, stored),
        loop_us=1e6 * (loop_cpu1 - loop_cpu0) / max(1, loop_stored),
        service_rate=stored / elapsed,
        loop_rate=loop_stored / (loop1[0] - loop0[0]),
        service_core=100 * (cpu1 - cpu0) / elapsed,
        loop_core=100 * (loop_cpu1 - loop_cpu0) / elapsed,
        main_core=100 * (main1 - main0) / elapsed,
        lost=lost,
        loadavg=os.getloadavg()[0],
    )


def dashboard_pss(service: RunningService, seconds: float) -> tuple[float, float]:
    """(peak PSS of all the service's processes, peak main RSS) in MiB under one dashboard."""
    processes = list(service.processes().values())
    peaks = [0.0, 0.0]

    async def watch() -> None:
        stop = asyncio.Event()
        client = asyncio.create_task(dashboard(service.url, stop, every_s=5.0))
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            peaks[0] = max(peaks[0], _pss_mib(processes))
            peaks[1] = max(peaks[1], processes[0].memory_info().rss / 2**20)
            await asyncio.sleep(2)
        stop.set()
        await client

    asyncio.run(watch())
    return peaks[0], peaks[1]


def recent_reply_ms(segments: int) -> tuple[float, float]:
    """get_recent_data over `segments` minutes → 3000 rows (Summaries.recent + rows + JSON), from
    100 ms points as start-up restores them: (wall p50, CPU p50) in ms."""
    summaries = Summaries(segments * 60, 300)
    rng = np.random.default_rng(0)
    t = T0_NS + np.arange(48_000, dtype=np.int64) * 1_250_000
    xyz = rng.normal(0, 1, (48_000, 3)) + np.array([0.0, 0.0, 9.8])
    segment = summarize_100ms(make_points(t, xyz))
    for k in range(segments):
        points = segment.copy()
        points["t"] += k * 60 * 10**9
        summaries.load_100ms(points)
    wall, cpu = [], []
    for _ in range(30):
        started, started_cpu = time.perf_counter(), time.process_time()
        rows = points_to_rows(summaries.recent(segments * 60, 3000))
        encode({"type": "recent_data", "data": rows})
        wall.append(1e3 * (time.perf_counter() - started))
        cpu.append(1e3 * (time.process_time() - started_cpu))
    return float(np.median(wall)), float(np.median(cpu))


def day_rss() -> float:
    """Main RSS (MiB) 10 s after start with max_files = 1440 (24 h of 60 s segments)."""
    base = Path(tempfile.mkdtemp(prefix="wilo-bench-eff-day-", dir="/var/tmp"))
    try:
        with running_service(base / "data", {"WILO_STORAGE_MAX_FILES": "1440"}) as service:
            time.sleep(10)
            return float(service.processes()["main"].memory_info().rss / 2**20)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(quick: bool) -> str:
    seconds = 20.0 if quick else 60.0
    warmup = 10.0 if quick else 20.0
    base = Path(tempfile.mkdtemp(prefix="wilo-bench-efficiency-", dir="/var/tmp"))
    rows: list[Row] = []
    try:
        _populate(base / "data", 120)  # two hours retained, as on the Pi after two hours
        with running_service(base / "data") as service, replaced_loop(base) as (loop, out):
            time.sleep(warmup)
            rows.append(compare("idle", service, out, loop.pid, seconds))
            pss_idle = _pss_mib(list(service.processes().values()))
            pss_dash, rss_dash = dashboard_pss(service, seconds)
            with burners(2):
                time.sleep(5)
                rows.append(compare("2 CPU burners", service, out, loop.pid, seconds))
            roles = service.processes()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rss_day = day_rss()
    day_wall, day_cpu = recent_reply_ms(1440)
    two_wall, two_cpu = recent_reply_ms(120)
    lines = [
        "## efficiency",
        "",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
        f" Service data folder: 120 full 60 s segments (two hours) retained. {seconds:.0f} s a "
        "row after a warm-up; CPU = user + system time of every process (service: "
        f"{', '.join(roles)}).",
        "",
        "| load | µs CPU per stored sample: service / replaced loop | ratio | samples stored per s "
        "| CPU % of a core | main process % of a core | lost | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.service_us:.1f} / {r.loop_us:.1f} | **{r.ratio:.2f}×** | "
            f"{r.service_rate:.1f} / {r.loop_rate:.1f} | {r.service_core:.1f} / {r.loop_core:.1f} "
            f"| {r.main_core:.2f} | {r.lost} | {r.loadavg:.1f} |"
        )
    lines += [
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| CPU per stored sample, service / loop, idle | {rows[0].ratio:.2f}× | ≤ 0.5× |",
        f"| … beside two CPU burners | {rows[1].ratio:.2f}× | ≤ 0.5× |",
        f"| main process, idle (no client), % of a core | {rows[0].main_core:.2f} % | ≤ 2 % |",
        f"| PSS of all the service's processes, idle / peak under one dashboard (every 5 s) "
        f"| {pss_idle:.1f} / {pss_dash:.1f} MiB | ≤ 80 MiB |",
        f"| main-process RSS peak under the dashboard | {rss_dash:.0f} MiB | |",
        f"| main-process RSS 10 s after start, `max_files = 1440` (24 h) | {rss_day:.0f} MiB "
        "| ≤ 100 MiB |",
        f"| `get_recent_data` → 3000 rows (Summaries.recent + rows + JSON), 24 h window, "
        f"p50 wall / CPU | {day_wall:.1f} / {day_cpu:.1f} ms | ≤ 20 ms |",
        f"| … the same over 2 h (120 segments), p50 wall / CPU | {two_wall:.1f} / {two_cpu:.1f} ms "
        f"| ≤ 20 ms |",
        f"| load average (1 min) at the end | {os.getloadavg()[0]:.1f} | |",
        f"| samples lost (service), all rows | {sum(r.lost for r in rows)} | 0 |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
