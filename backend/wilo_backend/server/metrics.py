"""Prometheus text exposition (format 0.0.4) of sampler, storage and server counters."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from wilo_backend.model import SamplerStats, StorageStatus

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class ServerCounters:
    """What the socket layer counts; read by /metrics."""

    clients: int = 0
    live_subscribers: int = 0
    connections_total: int = 0
    connections_rejected: dict[str, int] = field(default_factory=dict)
    # refused at the cap, then admitted after all: the request carried the token
    connections_rescued_total: int = 0
    requests_total: int = 0
    request_errors_total: int = 0
    rate_limited_total: int = 0
    busy_total: int = 0
    unauthorized_total: int = 0
    live_frames_encoded_total: int = 0
    live_frames_sent_total: int = 0
    live_frames_dropped_total: int = 0
    live_samples_overrun_total: int = 0
    exports_total: int = 0
    export_errors_total: int = 0
    downloads_total: int = 0

    def reject(self, reason: str) -> None:
        self.connections_rejected[reason] = self.connections_rejected.get(reason, 0) + 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        suffix = f"{{{label_text}}}" if label_text else ""
        self.lines.append(f"{name}{suffix} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])


def _sampler(out: _Writer, stats: SamplerStats) -> None:
    out.one("wilo_samples_total", "counter", "Samples delivered by the sampler.", stats.samples)
    out.one("wilo_sample_rate_hertz", "gauge", "Measured output sample rate.", stats.rate_hz)
    out.family(
        "wilo_samples_lost_total",
        "counter",
        "Samples lost, by cause.",
        [
            ({"cause": "fifo_overflow"}, stats.lost_overflow),
            ({"cause": "missed_deadline"}, stats.lost_missed_deadlines),
            ({"cause": "handoff"}, stats.lost_handoff),
        ],
    )
    out.one("wilo_i2c_errors_total", "counter", "Failed I2C transfers.", stats.i2c_errors)
    out.one("wilo_sensor_reconnects_total", "counter", "Sensor reconnects.", stats.reconnects)
    out.one("wilo_fifo_resets_total", "counter", "MPU-6050 FIFO resets.", stats.fifo_resets)
    out.one("wilo_sensor_connected", "gauge", "1 while the sensor answers.", stats.connected)
    out.one("wilo_sampler_alive", "gauge", "1 while the sampler process runs.", stats.alive)
    out.one("wilo_sampler_realtime", "gauge", "1 when SCHED_FIFO was granted.", stats.realtime)
    out.one("wilo_clock_error_ppm", "gauge", "Sensor clock error vs host.", stats.clock_error_ppm)
    # Prometheus wants base units and keeps `quantile` for summaries: seconds, and a `stat` label.
    out.family(
        "wilo_deadline_deviation_stat_seconds",
        "gauge",
        "Polled-mode deadline deviation: median, 99th percentile and maximum.",
        [
            ({"stat": "p50"}, stats.deviation_us_p50 / 1e6),
            ({"stat": "p99"}, stats.deviation_us_p99 / 1e6),
            ({"stat": "max"}, stats.deviation_us_max / 1e6),
        ],
    )
    bounds, counts = stats.deviation_hist_bounds_us, stats.deviation_hist_counts
    if bounds and len(counts) in (len(bounds), len(bounds) + 1):
        name = "wilo_deadline_deviation_seconds"
        out.lines.append(f"# HELP {name} Polled-mode deadline deviation histogram.")
        out.lines.append(f"# TYPE {name} histogram")
        running = 0
        for bound, count in zip(bounds, counts, strict=False):
            running += count
            out.sample(f"{name}_bucket", {"le": _number(bound / 1e6)}, running)
        total = sum(counts)
        out.sample(f"{name}_bucket", {"le": "+Inf"}, total)
        out.sample(f"{name}_count", {}, total)


def _storage(out: _Writer, storage: StorageStatus) -> None:
    out.one("wilo_storage_healthy", "gauge", "0 while storage is degraded.", storage.healthy)
    out.one("wilo_storage_files", "gauge", "Retained segment files.", storage.file_count)
    out.one(
        "wilo_storage_retained_bytes",
        "gauge",
        "Bytes of retained segments.",
        storage.bytes_retained,
    )
    out.one("wilo_storage_free_bytes", "gauge", "Free bytes on the data disk.", storage.free_bytes)
    out.one("wilo_storage_rows_total", "counter", "CSV rows written.", storage.rows_written)
    out.one(
        "wilo_storage_rows_dropped_total",
        "counter",
        "Rows dropped after a long disk failure outgrew the in-memory backlog.",
        storage.rows_dropped,
    )
    out.one("wilo_clock_steps_total", "counter", "Wall-clock steps seen.", storage.clock_steps)
    out.one(
        "wilo_storage_rows_pending",
        "gauge",
        "Rows received and not yet on disk (grows while the disk refuses writes).",
        storage.rows_pending,
    )
    out.one(
        "wilo_storage_committed_sample_timestamp_seconds",
        "gauge",
        "Time of the newest sample known to be on disk (0 before the first write).",
        storage.committed_t_ns / 1e9,
    )
    out.one(
        "wilo_storage_write_errors_total",
        "counter",
        "Segment or aggregate writes the disk refused.",
        storage.write_errors,
    )
    out.one("wilo_storage_evictions_total", "counter", "Segments evicted.", storage.evictions)
    out.family(
        "wilo_storage_written_bytes_total",
        "counter",
        "Bytes written to the data disk (SD-card wear), by what was written.",
        [
            ({"file": "segment"}, storage.segment_bytes_written),
            ({"file": "aggregate_append"}, storage.aggregate_bytes_appended),
            ({"file": "aggregate_rebuild"}, storage.aggregate_bytes_rebuilt),
        ],
    )
    out.family(
        "wilo_storage_aggregate_trims_total",
        "counter",
        "Evicted segments cut from the aggregate: in place (collapse) or by a rewrite (rebuild).",
        [
            ({"method": "collapse"}, storage.aggregate_collapses),
            ({"method": "rebuild"}, storage.aggregate_rebuilds),
        ],
    )
    out.family(
        "wilo_storage_eviction_stat_seconds",
        "gauge",
        "Time an eviction held up the writer, over the latest evictions: median, p99, maximum.",
        _stats(storage.eviction_seconds),
    )
    out.family(
        "wilo_storage_aggregate_rebuild_stat_seconds",
        "gauge",
        "Time a background rewrite of the aggregate took, over the latest: median, p99, maximum.",
        _stats(storage.rebuild_seconds),
    )


def _stats(seconds: tuple[float, ...]) -> list[tuple[dict[str, str], float]]:
    """p50, p99 (nearest rank) and maximum; none before the first value."""
    if not seconds:
        return []
    ordered = sorted(seconds)
    last = len(ordered) - 1
    return [
        ({"stat": "p50"}, ordered[last // 2]),
        ({"stat": "p99"}, ordered[min(last, int(len(ordered) * 0.99))]),
        ({"stat": "max"}, ordered[last]),
    ]


def _server(out: _Writer, counters: ServerCounters) -> None:
    out.one("wilo_ws_clients", "gauge", "Connected WebSocket clients.", counters.clients)
    out.one(
        "wilo_live_subscribers",
        "gauge",
        "Clients subscribed to live_data.",
        counters.live_subscribers,
    )
    out.one(
        "wilo_ws_connections_total", "counter", "WebSocket connections.", counters.connections_total
    )
    out.family(
        "wilo_ws_connections_rejected_total",
        "counter",
        "Connections refused, by reason.",
        # sorted by reason: sorting the (labels, value) pairs compared dicts and raised
        # TypeError as soon as a second reason was counted
        [({"reason": k}, v) for k, v in sorted(counters.connections_rejected.items())],
    )
    out.one(
        "wilo_ws_connections_rescued_total",
        "counter",
        "Connections refused at the cap whose request then carried the token, admitted after all.",
        counters.connections_rescued_total,
    )
    out.one("wilo_ws_requests_total", "counter", "Requests received.", counters.requests_total)
    out.one(
        "wilo_ws_request_errors_total",
        "counter",
        "Requests answered with an error.",
        counters.request_errors_total,
    )
    out.one(
        "wilo_ws_rate_limited_total",
        "counter",
        "Requests over the rate.",
        counters.rate_limited_total,
    )
    out.one(
        "wilo_ws_busy_total",
        "counter",
        "Requests refused 'busy': the client's queue or the expensive-command pool was full.",
        counters.busy_total,
    )
    out.one(
        "wilo_ws_unauthorized_total",
        "counter",
        "Requests without a valid token.",
        counters.unauthorized_total,
    )
    out.one(
        "wilo_live_frames_encoded_total",
        "counter",
        "live_data frames encoded (once per rate level).",
        counters.live_frames_encoded_total,
    )
    out.one(
        "wilo_live_frames_sent_total",
        "counter",
        "live_data frames sent.",
        counters.live_frames_sent_total,
    )
    out.one(
        "wilo_live_frames_dropped_total",
        "counter",
        "live_data frames dropped for slow clients.",
        counters.live_frames_dropped_total,
    )
    out.one(
        "wilo_live_samples_overrun_total",
        "counter",
        "Samples dropped before framing because the frame timer stalled.",
        counters.live_samples_overrun_total,
    )
    out.one("wilo_exports_total", "counter", "ZIP exports built.", counters.exports_total)
    out.one(
        "wilo_export_errors_total", "counter", "ZIP exports failed.", counters.export_errors_total
    )
    out.one("wilo_downloads_total", "counter", "Export downloads served.", counters.downloads_total)


def render_metrics(
    sampler: SamplerStats,
    storage: StorageStatus,
    counters: ServerCounters,
    *,
    collecting: bool,
    paused: bool,
) -> str:
    """The /metrics body."""
    out = _Writer()
    out.one(
        "wilo_collecting",
        "gauge",
        "1 while samples are stored and streamed (not stopped or paused by a client).",
        collecting,
    )
    out.one("wilo_paused", "gauge", "1 while a client has paused collection.", paused)
    _sampler(out, sampler)
    _storage(out, storage)
    _server(out, counters)
    return "\n".join(out.lines) + "\n"


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the service itself adds to /metrics for the fleet: its build and its disk floor."""

    version: str
    release: str
    sampler_restarts: int
    min_free_bytes: int


def render_service_state(state: ServiceState) -> str:
    """Prometheus lines for the fleet's alerts and dashboard: which build runs, the floor."""
    out = _Writer()
    out.family(
        "wilo_build_info",
        "gauge",
        "Always 1; the labels name the running version and the deployed release.",
        [({"version": state.version, "release": state.release}, 1)],
    )
    out.one(
        "wilo_sampler_restarts_total",
        "counter",
        "Sampler processes restarted after dying.",
        state.sampler_restarts,
    )
    out.one(
        "wilo_storage_min_free_bytes",
        "gauge",
        "The free-space floor (storage.min_free_mb): below it segments are evicted early.",
        state.min_free_bytes,
    )
    return "\n".join(out.lines) + "\n"
