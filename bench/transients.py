"""Memory a single read request allocates for a moment (tracemalloc peak), the figures behind the
soak's RSS peaks: `python -m bench.transients`.

A store is fed 400 s of 800 Hz samples (so the 300 s raw ring is full and has wrapped) in 60 s
segments; then each request shape the soak's readers send is timed once for its peak.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import psutil

from wilo_backend.config import StorageConfig
from wilo_backend.model import SampleBatch
from wilo_backend.store.store import Store
from wilo_backend.store.summary import Summaries

T0_NS = 1_795_792_920_000_000_000
PERIOD_NS = 1_250_000
SECONDS = 400


def _peak_mib(call: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    rings = Summaries(window_seconds=7200, raw_seconds=300)
    print(
        "summary rings for 2 h + 300 s raw, resident at creation: "
        f"{(process.memory_info().rss - before) / 2**20:.1f} MiB"
    )
    del rings
    fed_s = [0.0]  # the store's monotonic clock: seconds of samples fed so far
    with tempfile.TemporaryDirectory(prefix="wilo-transients-") as tmp:
        config = StorageConfig(data_dir=tmp, fsync=False, min_free_mb=0, raw_memory_seconds=300)
        store = Store(config, monotonic=lambda: fed_s[0])
        store.open()
        rng = np.random.default_rng(1)
        for second in range(SECONDS):
            index = second * 800
            t = T0_NS + (index + np.arange(800, dtype=np.int64)) * PERIOD_NS
            store.append(SampleBatch(index, t, rng.normal(0.0, 2.0, (800, 3))))
            fed_s[0] += 1.0
            store.tick()
        store.close_segment()
        full = store.file_list()[0]
        size = (store.readings_dir / full).stat().st_size
        cases: list[tuple[str, Callable[[], object]]] = [
            ("get_recent_data 60 s → 3000 points", lambda: store.recent(60, 3000)),
            ("get_recent_data 5 s → 100,000 points", lambda: store.recent(5, 100_000)),
            ("get_recent_data 300 s → 3000 points", lambda: store.recent(300, 3000)),
            ("get_recent_data whole window → 3000 points", lambda: store.recent(7200, 3000)),
            (
                f"get_csv_data, one 60 s segment ({size / 1e6:.1f} MB) → 1000 points",
                lambda: store.read_csv(full, 1000),
            ),
        ]
        print(f"store fed {SECONDS} s at 800 Hz; tracemalloc peak of one call (MiB):")
        for name, call in cases:
            started = time.perf_counter()
            peak = _peak_mib(call)
            print(
                f"  {name}: {peak:.1f} MiB ({(time.perf_counter() - started) * 1e3:.0f} ms traced)"
            )
        store.close()


if __name__ == "__main__":
    main()
