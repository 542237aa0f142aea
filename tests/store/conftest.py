"""Fixtures for the store tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from storehelp import Feeder, make_config

from clocks import FakeClock
from wilo_backend.store.store import Store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store(clock: FakeClock) -> Iterator[Callable[..., tuple[Store, Feeder]]]:
    """open_store(data_dir, **config) -> (store, feeder); closed at teardown."""
    stores: list[Store] = []

    def factory(data_dir: Path, **overrides: Any) -> tuple[Store, Feeder]:
        store = Store(make_config(data_dir, **overrides), monotonic=clock)
        store.open()
        stores.append(store)
        return store, Feeder(store, clock)

    yield factory
    for store in stores:
        with contextlib.suppress(Exception):
            store.close()
