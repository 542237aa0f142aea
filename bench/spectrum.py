"""Signal-quality figure of the acquisition chain (bench and tests, not shipped): the highest
spurious line beside a tone."""

from __future__ import annotations

import numpy as np

from wilo_backend.model import Float64Array


def spur_db(signal: Float64Array, rate_hz: float, tone_hz: float, guard_hz: float = 2.0) -> float:
    """Highest spectral line outside ±`guard_hz` of the tone (and DC), dB relative to the tone.

    A 4-term Blackman-Harris window (sidelobes −92 dB) keeps the tone's own leakage out of the
    figure, so what remains is what the chain added: images, aliases, timing spurs, quantisation.
    """
    n = signal.shape[0]
    k = np.arange(n)
    window = (
        0.35875
        - 0.48829 * np.cos(2 * np.pi * k / n)
        + 0.14128 * np.cos(4 * np.pi * k / n)
        - 0.01168 * np.cos(6 * np.pi * k / n)
    )
    spectrum = np.abs(np.fft.rfft((signal - signal.mean()) * window))
    freqs = np.fft.rfftfreq(n, 1.0 / rate_hz)
    near = np.abs(freqs - tone_hz) <= guard_hz
    tone = spectrum[near].max()
    far = ~near & (freqs > guard_hz)
    return float(20.0 * np.log10(spectrum[far].max() / tone))
