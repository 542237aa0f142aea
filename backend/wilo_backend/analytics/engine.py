"""Analytics: cuts the sample stream into windows, computes features, tracks the zone, stores rows.

`feed` runs in the service's pump thread; `features`, `spectrum`, `latest`, `zone`, `stats` and
`metrics_text` may be called from any thread (the event loop) at the same time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wilo_backend.analytics.feature_store import FeatureStore, FeatureStoreStatus
from wilo_backend.analytics.features import (
    CHANNELS,
    COLUMNS,
    PER_CHANNEL,
    VRMS_COLUMN,
    amplitude_spectrum,
    column,
    dominant_frequency,
    make_plan,
    window_features,
)
from wilo_backend.analytics.zones import MEANING, NO_ZONE, ZoneLimits, classify, zone_name
from wilo_backend.config import AnalyticsConfig
from wilo_backend.model import OUTPUT_RATE_HZ, SampleBatch
from wilo_backend.timestamps import iso_z

log = logging.getLogger("wilo_backend.analytics")

# Window spectra kept for get_spectrum averaging (float32: 300 × 4 × 401 × 4 B ≈ 1.9 MB).
SPECTRUM_HISTORY_WINDOWS = 300
# the newest features count as stale after this long without a new window (at least 5 windows)
STALE_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class ZoneChange:
    """A move between severity zones; handed to on_zone_change (in the pump thread)."""

    previous: str
    zone: str
    vrms_mms: float
    limit_mms: float
    t_ns: int

    @property
    def message(self) -> str:
        direction = "rose" if self.zone > self.previous else "fell"
        return (
            f"vibration zone {self.previous} → {self.zone}: velocity RMS {direction} to "
            f"{self.vrms_mms:.2f} mm/s (limit {self.limit_mms:g} mm/s; "
            f"zone {self.zone}: {MEANING[self.zone]})"
        )

    def as_message(self) -> dict[str, Any]:
        """The `alert` push: {"type":"alert","kind":"zone_change",...}."""
        return {
            "type": "alert",
            "kind": "zone_change",
            "previous": self.previous,
            "zone": self.zone,
            "vrms_mms": round(self.vrms_mms, 4),
            "limit_mms": self.limit_mms,
            "timestamp": iso_z(self.t_ns),
            "message": self.message,
        }


@dataclass(frozen=True)
class AnalyticsStats:
    """Counters for status and /metrics."""

    windows: int
    samples: int
    gaps: int
    samples_discarded: int
    zone: str
    zone_changes: int
    compute_seconds: float
    store: FeatureStoreStatus


class Analytics:
    """Vibration features of the live stream, their zone, their files and their trends."""

    def __init__(
        self,
        config: AnalyticsConfig,
        data_dir: Path,
        *,
        timezone: str = "UTC",
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
        on_zone_change: Callable[[ZoneChange], None] | None = None,
        rate_hz: float = OUTPUT_RATE_HZ,
    ) -> None:
        self.config = config
        self.plan = make_plan(
            config.window_seconds, config.band_low_hz, config.band_high_hz, rate_hz
        )
        self.limits = ZoneLimits(
            config.zone_ab_mms, config.zone_bc_mms, config.zone_cd_mms, config.zone_hysteresis
        )
        self.store = FeatureStore(
            Path(data_dir) / "features",
            retention_days=config.retention_days,
            timezone=zoneinfo.ZoneInfo(timezone),
            fsync=fsync,
            clock=clock,
        )
        self.on_zone_change = on_zone_change
        self._clock = clock
        # the newest features are stale (collection stopped or paused, sensor lost) once no
        # window has ended for this long: their gauges leave /metrics instead of freezing
        self.stale_after_seconds = max(STALE_AFTER_SECONDS, 5 * config.window_seconds)
        self._latest_end_s = 0.0
        self._buffer = np.empty((self.plan.samples, 3))
        self._filled = 0
        self._window_t_ns = 0
        self._next_index: int | None = None
        self._lock = threading.Lock()
        self._opened = threading.Event()
        self._samples_before_open = 0
        bins = self.plan.frequencies_hz.shape[0]
        self._spectra = np.zeros((SPECTRUM_HISTORY_WINDOWS, len(CHANNELS), bins), np.float32)
        self._spectra.fill(0.0)  # resident now, not creeping up over 300 windows (see PointRing)
        self._spectra_count = 0
        self._latest: dict[str, Any] | None = None
        self._zone = NO_ZONE
        self._windows = 0
        self._samples = 0
        self._gaps = 0
        self._samples_discarded = 0
        self._zone_changes = 0
        self._compute_seconds = 0.0

    def open(self) -> None:
        """Load the stored trends (blocking: 30 days take ~0.4 s of CPU here, so the service
        runs it beside its start-up); `feed` ignores samples until it has finished."""
        try:
            self.store.open()
        except Exception:  # a bug in loading history must not cost the live analysis
            log.exception("loading the feature history failed; trends start empty")
        finally:
            self._opened.set()

    def close(self) -> None:
        """Write the pending minute roll-up and close the files."""
        self.store.close()

    # --- the stream -----------------------------------------------------------------------

    def feed(self, batch: SampleBatch) -> None:
        """Take consecutive samples; each completed window is analysed and stored.

        A jump in sample index (samples the sampler lost) drops the partial window: a window
        with a hole would put a false step into its spectrum.
        """
        n = len(batch)
        if n == 0:
            return
        if not self._opened.is_set():
            self._samples_before_open += n  # history still loading: rows would land out of order
            return
        if self._next_index is not None and batch.first_index != self._next_index:
            self._gaps += 1
            self._samples_discarded += self._filled
            self._filled = 0
        self._next_index = batch.first_index + n
        self._samples += n
        size = self.plan.samples
        position = 0
        while position < n:
            take = min(size - self._filled, n - position)
            if self._filled == 0:
                self._window_t_ns = int(batch.t_ns[position])
            self._buffer[self._filled : self._filled + take] = batch.xyz[position : position + take]
            self._filled += take
            position += take
            if self._filled == size:
                self._filled = 0
                self._complete_window(self._window_t_ns)

    def _complete_window(self, t_ns: int) -> None:
        started = time.thread_time()
        row, power = window_features(self._buffer, self.plan)
        previous = self._zone
        zone = classify(float(row[VRMS_COLUMN]), self.limits, previous)
        latest = {"timestamp": iso_z(t_ns), "zone": zone_name(zone)}
        latest.update(zip(COLUMNS, np.round(row, 4).tolist(), strict=True))
        with self._lock:
            self._spectra[self._spectra_count % SPECTRUM_HISTORY_WINDOWS] = power
            self._spectra_count += 1
            self._latest = latest
            self._latest_end_s = t_ns / 1e9 + self.config.window_seconds
            self._zone = zone
            self._windows += 1
        self._compute_seconds += time.thread_time() - started
        self.store.append(t_ns, zone, row)
        if previous == NO_ZONE:
            log.info(
                "vibration zone %s at start (velocity RMS %.2f mm/s)", zone_name(zone), row[-1]
            )
        elif zone != previous:
            self._zone_changes += 1
            boundary = self.limits.boundaries_mms[max(zone, previous) - 1]
            change = ZoneChange(
                zone_name(previous), zone_name(zone), float(row[VRMS_COLUMN]), boundary, t_ns
            )
            log.warning("%s", change.message)
            if self.on_zone_change is not None:
                try:
                    self.on_zone_change(change)
                except Exception:  # a broken listener must not stop the analysis
                    log.exception("zone-change listener failed")

    # --- queries --------------------------------------------------------------------------

    @property
    def zone(self) -> str:
        """'A'…'D', or '' before the first window."""
        return zone_name(self._zone)

    def latest(self) -> dict[str, Any] | None:
        """The newest window's features (flat: timestamp, zone, x_rms_ms2, … vrms_mms)."""
        with self._lock:
            return self._latest

    @property
    def windows(self) -> int:
        """Windows analysed so far; a change tells the server there is a new `latest`."""
        return self._windows

    def features(self, seconds: float, max_points: int) -> list[dict[str, Any]]:
        """Trend points over the last `seconds` (up to the retention), oldest first."""
        if not seconds > 0 or not max_points > 0:
            raise ValueError("seconds and max_points must be positive")
        return self.store.query(seconds, max_points)

    def spectrum(self, seconds: float) -> dict[str, Any]:
        """Amplitude spectrum (m/s², sine-peak scale) averaged over the last `seconds`."""
        if not seconds > 0:
            raise ValueError("seconds must be positive")
        wanted = max(1, math.ceil(seconds / self.config.window_seconds - 1e-9))
        with self._lock:
            count = min(wanted, self._spectra_count, SPECTRUM_HISTORY_WINDOWS)
            end = self._spectra_count % SPECTRUM_HISTORY_WINDOWS
            rows = (end - 1 - np.arange(count)) % SPECTRUM_HISTORY_WINDOWS
            power = self._spectra[rows].astype(np.float64).mean(axis=0) if count else None
            latest = self._latest
        result: dict[str, Any] = {
            "windows": count,
            "seconds": count * self.config.window_seconds,
            "resolution_hz": self.plan.rate_hz / self.plan.samples,
            "unit": "m/s² peak",
            "timestamp": latest["timestamp"] if latest else None,
            "frequencies_hz": np.round(self.plan.frequencies_hz, 3).tolist(),
        }
        if power is None:
            for name in CHANNELS:
                result[name] = []
            result["dominant_hz"] = {}
            return result
        amplitude = amplitude_spectrum(power, self.plan)
        for i, name in enumerate(CHANNELS):
            result[name] = np.round(amplitude[i], 6).tolist()
        dominant = dominant_frequency(power, self.plan)
        result["dominant_hz"] = {
            name: round(float(dominant[i]), 3) for i, name in enumerate(CHANNELS)
        }
        return result

    def stats(self) -> AnalyticsStats:
        return AnalyticsStats(
            windows=self._windows,
            samples=self._samples,
            gaps=self._gaps,
            samples_discarded=self._samples_discarded + self._samples_before_open,
            zone=self.zone,
            zone_changes=self._zone_changes,
            compute_seconds=self._compute_seconds,
            store=self.store.status(),
        )

    @property
    def fresh(self) -> bool:
        """Whether the newest window ended recently (false before the first one)."""
        return (
            self._latest is not None
            and self._clock() - self._latest_end_s <= self.stale_after_seconds
        )

    def status_data(self) -> dict[str, Any]:
        """Fields for the `status` reply: the zone, the newest velocity, the limits."""
        latest = self.latest()
        return {
            "zone": self.zone,
            "vrms_mms": latest["vrms_mms"] if latest else None,
            "features_stale": not self.fresh,
            "zone_limits_mms": list(self.limits.boundaries_mms),
            "feature_windows": self._windows,
            "features_error": self.store.error,
        }

    def metrics_text(self) -> str:
        """Prometheus text lines: the newest features per channel (while fresh) and the counters.

        Base units, as Prometheus names them: m/s for velocity (ISO zone limits are in mm/s:
        ×1000 on a dashboard), m/s² for acceleration, hertz.
        """
        stats = self.stats()
        latest = self.latest()
        lines: list[str] = []

        def metric(name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value:.6g}" for labels, value in samples)

        fresh = self.fresh
        metric(
            "wilo_analytics_fresh",
            "gauge",
            "1 while the vibration gauges come from a recent window (0: stale, gauges absent)",
            [("", float(fresh))],
        )
        if latest is not None and fresh:
            accel = "meters_per_second_squared"
            docs = {
                "rms_ms2": (f"wilo_vibration_accel_rms_{accel}", "Acceleration RMS (AC)", 1.0),
                "peak_ms2": (f"wilo_vibration_accel_peak_{accel}", "Acceleration peak (AC)", 1.0),
                "crest": ("wilo_vibration_crest_factor", "Peak / RMS of acceleration", 1.0),
                "vrms_mms": (
                    "wilo_vibration_velocity_rms_meters_per_second",
                    "In-band velocity RMS",
                    1e-3,
                ),
                "dominant_hz": (
                    "wilo_vibration_dominant_frequency_hertz",
                    "Strongest in-band frequency",
                    1.0,
                ),
            }
            for feature in PER_CHANNEL:
                name, doc, scale = docs[feature]
                values = [
                    (f'{{channel="{ch}"}}', scale * float(latest[COLUMNS[column(ch, feature)]]))
                    for ch in CHANNELS
                ]
                metric(name, "gauge", doc, values)
            metric(
                "wilo_vibration_velocity_rms_overall_meters_per_second",
                "gauge",
                "Largest axis velocity RMS (judged for the zone)",
                [("", 1e-3 * float(latest["vrms_mms"]))],
            )
            metric(
                "wilo_vibration_zone",
                "gauge",
                "Zone of the newest window: 0=A 1=B 2=C 3=D (absent without a fresh window)",
                [("", float(self._zone))],
            )
        metric(
            "wilo_vibration_zone_limit_meters_per_second",
            "gauge",
            "Velocity RMS where a zone starts (analytics.zone_*_mms), by the zone above it",
            [
                (f'{{zone="{zone}"}}', 1e-3 * limit)
                for zone, limit in zip("BCD", self.limits.boundaries_mms, strict=True)
            ],
        )
        counters = [
            ("wilo_analytics_windows_total", "Windows analysed", stats.windows),
            ("wilo_analytics_gaps_total", "Sample-index gaps that dropped a window", stats.gaps),
            ("wilo_analytics_zone_changes_total", "Zone changes", stats.zone_changes),
            ("wilo_analytics_compute_seconds_total", "CPU in feature maths", stats.compute_seconds),
            ("wilo_analytics_rows_written_total", "Feature rows written", stats.store.rows_written),
            ("wilo_analytics_write_errors_total", "Feature write errors", stats.store.write_errors),
        ]
        for name, doc, value in counters:
            metric(name, "counter", doc, [("", float(value))])
        metric(
            "wilo_analytics_feature_bytes",
            "gauge",
            "Bytes of feature files on disk",
            [("", float(stats.store.bytes_on_disk))],
        )
        return "\n".join(lines) + "\n"
