"""Every family /metrics can show passes `promtool check metrics` (Prometheus naming rules)."""

from __future__ import annotations

from pathlib import Path

from analytics.signals import START_NS, tone_batches
from clocks import FakeClock
from wilo_backend.analytics import Analytics
from wilo_backend.config import AnalyticsConfig
from wilo_backend.model import SamplerStats, StorageStatus
from wilo_backend.server.metrics import (
    ServerCounters,
    ServiceState,
    render_metrics,
    render_service_state,
)

from .promhelp import promtool


def test_every_family_passes_promtool_check_metrics(tmp_path: Path) -> None:
    # polled mode's deadline figures and histogram too (a fifo-mode scrape has none)
    stats = SamplerStats(
        samples=8000,
        rate_hz=800.0,
        deviation_us_p50=3.0,
        deviation_us_p99=40.0,
        deviation_us_max=90.0,
        deviation_hist_bounds_us=[10.0, 50.0, 100.0],
        deviation_hist_counts=[90, 8, 1, 1],
        alive=True,
    )
    storage = StorageStatus(
        True,
        "",
        3,
        "x.csv",
        3000,
        10**9,
        8000,
        1,
        0,
        eviction_seconds=(0.002, 0.004),
        rebuild_seconds=(1.5,),
    )
    counters = ServerCounters(clients=1)
    counters.reject("max_clients")
    analytics = Analytics(
        AnalyticsConfig(), tmp_path, fsync=False, clock=FakeClock(START_NS / 1e9 + 2.5)
    )
    analytics.open()
    for batch in tone_batches([(30.0, 0.5)], 2):
        analytics.feed(batch)
    body = (
        render_metrics(stats, storage, counters, collecting=True, paused=False)
        + render_service_state(ServiceState("1.0", "1.0-abc", 0, 200 * 2**20))
        + analytics.metrics_text()
    )
    assert "wilo_vibration_velocity_rms_overall_meters_per_second" in body  # fresh window
    assert "wilo_deadline_deviation_seconds_bucket" in body
    check = promtool("check", "metrics", stdin=body)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""  # not even a warning
