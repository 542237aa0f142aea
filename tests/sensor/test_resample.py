"""The streaming 1 kHz → 800 Hz resampler: amplitude, spurs, sample count, gaps."""

from __future__ import annotations

import numpy as np
import pytest
from bench.spectrum import spur_db

from wilo_backend.sensor.resample import Resampler


def _run(rate_in: float, seconds: float, tone_hz: float = 100.0, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_in)
    t = np.arange(n) / rate_in
    x = np.zeros((n, 3))
    x[:, 0] = np.sin(2 * np.pi * tone_hz * t)
    x[:, 2] = 9.8
    resampler = Resampler(1000.0, 800.0)
    firsts, positions, outputs = [], [], []
    i = 0
    while i < n:
        take = int(rng.integers(1, 40))  # batches of any size
        first, pos, out = resampler.process(i, x[i : i + take], rate_in)
        firsts.append(first)
        positions.append(pos)
        outputs.append(out)
        i += take
    return firsts, np.concatenate(positions), np.concatenate(outputs)


@pytest.mark.parametrize("error", [-0.01, 0.0, 0.01])
def test_100hz_sine_keeps_amplitude_and_has_no_spurs(error: float) -> None:
    rate_in = 1000.0 * (1 + error)
    _, positions, out = _run(rate_in, 30.0)
    steady = slice(100, None)
    expected = np.sin(2 * np.pi * 100.0 * positions / rate_in)
    amplitude = np.sqrt(2 * np.mean(out[steady, 0] ** 2))
    assert amplitude == pytest.approx(1.0, rel=1e-3)
    assert np.max(np.abs(out[steady, 0] - expected[steady])) < 1e-3
    assert np.allclose(out[steady, 2], 9.8, atol=1e-9)  # DC passes exactly
    # output is uniform 800 Hz in host time: judge its spectrum at 800 Hz
    assert spur_db(out[1000:25_000, 0], 800.0, 100.0) <= -60.0


@pytest.mark.parametrize("error", [-0.01, 0.0, 0.01])
def test_output_is_800_per_second_of_host_time(error: float) -> None:
    rate_in = 1000.0 * (1 + error)
    _firsts, positions, out = _run(rate_in, 20.0)
    in_seconds = (positions[-1] - positions[0]) / rate_in
    assert (out.shape[0] - 1) / in_seconds == pytest.approx(800.0, abs=1e-6)
    assert np.allclose(np.diff(positions), rate_in / 800.0)


def test_5_to_4_positions_at_nominal_rate() -> None:
    resampler = Resampler()
    first, positions, _out = resampler.process(0, np.zeros((100, 3)), 1000.0)
    assert first == 0
    assert np.allclose(np.diff(positions), 1.25)
    assert positions[-1] + resampler.delay_inputs <= 99  # never reads past the input


def test_gap_in_input_skips_outputs_and_numbering_shows_it() -> None:
    resampler = Resampler()
    ones = np.ones((200, 3))
    first_a, _, out_a = resampler.process(0, ones, 1000.0)
    first_b, pos_b, out_b = resampler.process(400, ones, 1000.0)  # 200 inputs lost
    assert first_b > first_a + out_a.shape[0]
    assert pos_b[0] >= 400 + resampler.half - 1  # no output mixes data across the gap
    assert np.allclose(out_b, 1.0)
    skipped = first_b - (first_a + out_a.shape[0])
    assert 160 <= skipped <= 160 + resampler.taps  # 200 inputs = 160 outputs, plus refill


def test_odd_taps_refused() -> None:
    with pytest.raises(ValueError, match="taps must be even"):
        Resampler(taps=31)


def test_spur_figure_sees_a_spur() -> None:
    t = np.arange(8000) / 800.0
    clean = np.sin(2 * np.pi * 100.0 * t)
    assert spur_db(clean, 800.0, 100.0) < -90.0
    dirty = clean + 0.01 * np.sin(2 * np.pi * 230.0 * t)  # a line at −40 dB
    assert spur_db(dirty, 800.0, 100.0) == pytest.approx(-40.0, abs=0.5)


def _alias_level_db(tone_hz: float, alias_hz: float, error: float) -> float:
    """Level (dB re the input tone) at `alias_hz` in the 800 Hz output of a unit tone fed to
    the resampler as the 1 kHz stream carries it."""
    rate_in = 1000.0 * (1 + error)
    n = 30_000
    x = np.zeros((n, 3))
    x[:, 0] = np.sin(2 * np.pi * tone_hz * np.arange(n) / rate_in + 0.7)
    resampler = Resampler(1000.0, 800.0)
    outputs = [resampler.process(i, x[i : i + 15], rate_in)[2] for i in range(0, n, 15)]
    y = np.concatenate(outputs)[800 : 800 + 16_000, 0]
    window = np.hanning(y.shape[0])
    spectrum = np.abs(np.fft.rfft(y * window)) / (window.sum() / 2)
    bin_hz = 800.0 / y.shape[0]
    k = round(alias_hz / bin_hz)
    return float(20 * np.log10(spectrum[k - 3 : k + 4].max() + 1e-300))


@pytest.mark.parametrize("error", [-0.01, 0.0, 0.01])
@pytest.mark.parametrize(
    ("tone_hz", "alias_hz"),
    [
        (600.0, 200.0),  # a 600 Hz tone: the chip's 1 kHz registers carry it at 400 Hz
        (450.0, 350.0),  # above the output's Nyquist: folds to 800 - f unless filtered out
        (480.0, 320.0),
    ],
)
def test_what_lies_above_400_hz_does_not_fold_into_the_output(
    tone_hz: float, alias_hz: float, error: float
) -> None:
    """The anti-alias cutoff (350 Hz) keeps the folded tones below -60 dB; at 400 or 450 Hz
    they come through at -25 to -5 dB."""
    assert _alias_level_db(tone_hz, alias_hz, error) < -60.0
