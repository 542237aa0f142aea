"""Markers by what a test needs, so that `make test-fast` can leave out the slow and the heavy.

`make test` runs everything; `make test-fast` (the contributor's inner loop) runs
`-m "not slow and not deploy and not browser and not prometheus"` with the `dev` hypothesis
profile (fewer examples).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from fuzzing import DEV_EXAMPLES, DEV_PROFILE

TESTS = Path(__file__).resolve().parent

# path prefix (relative to tests/) or node id → marker
_MARKS: tuple[tuple[str, str], ...] = (
    ("deploy/", "deploy"),  # Ansible, dist builds, systemd unit checks
    ("monitoring/", "prometheus"),  # promtool and a real Prometheus
    ("analytics/test_live_page.py", "browser"),  # Debian's chromium
    ("test_service.py", "slow"),  # the real service as a process
    ("test_dashboard_contract.py", "slow"),
    ("test_cli.py", "slow"),
    ("test_readme.py", "slow"),
    ("sampler/test_process.py", "slow"),  # the real acquisition process
    ("sampler/test_shm.py::test_the_sampler_is_the_only_process_the_service_starts", "slow"),
    ("store/test_crash.py", "slow"),  # SIGKILL of a writer process, repeatedly
    ("reliability/test_step_restart.py", "slow"),
    ("sampler/test_transport.py::test_writer_and_reader_racing", "slow"),
    ("analytics/test_feature_store.py::test_trends_of_days", "slow"),
    # the real service as a process, with its own start-up and shutdown
    ("reliability/test_hostile_service.py", "slow"),
    ("reliability/test_security.py::test_token_is_never_logged_or_echoed", "slow"),
    # 120 s of live data through a real socket: 3 s of CPU; the 60 s full-rate test stays
    ("server/test_live_socket.py::test_a_stalled_subscriber", "slow"),
    ("sampler/test_acquire.py::test_clock_error_still_gives_800", "slow"),
    # the heaviest computations of make test-fast, each 1-1.5 s of CPU: the polled sampler's
    # 800 Hz (test_polled_stall_counts_missed_deadlines keeps polled mode in it), a 3-hour trend
    # from minute roll-ups (the roll-up file is still written in test_rows_land_in_one_file...),
    # the summary rings' size and a day of their points
    ("sampler/test_acquire.py::test_other_modes_deliver_800_hz[polled-resample]", "slow"),
    ("analytics/test_feature_store.py::test_long_trends_come_from_minute_rollups", "slow"),
    ("store/test_summary.py::test_memory_hardly_grows_with_retention", "slow"),
)

settings.register_profile(DEV_PROFILE, max_examples=DEV_EXAMPLES, deadline=None)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        node = item.path.relative_to(TESTS).as_posix() + "::" + item.name
        for prefix, mark in _MARKS:
            if node.startswith(prefix):
                item.add_marker(mark)
