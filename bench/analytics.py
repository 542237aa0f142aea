"""Analytics bench: CPU of the feature maths at 800 Hz, and get_features over 30 days."""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from wilo_backend.analytics import Analytics
from wilo_backend.analytics.feature_store import FeatureStore
from wilo_backend.analytics.features import N_COLUMNS, VRMS_COLUMN
from wilo_backend.config import AnalyticsConfig
from wilo_backend.model import STANDARD_GRAVITY_MS2, SampleBatch

RATE_HZ = 800
START_S = 1_795_000_000
NS = 1_000_000_000


def pump_batches(seconds: int, batch_samples: int = 12) -> list[SampleBatch]:
    """The simulator's default signal (24.5 Hz + 2 harmonics + noise) in 15 ms batches."""
    rng = np.random.default_rng(3)
    total = seconds * RATE_HZ
    t_s = np.arange(total) / RATE_HZ
    xyz = rng.normal(0, 0.05, (total, 3))
    xyz[:, 2] += STANDARD_GRAVITY_MS2
    for k in (1, 2, 3):
        xyz[:, 0] += 1.5 / k * np.sin(2 * math.pi * 24.5 * k * t_s)
    t_ns = (START_S * NS + np.arange(total) * (NS // RATE_HZ)).astype(np.int64)
    return [
        SampleBatch(i, t_ns[i : i + batch_samples], xyz[i : i + batch_samples])
        for i in range(0, total, batch_samples)
    ]


def bench_cpu(seconds: int) -> list[str]:
    batches = pump_batches(seconds)
    with tempfile.TemporaryDirectory() as folder:
        analytics = Analytics(
            AnalyticsConfig(), Path(folder), fsync=True, clock=lambda: START_S + seconds
        )
        analytics.open()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for batch in batches:
            analytics.feed(batch)
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        analytics.close()
        stats = analytics.stats()
    return [
        f"- Feature computation at 800 Hz ({seconds} s of signal, 15 ms batches, 1 s windows, "
        f"fdatasync per window): **{100 * cpu_s / seconds:.2f} % of a core** in total "
        f"(target ≤ 5 %), of which the maths {100 * stats.compute_seconds / seconds:.2f} %; "
        f"{1e3 * cpu_s / stats.windows:.2f} ms CPU and {1e3 * wall_s / stats.windows:.2f} ms "
        f"wall per window; {stats.windows} windows.",
    ]


def bench_trend(days: int) -> list[str]:
    rng = np.random.default_rng(5)
    rows = rng.random((1024, N_COLUMNS))
    rows[:, VRMS_COLUMN] *= 3
    windows = days * 86400
    now = [float(START_S)]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "features"
        store = FeatureStore(root, retention_days=30, fsync=False, clock=lambda: now[0])
        store.open()
        fill0 = time.perf_counter()
        for i in range(windows):
            now[0] = START_S + i + 1
            store.append((START_S + i) * NS, int(rows[i % 1024, VRMS_COLUMN]), rows[i % 1024])
        fill_s = time.perf_counter() - fill0
        store.close()
        on_disk = store.status().bytes_on_disk
        open0, open_cpu0 = time.perf_counter(), time.process_time()
        reopened = FeatureStore(root, retention_days=30, fsync=False, clock=lambda: now[0])
        reopened.open()
        open_s, open_cpu_s = time.perf_counter() - open0, time.process_time() - open_cpu0
        lines = [
            f"- Trend store filled with {days} days of 1 s windows ({windows:,} rows, "
            f"{fill_s / windows * 1e6:.0f} µs per append without fsync): "
            f"{on_disk / days / 2**20:.1f} MiB of feature files per day; re-open (start-up: "
            f"minute roll-ups + the last hour from the day file's tail) {open_s * 1e3:.0f} ms "
            f"({open_cpu_s * 1e3:.0f} ms CPU; the service does it beside its own start-up).",
        ]
        for span_s, label, points in (
            (days * 86400, f"{days} days", 1000),
            (days * 86400, f"{days} days", 3000),
            (6 * 3600, "6 hours", 1000),
            (3600, "1 hour", 1000),
        ):
            times, cpu_times = [], []
            for _ in range(30):
                started, cpu_started = time.perf_counter(), time.thread_time()
                result = reopened.query(span_s, points)
                times.append(time.perf_counter() - started)
                cpu_times.append(time.thread_time() - cpu_started)
            times.sort()
            lines.append(
                f"- `get_features` over {label}, max_points {points} → {len(result)} points: "
                f"p50 {statistics.median(times) * 1e3:.1f} ms, "
                f"p99 {times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3:.1f} ms, "
                f"CPU p50 {statistics.median(cpu_times) * 1e3:.1f} ms (target ≤ 50 ms for 30 days)."
            )
    return lines


def run(quick: bool) -> str:
    cpu_seconds = 60 if quick else 600
    days = 3 if quick else 30
    load_1m = os.getloadavg()[0]
    lines = ["## analytics", "", f"Load average at the start: {load_1m:.1f} (2 cores).", ""]
    lines += bench_cpu(cpu_seconds)
    lines += bench_trend(days)
    if quick:
        lines.append(
            "- Quick run: 60 s of signal and 3 days of trend; `make bench` uses 600 s / 30 days."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick=True))
