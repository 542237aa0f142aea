"""A parent process for the sampler tests: reads batches for a while, then reports as JSON.

Usage: parent_script.py SECONDS BUFFER_SECONDS. Prints `pid <child pid>` once samples flow, then
reads for SECONDS more and prints one JSON line with what it got.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from wilo_backend.config import SamplerConfig, SensorConfig
from wilo_backend.sampler.process import Sampler


def main() -> None:
    seconds, buffer_seconds = float(sys.argv[1]), float(sys.argv[2])
    sampler = Sampler(
        SensorConfig(driver="sim"),
        # realtime where permitted, as in production: a busy test machine must not starve it
        SamplerConfig(cpu="none", buffer_seconds=buffer_seconds),
    )
    sampler.start()
    firsts: list[int] = []
    lengths: list[int] = []
    stamps: list[np.ndarray] = []  # type: ignore[type-arg]
    announced = False
    end = time.monotonic() + 60.0  # until the first batch, then `seconds` more
    while time.monotonic() < end:
        for batch in sampler.read(0.2):
            firsts.append(batch.first_index)
            lengths.append(len(batch))
            stamps.append(batch.t_ns)
            if not announced:
                print(f"pid {sampler.pid}", flush=True)
                announced = True
                end = time.monotonic() + seconds
    stats = sampler.stats()
    sampler.stop()
    gaps, expected = 0, firsts[0]
    for first, length in zip(firsts, lengths, strict=True):
        gaps += first - expected
        expected = first + length
    t = np.concatenate(stamps)
    report = {
        "delivered": int(sum(lengths)),
        "first": firsts[0],
        "gaps": gaps,
        "max_dt_ms": float(np.diff(t).max() / 1e6),
        "lost_handoff": stats.lost_handoff,
        "lost": stats.lost,
        "samples": stats.samples,
        "alive_before_stop": stats.alive,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
