"""Synthetic 800 Hz sample batches of known tones, for the analytics tests."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from wilo_backend.model import STANDARD_GRAVITY_MS2, SampleBatch

RATE_HZ = 800
START_NS = 1_795_000_000 * 10**9  # 2026-11-18T11:06:40Z


def tone_batches(
    tones: Sequence[tuple[float, float]],
    seconds: float,
    *,
    axis: int = 0,
    noise_ms2: float = 0.0,
    batch_samples: int = 137,
    start_ns: int = START_NS,
    first_index: int = 0,
    seed: int = 7,
) -> Iterator[SampleBatch]:
    """Gravity on Z plus sines (frequency Hz, amplitude m/s²) on `axis`, in odd-sized batches."""
    rng = np.random.default_rng(seed)
    total = round(seconds * RATE_HZ)
    period_ns = 10**9 // RATE_HZ
    for start in range(0, total, batch_samples):
        index = np.arange(start, min(start + batch_samples, total))
        t_s = index / RATE_HZ
        xyz = (
            rng.normal(0.0, noise_ms2, (index.shape[0], 3))
            if noise_ms2
            else np.zeros((index.shape[0], 3))
        )
        xyz[:, 2] += STANDARD_GRAVITY_MS2
        for frequency_hz, amplitude_ms2 in tones:
            xyz[:, axis] += amplitude_ms2 * np.sin(2 * math.pi * frequency_hz * t_s + 0.4)
        yield SampleBatch(
            first_index=first_index + start,
            t_ns=(start_ns + index * period_ns).astype(np.int64),
            xyz=xyz,
        )


def velocity_rms_mms(frequency_hz: float, amplitude_ms2: float) -> float:
    """Analytic velocity RMS of a sine acceleration: A / (2πf) / √2, in mm/s."""
    return 1000.0 * amplitude_ms2 / (2 * math.pi * frequency_hz) / math.sqrt(2)
