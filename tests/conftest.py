"""Markers by what a test needs, so that `make test-fast` can leave out the slow and the heavy.

`make test` runs everything; `make test-fast` (the contributor's inner loop) runs
`-m "not slow and not deploy and not browser and not prometheus"` with the `dev` hypothesis
profile (fewer examples).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression  # pytest's own reading of `-m`
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


def _never_selected(markexpr: str, mark: str) -> bool:
    """True if `-m markexpr` deselects every test that carries `mark`, whatever else it carries.

    Only for expressions over our own markers; for others (`-m asyncio`) nothing is skipped.
    """
    known = sorted({m for _, m in _MARKS})
    names = set(re.findall(r"[\w.-]+", markexpr)) - {"and", "or", "not"}
    if not names <= set(known):
        return False
    expression = Expression.compile(markexpr)
    others = [m for m in known if m != mark]
    for count in range(len(others) + 1):
        for extra in itertools.combinations(others, count):
            if expression.evaluate(_carrying({mark, *extra})):
                return False
    return True


def _carrying(marks: set[str]) -> Callable[..., bool]:
    """The matcher of a test that carries exactly `marks`."""
    return lambda name, /, **_kwargs: name in marks


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Folders and files whose every test `-m` would deselect are not even imported.

    Their imports (Playwright, PyYAML, Ansible helpers) were about 0.8 s of CPU in each xdist
    worker of `make test-fast`; what is deselected stays the same.
    """
    markexpr = str(config.getoption("markexpr") or "")
    if not markexpr or not collection_path.is_relative_to(TESTS):
        return None
    relative = collection_path.relative_to(TESTS).as_posix()
    for prefix, mark in _MARKS:
        whole = "::" not in prefix  # a folder or a whole file, not one test
        if whole and relative == prefix.rstrip("/") and _never_selected(markexpr, mark):
            return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        node = item.path.relative_to(TESTS).as_posix() + "::" + item.name
        for prefix, mark in _MARKS:
            if node.startswith(prefix):
                item.add_marker(mark)
