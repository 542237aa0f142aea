"""Store test helpers: a fake monotonic clock, an 800 Hz sample feeder, file comparisons."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from clocks import FakeClock
from wilo_backend.config import StorageConfig
from wilo_backend.model import SampleBatch
from wilo_backend.store.csvformat import HEADER
from wilo_backend.store.layout import AGGREGATE_NAME
from wilo_backend.store.store import Store

PERIOD_NS = 1_250_000
# 2026-11-27T15:22:00Z
T0_NS = 1_795_792_920_000_000_000


class Feeder:
    """Feeds a store 800 Hz batches and advances the fake monotonic clock with them."""

    def __init__(self, store: Store, clock: FakeClock, t0_ns: int = T0_NS) -> None:
        self.store = store
        self.clock = clock
        self.t_ns = t0_ns
        self.index = 0
        self.rng = np.random.default_rng(7)

    def batch(self, n: int) -> SampleBatch:
        t = self.t_ns + np.arange(n, dtype=np.int64) * PERIOD_NS
        xyz = self.rng.normal(0.0, 2.0, (n, 3))
        xyz[:, 2] += 9.80665
        batch = SampleBatch(self.index, t, xyz)
        self.t_ns += n * PERIOD_NS
        self.index += n
        return batch

    def feed(self, seconds: float, batch_samples: int = 40) -> None:
        """`seconds` of samples in batches of 50 ms, as the sampler hands them over."""
        total = round(seconds * 800)
        while total > 0:
            n = min(batch_samples, total)
            self.store.append(self.batch(n))
            self.clock.now += n / 800
            total -= n

    def step_clock(self, seconds: float) -> None:
        """A wall-clock step: sample times jump, sample indices do not."""
        self.t_ns += round(seconds * 1e9)


def make_config(data_dir: Path, **overrides: Any) -> StorageConfig:
    base = StorageConfig(data_dir=str(data_dir), fsync=False, min_free_mb=0)
    return dataclasses.replace(base, **overrides)


def segment_data(store: Store) -> bytes:
    """header + the data of every retained segment, in the store's order (oldest first)."""
    assert store.wait_idle(), "background aggregate work did not finish"
    parts = [HEADER]
    for relative in reversed(store.file_list()):
        parts.append((store.readings_dir / relative).read_bytes()[len(HEADER) :])
    return b"".join(parts)


def aggregate_bytes(store: Store) -> bytes:
    return (store.readings_dir / AGGREGATE_NAME).read_bytes()


def files_on_disk(readings_dir: Path) -> list[str]:
    return sorted(
        str(p.relative_to(readings_dir)) for p in readings_dir.rglob("*.csv") if p.name[0].isdigit()
    )
