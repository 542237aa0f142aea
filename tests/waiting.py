"""The tests' one way to wait for something that happens in another thread or process: poll a
condition until a deadline, then fail saying what was awaited (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout_s: float = 20.0,
    *,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """The condition's first truthy value; AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s:g} s")
        time.sleep(interval_s)
