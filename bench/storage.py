"""Storage bench: CSV rows/s, write amplification, eviction time, start-up, RSS, recent()."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from wilo_backend.config import StorageConfig
from wilo_backend.model import STANDARD_GRAVITY_MS2, SampleBatch
from wilo_backend.store.aggregate import collapse_supported_in
from wilo_backend.store.csvformat import format_rows
from wilo_backend.store.store import Store

RATE_HZ = 800
PERIOD_NS = 1_250_000
T0_NS = 1_795_792_920 * 1_000_000_000  # 2026-11-27T15:22:00Z, on a segment boundary
REPO = Path(__file__).resolve().parent.parent


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _signal(n: int, rng: np.random.Generator) -> np.ndarray[Any, np.dtype[np.float64]]:
    xyz = rng.normal(0.0, 0.05, (n, 3))
    xyz[:, 2] += STANDARD_GRAVITY_MS2
    xyz[:, 0] += 1.5 * np.sin(np.arange(n) * (2 * np.pi * 24.5 / RATE_HZ))
    return xyz


def _feed(
    store: Store, clock: _Clock, t0_ns: int, seconds: int, index0: int = 0, per_batch_s: int = 1
) -> float:
    """Append `seconds` of 800 Hz data, `per_batch_s` seconds per batch (a flush each);
    returns the seconds spent in append."""
    rng = np.random.default_rng(5)
    xyz_batch = _signal(RATE_HZ * per_batch_s, rng)
    offsets = np.arange(RATE_HZ * per_batch_s, dtype=np.int64) * PERIOD_NS
    spent = 0.0
    for s in range(0, seconds, per_batch_s):
        batch = SampleBatch(
            index0 + s * RATE_HZ, t0_ns + s * 1_000_000_000 + offsets, xyz_batch.copy()
        )
        clock.now += per_batch_s
        started = time.perf_counter()
        store.append(batch)
        spent += time.perf_counter() - started
    return spent


def _config(folder: Path, segments: int, fsync: bool) -> StorageConfig:
    return StorageConfig(
        data_dir=str(folder), max_files=segments, fsync=fsync, min_free_mb=0, segment_seconds=60
    )


def _populate(folder: Path, segments: int) -> None:
    clock = _Clock()
    store = Store(_config(folder, segments, fsync=False), monotonic=clock)
    store.open()
    _feed(store, clock, T0_NS, segments * 60)
    store.close()
    os.sync()


def _proc_io() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, value = line.split(":")
        out[key] = int(value)
    return out


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(folder: Path, segments: int, steady_seconds: int) -> dict[str, Any]:
    """Open a populated store (start-up time), run at steady state, report figures as JSON."""
    clock = _Clock()
    started = time.perf_counter()
    store = Store(_config(folder, segments, fsync=True), monotonic=clock)
    store.open()
    startup_s = time.perf_counter() - started
    newest = store.summaries.newest_t_ns or T0_NS
    t0 = (newest // 60_000_000_000 + 1) * 60_000_000_000
    io_before = _proc_io()
    spent = _feed(store, clock, t0, steady_seconds)
    store.wait_idle()  # count the last background rewrite; time recent() without it
    io_after = _proc_io()
    status = store.status()
    csv_bytes = status.segment_bytes_written
    appended, rebuilt = status.aggregate_bytes_appended, status.aggregate_bytes_rebuilt
    recent_ms = []
    for _ in range(20):
        t = time.perf_counter()
        store.recent(segments * 60, 3000)
        recent_ms.append((time.perf_counter() - t) * 1000)
    evictions = sorted(status.eviction_seconds)
    rebuilds = sorted(status.rebuild_seconds)
    result = {
        "startup_s": startup_s,
        "files": len(store.file_list()),
        "collapse": collapse_supported_in(store.readings_dir),
        "collapses_rebuilds": (status.aggregate_collapses, status.aggregate_rebuilds),
        "rows_per_s_with_fsync": steady_seconds * RATE_HZ / spent,
        "io_ratio": (io_after["write_bytes"] - io_before["write_bytes"]) / csv_bytes,
        "counted_ratio": (csv_bytes + appended + rebuilt) / csv_bytes,
        "evict_ms_p50": 1000 * evictions[len(evictions) // 2] if evictions else 0.0,
        "evict_ms_p99": 1000 * evictions[min(len(evictions) - 1, int(len(evictions) * 0.99))]
        if evictions
        else 0.0,
        "evict_ms_max": 1000 * evictions[-1] if evictions else 0.0,
        "evictions": len(evictions),
        "rebuild_s_p50": rebuilds[len(rebuilds) // 2] if rebuilds else 0.0,
        "rebuild_s_max": rebuilds[-1] if rebuilds else 0.0,
        "rebuilds": len(rebuilds),
        "recent_ms_p50": statistics.median(recent_ms),
        "recent_ms_max": max(recent_ms),
        "rss_mb": _status_kb("VmRSS") / 1024,
        "hwm_mb": _status_kb("VmHWM") / 1024,
    }
    store.close()
    return result


def _run_child(folder: Path, segments: int, steady_seconds: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-m", "bench.storage", str(folder), str(segments), str(steady_seconds)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    parsed: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return parsed


def _format_rate() -> float:
    n = 48_000
    t = T0_NS + np.arange(n, dtype=np.int64) * PERIOD_NS
    xyz = _signal(n, np.random.default_rng(1))
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        format_rows(t, xyz)
        best = max(best, n / (time.perf_counter() - started))
    return best


def _capacity(base: Path) -> float:
    """Rows/s the store formats and writes (fdatasync on) when it has a backlog: 10 s per flush."""
    folder = Path(tempfile.mkdtemp(prefix="wilo-bench-", dir=base))
    try:
        clock = _Clock()
        store = Store(_config(folder, 120, fsync=True), monotonic=clock)
        store.open()
        spent = _feed(store, clock, T0_NS, 300, per_batch_s=10)
        store.close()
        return 300 * RATE_HZ / spent
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _drop_cache(folder: Path) -> None:
    """Evict this data folder's files from the page cache (only these files: other work on the
    machine keeps its cache), so start-up reads from the disk as after a reboot."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _scenario(base: Path, segments: int, steady_seconds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="wilo-bench-", dir=base))
    try:
        _populate(folder, segments)
        _drop_cache(folder)
        return _run_child(folder, segments, steady_seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def run(quick: bool) -> str:
    segments = 10 if quick else 120
    steady_seconds = 300 if quick else 1800
    ext4_base = Path("/var/tmp")
    shm_base = Path("/dev/shm")
    ext4 = _scenario(ext4_base, segments, steady_seconds)
    fallback = _scenario(shm_base, segments, steady_seconds if not quick else 180)
    lines = [
        "## storage",
        "",
        f"{segments} full 60 s segments of 800 Hz data retained"
        + (" (quick mode: fewer segments than the 120 of production)" if quick else "")
        + f", then {steady_seconds // 60} min at steady state with a flush (fdatasync) every"
        " second and an eviction every minute. Each scenario runs in a fresh process."
        f" Load average when the section finished: {_load()} (2 CPUs shared with other work:"
        " timing figures vary with it, ratios do not).",
        f"ext4 = `{ext4_base}` (COLLAPSE_RANGE: {collapse_supported_in(ext4_base)}); "
        f"fallback = `{shm_base}` tmpfs (streaming rebuild).",
        "",
        "| figure | ext4 (collapse) | tmpfs (rebuild fallback) | target |",
        "|---|---|---|---|",
        f"| rows formatted per second (format only) | {_format_rate():,.0f} | | ≥ 100,000 |",
        f"| rows formatted + written per second, 10 s per flush (a backlog) | "
        f"{_capacity(ext4_base):,.0f} | | ≥ 100,000 |",
        f"| rows formatted + written per second, 1 s per flush (steady state) | "
        f"{ext4['rows_per_s_with_fsync']:,.0f} | {fallback['rows_per_s_with_fsync']:,.0f} "
        "| ≥ 100,000 |",
        f"| bytes written per byte of CSV, /proc/self/io write_bytes | {ext4['io_ratio']:.3f} "
        f"| n/a (tmpfs has no block device) | ≤ 2.2 |",
        f"| bytes written per byte of CSV, counted by the store | {ext4['counted_ratio']:.3f} | "
        f"{fallback['counted_ratio']:.3f} | ≤ 2.2 |",
        f"| eviction time on the writer's path p50 / p99 / max, ms ({ext4['evictions']} / "
        f"{fallback['evictions']} evictions) | {ext4['evict_ms_p50']:.2f} / "
        f"{ext4['evict_ms_p99']:.2f} / {ext4['evict_ms_max']:.2f} | "
        f"{fallback['evict_ms_p50']:.2f} / {fallback['evict_ms_p99']:.2f} / "
        f"{fallback['evict_ms_max']:.2f} | p99 ≤ 10 |",
        f"| background aggregate rewrite p50 / max, s ({fallback['rebuilds']} rewrites) | none | "
        f"{fallback['rebuild_s_p50']:.2f} / {fallback['rebuild_s_max']:.2f} | |",
        f"| start-up (open + recovery + summaries; data not in the page cache), s | "
        f"{ext4['startup_s']:.3f} | "
        f"{fallback['startup_s']:.3f} | ≤ 2 |",
        f"| `recent()` over the whole window, 3000 points, median / max ms | "
        f"{ext4['recent_ms_p50']:.2f} / {ext4['recent_ms_max']:.2f} | "
        f"{fallback['recent_ms_p50']:.2f} / {fallback['recent_ms_max']:.2f} | ≤ 20 |",
        f"| process RSS at the end / peak, MB | {ext4['rss_mb']:.0f} / {ext4['hwm_mb']:.0f} | "
        f"{fallback['rss_mb']:.0f} / {fallback['hwm_mb']:.0f} | ≤ 100 |",
        "",
        f"Aggregate trims (collapses, rebuilds): ext4 {tuple(ext4['collapses_rebuilds'])}, "
        f"tmpfs {tuple(fallback['collapses_rebuilds'])}. The RSS is a store-only process "
        "(Python + numpy + the store with its summaries), not the whole service.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(json.dumps(child(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print(run(quick="--quick" in sys.argv))
