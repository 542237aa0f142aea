"""Streaming polyphase resampler: the 1 kHz FIFO stream to uniform 800 Hz, ratio trimmed live."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from wilo_backend.model import OUTPUT_RATE_HZ

Float64Array = npt.NDArray[np.float64]


def design_filter(taps: int, phases: int, cutoff: float, beta: float) -> Float64Array:
    """A Kaiser-windowed sinc as a polyphase table, `phases + 1` rows of `taps` coefficients.

    Row p holds the weights of the input samples at offsets `taps/2 - 1 … -taps/2` relative to an
    output that sits p/phases of the way past an input sample; rows in between are interpolated
    linearly, so any fractional position (not just the 4 of a fixed 5:4 ratio) is served and the
    ratio can follow the sensor's clock. `cutoff` is in cycles per input sample. Every row sums to 1
    (unity gain at DC whatever the phase).
    """
    half = taps // 2
    offsets = np.arange(-half + 1, half + 1, dtype=np.float64)  # input sample m relative to floor
    fractions = np.arange(phases + 1, dtype=np.float64) / phases
    t = fractions[:, None] - offsets[None, :]  # distance from output to each input sample
    window = np.kaiser(2 * half * phases + 1, beta)
    # evaluate the continuous window at t: t ∈ (-half, half] maps onto the sampled window
    window_at = np.interp(t, np.linspace(-half, half, window.shape[0]), window)
    table = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * window_at
    table /= table.sum(axis=1, keepdims=True)
    return np.ascontiguousarray(table)


class Resampler:
    """Resamples (n, 3) batches from `in_rate_hz` to `out_rate_hz` across batch boundaries.

    `process(first_index, samples, in_rate_hz)` takes consecutive input samples (numbered since
    start) and the input rate measured in host time; each output advances `in_rate / out_rate`
    input samples, so the output is `out_rate_hz` per host second whatever the sensor clock does.
    Output j sits at input position `positions[j]` (fractional input index) for timestamping.
    A jump in `first_index` (input lost) restarts the filter history; the outputs that could not
    be computed are skipped and show as a jump in output numbering.
    """

    def __init__(
        self,
        in_rate_hz: float = 1000.0,
        out_rate_hz: float = OUTPUT_RATE_HZ,
        taps: int = 32,
        phases: int = 256,
        cutoff_hz: float = 350.0,
        beta: float = 9.0,
    ) -> None:
        if taps % 2:
            raise ValueError(f"taps must be even, got {taps}")
        self.out_rate_hz = out_rate_hz
        self.taps = taps
        self.half = taps // 2
        self.phases = phases
        self.table = design_filter(taps, phases, cutoff_hz / in_rate_hz, beta)
        self._history = np.zeros((0, 3))
        self._history_start = 0  # input index of _history[0]
        self._next_in = 0  # input index expected next
        self._position = float(self.half - 1)  # input position of the next output
        self.next_output = 0  # number of the next output sample
        self._started = False

    @property
    def delay_inputs(self) -> int:
        """How many input samples an output waits for beyond its own position."""
        return self.half

    def process(
        self, first_index: int, samples: Float64Array, in_rate_hz: float
    ) -> tuple[int, Float64Array, Float64Array]:
        """(number of the first output, input positions (m,), outputs (m, 3))."""
        step = in_rate_hz / self.out_rate_hz
        if not self._started or first_index != self._next_in:
            self._restart(first_index, step)
        self._next_in = first_index + samples.shape[0]
        data = np.concatenate((self._history, samples)) if self._history.size else samples
        last_index = self._history_start + data.shape[0] - 1
        # an output at position p needs inputs up to floor(p) + half
        room = last_index - self.half - self._position
        count = math.floor(room / step) + 1 if room >= 0 else 0
        first_out = self.next_output
        positions = self._position + step * np.arange(count, dtype=np.float64)
        outputs = self._apply(data, positions)
        self._position += step * count
        self.next_output += count
        keep_from = math.floor(self._position) - self.half + 1 - self._history_start
        self._history = data[max(keep_from, 0) :].copy()
        self._history_start += max(keep_from, 0)
        return first_out, positions, outputs

    def _restart(self, first_index: int, step: float) -> None:
        earliest = first_index + self.half - 1  # first position with a full filter history
        if self._started and earliest > self._position:
            skipped = math.ceil((earliest - self._position) / step)
            self._position += skipped * step
            self.next_output += skipped
        elif not self._started:
            self._position = float(earliest)
        self._started = True
        self._history = np.zeros((0, 3))
        self._history_start = first_index

    def _apply(self, data: Float64Array, positions: Float64Array) -> Float64Array:
        if positions.shape[0] == 0:
            return np.zeros((0, 3))
        base = np.floor(positions)
        phase = (positions - base) * self.phases
        row = np.minimum(phase.astype(np.int64), self.phases - 1)
        mu = (phase - row)[:, None]
        weights = (1.0 - mu) * self.table[row] + mu * self.table[row + 1]
        start = base.astype(np.int64) - self.half + 1 - self._history_start
        gather = start[:, None] + np.arange(self.taps)[None, :]
        out: Float64Array = np.einsum("mk,mkc->mc", weights, data[gather])
        return out
