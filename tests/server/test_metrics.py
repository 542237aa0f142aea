"""metrics.py: valid Prometheus text with the counters operators need."""

from __future__ import annotations

import re

from wilo_backend.model import SamplerStats, StorageStatus
from wilo_backend.release import release_name
from wilo_backend.server.metrics import (
    ServerCounters,
    ServiceState,
    render_metrics,
    render_service_state,
)

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_]+="[^"]*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$'
)


def parse(text: str) -> dict[str, float]:
    """name{labels} -> value; asserts every family is declared before its samples."""
    assert text.endswith("\n")
    declared: set[str] = set()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in {"counter", "gauge", "histogram"}
            assert name not in declared, f"{name} declared twice"
            declared.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        family = re.sub(r"_(bucket|count|sum)$", "", match.group(1))
        assert match.group(1) in declared or family in declared, line
        key = line.rsplit(" ", 1)[0]
        values[key] = float(line.rsplit(" ", 1)[1])
    return values


def test_metrics_carry_sampler_storage_and_server_figures() -> None:
    stats = SamplerStats(
        samples=48_000,
        rate_hz=800.0,
        lost_overflow=1,
        lost_missed_deadlines=2,
        lost_handoff=3,
        i2c_errors=4,
        deviation_us_p99=12.5,
        deviation_hist_bounds_us=[10.0, 50.0, 100.0],
        deviation_hist_counts=[90, 8, 1, 1],
        alive=True,
    )
    storage = StorageStatus(False, "disk full", 120, "x.csv", 300_000_000, 5_000_000, 9, 0, 42)
    counters = ServerCounters(clients=3, live_frames_dropped_total=17)
    counters.reject("max_clients")
    counters.reject("max_clients")
    values = parse(render_metrics(stats, storage, counters, collecting=False, paused=True))
    assert values["wilo_collecting"] == 0 and values["wilo_paused"] == 1
    assert values["wilo_samples_total"] == 48_000
    assert values['wilo_samples_lost_total{cause="fifo_overflow"}'] == 1
    assert values['wilo_samples_lost_total{cause="missed_deadline"}'] == 2
    assert values['wilo_samples_lost_total{cause="handoff"}'] == 3
    assert values["wilo_i2c_errors_total"] == 4
    assert values["wilo_storage_rows_dropped_total"] == 42
    assert values['wilo_deadline_deviation_stat_seconds{stat="p99"}'] == 12.5e-6
    assert values['wilo_deadline_deviation_seconds_bucket{le="5e-05"}'] == 98
    assert values['wilo_deadline_deviation_seconds_bucket{le="+Inf"}'] == 100
    assert values["wilo_storage_healthy"] == 0
    assert values["wilo_storage_free_bytes"] == 5_000_000
    assert values["wilo_storage_retained_bytes"] == 300_000_000
    assert values["wilo_ws_clients"] == 3
    assert values["wilo_live_frames_dropped_total"] == 17
    assert values['wilo_ws_connections_rejected_total{reason="max_clients"}'] == 2
    assert values["wilo_sampler_alive"] == 1


def test_metrics_without_histogram_are_still_valid() -> None:
    storage = StorageStatus(True, "", 0, None, 0, 0, 0, 0)
    values = parse(
        render_metrics(SamplerStats(), storage, ServerCounters(), collecting=True, paused=False)
    )
    assert values["wilo_collecting"] == 1 and values["wilo_paused"] == 0
    assert not any(key.startswith("wilo_deadline_deviation_seconds") for key in values)
    assert values["wilo_storage_healthy"] == 1


def test_storage_counters_backlog_wear_and_eviction_times() -> None:
    storage = StorageStatus(
        True,
        "",
        3,
        "x.csv",
        0,
        0,
        800,
        0,
        rows_pending=1600,
        committed_t_ns=1_795_792_920_500_000_000,
        write_errors=2,
        evictions=5,
        segment_bytes_written=7000,
        aggregate_bytes_appended=6000,
        aggregate_bytes_rebuilt=300,
        aggregate_collapses=4,
        aggregate_rebuilds=1,
        # 100 evictions of 1..100 ms, unordered: the median and p99 by nearest rank
        eviction_seconds=tuple((k * 37 % 100 + 1) / 1000 for k in range(100)),
        rebuild_seconds=(2.5,),
    )
    values = parse(
        render_metrics(SamplerStats(), storage, ServerCounters(), collecting=True, paused=False)
    )
    assert values["wilo_storage_rows_pending"] == 1600
    assert values["wilo_storage_committed_sample_timestamp_seconds"] == 1_795_792_920.5
    assert values["wilo_storage_write_errors_total"] == 2
    assert values["wilo_storage_evictions_total"] == 5
    assert values['wilo_storage_written_bytes_total{file="segment"}'] == 7000
    assert values['wilo_storage_written_bytes_total{file="aggregate_append"}'] == 6000
    assert values['wilo_storage_written_bytes_total{file="aggregate_rebuild"}'] == 300
    assert values['wilo_storage_aggregate_trims_total{method="collapse"}'] == 4
    assert values['wilo_storage_aggregate_trims_total{method="rebuild"}'] == 1
    assert values['wilo_storage_eviction_stat_seconds{stat="p50"}'] == 0.050
    assert values['wilo_storage_eviction_stat_seconds{stat="p99"}'] == 0.100
    assert values['wilo_storage_eviction_stat_seconds{stat="max"}'] == 0.100
    assert values['wilo_storage_aggregate_rebuild_stat_seconds{stat="p50"}'] == 2.5
    # before the first eviction there is no figure rather than a made-up 0
    idle = parse(
        render_metrics(
            SamplerStats(),
            StorageStatus(True, "", 0, None, 0, 0, 0, 0),
            ServerCounters(),
            collecting=True,
            paused=False,
        )
    )
    assert not any(key.startswith("wilo_storage_eviction_stat_seconds") for key in idle)


def test_service_state_names_the_build_and_the_disk_floor() -> None:
    state = ServiceState(
        version="1.2.3",
        release="1.2.3-abcdef0123",
        sampler_restarts=2,
        min_free_bytes=200 * 2**20,
    )
    values = parse(render_service_state(state))
    assert values['wilo_build_info{version="1.2.3",release="1.2.3-abcdef0123"}'] == 1
    assert values["wilo_sampler_restarts_total"] == 2
    assert values["wilo_storage_min_free_bytes"] == 200 * 2**20


def test_release_is_the_folder_the_role_installed_the_venv_in() -> None:
    assert release_name("/opt/wilo-backend/releases/0.4.0-3f2a9c1d0e/venv") == "0.4.0-3f2a9c1d0e"
    assert release_name("/work/checkout/.venv") == "dev"
    assert release_name("/opt/other/venv") == "dev"
