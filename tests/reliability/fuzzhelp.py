"""A real Store with a few segments (and traps outside it) for the fuzz tests, built once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from wilo_backend.config import StorageConfig
from wilo_backend.model import SampleBatch, SamplerStats
from wilo_backend.store.store import Store

T0_NS = 1_795_792_920_000_000_000  # 2026-11-27T15:22:00Z
PERIOD_NS = 1_250_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Control:
    """A real, minimal ServiceControl."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.running, self.paused = True, False

    def start_collection(self) -> None:
        self.running, self.paused = True, False

    def stop_collection(self) -> None:
        self.running = False

    def pause_collection(self) -> None:
        self.paused = True

    def resume_collection(self) -> None:
        self.paused = False

    def status_data(self) -> dict[str, Any]:
        status = self.store.status()
        return {
            "connected": True,
            "running": self.running,
            "paused": self.paused,
            "sampling_rate": 800.0,
            "total_samples": status.rows_written,
            "csv_files": status.file_count,
            "latest_file": status.latest_file,
        }

    def collection_state(self) -> tuple[bool, bool]:
        return self.running, self.paused

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    def sampler_stats(self) -> SamplerStats:
        return SamplerStats()


def build_store(root: Path, seconds: int = 4) -> Store:
    """Segments of 1 s in root/data; a secret file, a symlinked segment and folder outside it."""
    data = root / "data"
    clock = Clock()
    store = Store(
        StorageConfig(data_dir=str(data), segment_seconds=1, fsync=False, min_free_mb=0),
        monotonic=clock,
    )
    store.open()
    rng = np.random.default_rng(3)
    for k in range(seconds * 20):
        t = T0_NS + (k * 40 + np.arange(40, dtype=np.int64)) * PERIOD_NS
        xyz = rng.normal(0.0, 1.0, (40, 3))
        store.append(SampleBatch(k * 40, t, xyz))
        clock.now += 0.05
    store.close_segment()
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("timestamp,x,y,z,acceleration\nSECRET\n")
    (outside / "101010.csv").write_text("timestamp,x,y,z,acceleration\nSECRET\n")
    day = data / "readings" / "2026" / "11" / "Week_4" / "27"
    os.symlink(outside / "secret.csv", day / "101010.csv")
    os.symlink(outside, data / "readings" / "2026" / "11" / "Week_4" / "28")
    return store
