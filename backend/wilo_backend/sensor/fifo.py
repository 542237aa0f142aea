"""One FIFO poll at a time: count, whole-sample reads, overflow and misalignment recovery."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wilo_backend.sensor import registers as r
from wilo_backend.sensor.clock import Clock
from wilo_backend.sensor.mpu6050 import Mpu6050, SensorError
from wilo_backend.sensor.timebase import Timebase

# read at most this many samples per transaction (the FIFO holds 170)
_MAX_SAMPLES_PER_READ = r.FIFO_SIZE_BYTES // r.ACCEL_SAMPLE_BYTES
# polls in a row that fail on the bus before the device counts as gone...
FAILED_POLLS_BEFORE_LOST = 8
# ...and only if no transfer at all answered for this long: an error burst (30 % of transfers
# failing) gives runs of failed polls, a device that is gone gives nothing but failures
SILENT_NS = 500_000_000
# no sample for this long while the FIFO should fill: the chip was power-cycled or stuck
STALL_NS = 300_000_000


@dataclass(slots=True)
class FifoPoll:
    """What one poll got: consecutive samples from input index `first_index` on."""

    first_index: int
    samples: npt.NDArray[np.int16]  # (n, 3) LSB


@dataclass(slots=True)
class FifoCounters:
    """Input-side counters (sensor samples, not output samples)."""

    samples: int = 0
    lost: int = 0
    resets: int = 0
    overflows: int = 0
    misaligned: int = 0
    i2c_errors: int = 0


class FifoReader:
    """Polls one configured MPU-6050's FIFO and numbers its samples since the sensor started.

    Each poll reads FIFO_COUNT (one 2-byte read, timed for the timebase), then whole samples only.
    Overflow (INT_STATUS or a full FIFO) or a count that stays off a 6-byte boundary means the
    FIFO's framing can no longer be trusted: it is reset and the samples the sensor produced but
    we never got are estimated from the timebase and counted as lost; numbering jumps by as much.
    A failed data read is handled the same way (how much it consumed is unknown).

    A reset that fails part-way may leave the FIFO stopped (the reset write also clears
    FIFO_EN), so it stays pending and is redone on every poll until USER_CTRL reads back with the
    FIFO enabled; only then is the loss counted, up to the moment the FIFO filled again.
    """

    def __init__(self, driver: Mpu6050, clock: Clock, timebase: Timebase) -> None:
        self.driver = driver
        self.clock = clock
        self.timebase = timebase
        self.next_index = 0
        self.counters = FifoCounters()
        self._failed_polls = 0
        self._last_data_ns = clock.now_ns()
        self._answered_ns = self._last_data_ns  # the last time any transfer went through
        self._fifo_had_data = False
        self._reset_pending = False
        self._held = 0  # samples the FIFO held when the pending reset was called for
        # the driver reset the FIFO just before: sample 0 is the first one after now
        self._reset_ns, self._reset_index = self._last_data_ns, 0

    def poll(self) -> FifoPoll | None:
        """One poll; None when nothing new. Raises SensorError when the device seems gone."""
        try:
            result = self._poll()
        except OSError as exc:
            self.counters.i2c_errors += 1
            self._failed_polls += 1
            silent_ns = self.clock.now_ns() - self._answered_ns
            if self._failed_polls >= FAILED_POLLS_BEFORE_LOST and silent_ns > SILENT_NS:
                raise SensorError(
                    f"{self._failed_polls} FIFO polls in a row failed, no answer for "
                    f"{silent_ns / 1e6:.0f} ms: {exc}"
                ) from exc
            return None
        self._failed_polls = 0
        now = self.clock.now_ns()
        if self._fifo_had_data:
            self._last_data_ns = now
        elif now - self._last_data_ns > STALL_NS:
            raise SensorError("FIFO stopped filling (sensor reset or asleep)")
        return result

    def _poll(self) -> FifoPoll | None:
        if self._reset_pending:
            self._fifo_had_data = False  # a FIFO that never comes back on ends as a stall
            self._finish_reset()
            return None
        overflowed = self.driver.fifo_overflowed()
        t_before = self.clock.now_ns()
        self._answered_ns = t_before
        count = self.driver.fifo_count()
        t_after = self.clock.now_ns()
        self._fifo_had_data = overflowed or count > 0
        if not overflowed and count < r.FIFO_SIZE_BYTES and count % r.ACCEL_SAMPLE_BYTES:
            # the chip may be mid-way through writing a sample: look once more
            t_before = self.clock.now_ns()
            count = self.driver.fifo_count()
            t_after = self.clock.now_ns()
            if count % r.ACCEL_SAMPLE_BYTES:
                self.counters.misaligned += 1
                self._recover(count)
                return None
        if overflowed or count >= r.FIFO_SIZE_BYTES:
            self.counters.overflows += 1
            self._recover(count)
            return None
        available = count // r.ACCEL_SAMPLE_BYTES
        self.timebase.add(
            (t_before + t_after) // 2, self.next_index + available, t_after - t_before
        )
        if available == 0:
            return None
        parts: list[npt.NDArray[np.int16]] = []
        remaining = available
        try:
            while remaining:
                take = min(remaining, _MAX_SAMPLES_PER_READ)
                parts.append(self.driver.read_fifo(take))
                remaining -= take
        except OSError:
            # unknown how many bytes the failed transfer consumed: framing is lost
            self.counters.i2c_errors += 1
            self._recover(count)
            return None
        first = self.next_index
        self.next_index += available
        self.counters.samples += available
        samples = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return FifoPoll(first, samples)

    def _recover(self, count: int) -> None:
        """Reset the FIFO (now, or on the next polls if a transfer of the reset fails)."""
        self._reset_pending = True
        self._held = count // r.ACCEL_SAMPLE_BYTES
        self._finish_reset()

    def _finish_reset(self) -> None:
        """Redo the reset; once the FIFO reads back enabled, jump the numbering past the samples
        the sensor produced that we never got (the FIFO's content and any time it was off)."""
        self.driver.reset_fifo()
        reset_ns = self.clock.now_ns()
        self._answered_ns = reset_ns
        if not self.driver.fifo_enabled():
            return
        self._reset_pending = False
        self._last_data_ns = reset_ns  # an empty FIFO is expected right after a reset
        if self.timebase.ready:
            produced = round(self.timebase.count_at(reset_ns))
        else:
            # no poll has anchored the timebase yet: nominal rate since the last reset
            elapsed_s = (reset_ns - self._reset_ns) / 1e9
            produced = self._reset_index + round(elapsed_s * self.timebase.nominal_rate_hz)
        produced = max(produced, self.next_index + self._held)
        self.counters.lost += produced - self.next_index
        self.counters.resets += 1
        self.next_index = produced
        self._reset_ns, self._reset_index = reset_ns, produced
