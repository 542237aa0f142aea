"""Vibration features of one window of the 800 Hz stream: RMS, peak, crest, velocity, spectrum."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wilo_backend.model import OUTPUT_RATE_HZ

Float64Array = npt.NDArray[np.float64]

CHANNELS = ("x", "y", "z", "magnitude")
PER_CHANNEL = ("rms_ms2", "peak_ms2", "crest", "vrms_mms", "dominant_hz")
# One feature row: every channel's features, then the overall velocity the zone is judged on.
COLUMNS = (*(f"{ch}_{name}" for ch in CHANNELS for name in PER_CHANNEL), "vrms_mms")
N_COLUMNS = len(COLUMNS)
VRMS_COLUMN = N_COLUMNS - 1


def column(channel: str, name: str) -> int:
    """Index of a channel's feature in a feature row."""
    return CHANNELS.index(channel) * len(PER_CHANNEL) + PER_CHANNEL.index(name)


@dataclass(frozen=True)
class WindowPlan:
    """Everything that depends only on the window length and the band, computed once."""

    samples: int
    rate_hz: float
    hann: Float64Array
    frequencies_hz: Float64Array
    # one-sided |X_k|² → mean-square per bin (Hann's power loss and the doubled half corrected)
    power_scale: Float64Array
    # mean-square acceleration per bin → mean-square velocity per bin, (1/(2πf))², 0 outside band
    velocity_weight: Float64Array
    band: npt.NDArray[np.bool_]
    # sqrt(power) → the peak amplitude a sine centred on that bin would have
    amplitude_factor: float


def make_plan(
    window_seconds: float,
    band_low_hz: float,
    band_high_hz: float,
    rate_hz: float = OUTPUT_RATE_HZ,
) -> WindowPlan:
    """Precompute the Hann window, bin frequencies and scalings for one window length."""
    samples = round(window_seconds * rate_hz)
    if samples < 16:
        raise ValueError(f"window of {window_seconds} s at {rate_hz} Hz has too few samples")
    nyquist_hz = rate_hz / 2
    if not 0 < band_low_hz < band_high_hz <= nyquist_hz:
        raise ValueError(
            f"velocity band {band_low_hz}–{band_high_hz} Hz must lie within 0–{nyquist_hz} Hz"
        )
    hann = np.hanning(samples + 1)[:-1]  # periodic Hann: exact for averaged spectra
    frequencies_hz: Float64Array = np.fft.rfftfreq(samples, 1.0 / rate_hz).astype(np.float64)
    doubled = np.full(frequencies_hz.shape, 2.0)
    doubled[0] = 1.0
    if samples % 2 == 0:
        doubled[-1] = 1.0
    sum_w2 = float(np.sum(hann * hann))
    power_scale = doubled / (samples * sum_w2)
    band = (frequencies_hz >= band_low_hz) & (frequencies_hz <= band_high_hz)
    velocity_weight = np.zeros_like(frequencies_hz)
    velocity_weight[band] = 1.0 / (2 * math.pi * frequencies_hz[band]) ** 2
    amplitude_factor = math.sqrt(2 * samples * sum_w2) / float(np.sum(hann))
    return WindowPlan(
        samples=samples,
        rate_hz=rate_hz,
        hann=hann,
        frequencies_hz=frequencies_hz,
        power_scale=power_scale,
        velocity_weight=velocity_weight,
        band=band,
        amplitude_factor=amplitude_factor,
    )


def channels_of(xyz: Float64Array) -> Float64Array:
    """(n, 3) acceleration → (4, n): x, y, z and the magnitude, each with its mean removed.

    The mean is gravity plus sensor offset; vibration analysis wants the AC part only.
    """
    out = np.empty((4, xyz.shape[0]))
    out[:3] = xyz.T
    np.sqrt(np.einsum("ij,ij->i", xyz, xyz), out=out[3])
    out -= out.mean(axis=1, keepdims=True)
    return out


def power_spectrum(channels: Float64Array, plan: WindowPlan) -> Float64Array:
    """(4, n) AC signals → (4, bins) one-sided Hann power spectrum, mean-square per bin (m/s²)²."""
    spectrum = np.fft.rfft(channels * plan.hann, axis=1)
    power: Float64Array = (spectrum.real**2 + spectrum.imag**2) * plan.power_scale
    return power


def dominant_frequency(power: Float64Array, plan: WindowPlan) -> Float64Array:
    """The strongest in-band frequency of each row of `power`, refined between bins.

    A Gaussian (log-parabolic) fit through the peak bin and its neighbours: for a Hann window it
    places a tone that falls between two bins to within a few hundredths of a bin.
    """
    band_index = np.flatnonzero(plan.band)
    peaks = band_index[np.argmax(power[:, band_index], axis=1)]
    resolution_hz = plan.rate_hz / plan.samples
    out = np.empty(power.shape[0])
    last = power.shape[1] - 1
    for row, k in enumerate(peaks):
        offset = 0.0
        if 0 < k < last:
            left, centre, right = np.log(power[row, k - 1 : k + 2] + 1e-30)
            denominator = left - 2 * centre + right
            if denominator < 0:
                offset = float(np.clip(0.5 * (left - right) / denominator, -0.5, 0.5))
        out[row] = (k + offset) * resolution_hz
    return out


def window_features(xyz: Float64Array, plan: WindowPlan) -> tuple[Float64Array, Float64Array]:
    """One window of (n, 3) acceleration → (feature row in COLUMNS order, (4, bins) power).

    Acceleration RMS and peak are of the AC signal in the time domain; velocity RMS is the
    in-band acceleration power divided by (2πf)² bin by bin (integration in the frequency
    domain), in mm/s. The overall velocity is the largest of the three axes, as ISO 20816-1
    judges a machine by its worst measurement direction.
    """
    if xyz.shape != (plan.samples, 3):
        raise ValueError(f"window must be ({plan.samples}, 3) samples, got {xyz.shape}")
    channels = channels_of(xyz)
    rms = np.sqrt(np.mean(channels * channels, axis=1))
    peak = np.max(np.abs(channels), axis=1)
    crest = np.divide(peak, rms, out=np.zeros_like(peak), where=rms > 0)
    power = power_spectrum(channels, plan)
    vrms_mms = 1000.0 * np.sqrt(power @ plan.velocity_weight)
    row = np.empty(N_COLUMNS)
    per_channel = row[: len(CHANNELS) * len(PER_CHANNEL)].reshape(len(CHANNELS), len(PER_CHANNEL))
    per_channel[:, 0] = rms
    per_channel[:, 1] = peak
    per_channel[:, 2] = crest
    per_channel[:, 3] = vrms_mms
    per_channel[:, 4] = dominant_frequency(power, plan)
    row[VRMS_COLUMN] = float(np.max(vrms_mms[:3]))
    return row, power


def amplitude_spectrum(power: Float64Array, plan: WindowPlan) -> Float64Array:
    """Mean-square per bin → peak amplitude (m/s²) a sine centred on that bin would show."""
    amplitude: Float64Array = np.sqrt(power) * plan.amplitude_factor
    return amplitude
