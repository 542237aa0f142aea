"""Fuzz: the protocol dispatcher with arbitrary JSON and bytes, the path resolvers with hostile
names. Only RequestError / PathRejectedError may come out, and no file outside is ever read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reliability.fuzzhelp import Control, build_store
from wilo_backend.model import PathRejectedError
from wilo_backend.server import protocol
from wilo_backend.server.protocol import Dispatcher, RequestError, parse_request
from wilo_backend.store import export as export_mod
from wilo_backend.store.store import Store

SOCKET_COMMANDS = {"subscribe_live", "unsubscribe_live", protocol.EXPORT_COMMAND}
FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = build_store(tmp_path_factory.mktemp("fuzz"))
    yield store
    store.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)

PARTS = [
    "..",
    ".",
    "",
    "2026",
    "11",
    "Week_4",
    "Week_5",
    "27",
    "28",
    "152200.csv",
    "101010.csv",
    "readings",
    "aggregate_data.csv",
    "exports",
    "%2e%2e",
    "\x00",
    "\\",
    "~",
    "etc",
    "passwd",
    "152201.csv",
    "152200_1.csv",
    "\u2025",
    "C:",
    "//",
]
hostile_names = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=8).map("/".join),
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=8).map(lambda p: "/" + "/".join(p)),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(["2026/11/Week_4/27/", "../", "/"]),
        st.text(max_size=20),
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Request-shaped objects: a real or made-up command, fields of any type."""
    obj: dict[str, Any] = {
        "command": draw(st.sampled_from(sorted(protocol.COMMANDS)) | json_values)
    }
    for key, good in [
        ("filename", hostile_names),
        ("max_points", st.integers(min_value=-5, max_value=200_000)),
        ("seconds", st.floats()),
        ("max_rate_hz", st.floats()),
        ("request_id", st.text(max_size=300) | st.integers()),
        ("token", st.text(max_size=10)),
    ]:
        if draw(st.booleans()):
            obj[key] = draw(good | json_values)
    return obj


def _answer(dispatcher: Dispatcher, frame: str | bytes) -> dict[str, Any] | None:
    """What the server does with one frame, minus the socket: a reply that encodes, or an error."""
    try:
        request = parse_request(frame)
    except RequestError as exc:
        assert exc.message
        return protocol.error_message(exc.message, exc.request_id)
    assert request.command in protocol.COMMANDS
    if request.command in SOCKET_COMMANDS:
        return None  # handled by the socket layer (tests/server)
    try:
        reply = dispatcher.handle(request)
    except RequestError as exc:
        return protocol.error_message(exc.message, request.request_id)
    json.loads(protocol.encode(reply))  # every reply is valid JSON
    return reply


@FUZZ
@given(frame=st.one_of(json_values.map(json.dumps), requests().map(json.dumps)))
@example(frame='{"command": "get_recent_data", "seconds": 1e308}')
@example(frame='{"command": "get_file_list", "request_id": -9223372036854775809}')
@example(frame='{"command": "get_file_list", "request_id": 18446744073709551616}')
@example(frame='{"command": "get_csv_data", "filename": "2026/11/Week_4/27/101010.csv"}')
@example(frame='{"command": "get_csv_data", "filename": "2026/11/Week_4/28/101010.csv"}')
def test_any_json_gets_a_reply_or_an_error(store: Store, frame: str) -> None:
    reply = _answer(Dispatcher(store, Control(store)), frame)
    assert "SECRET" not in json.dumps(reply)


@FUZZ
@given(frame=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
@example(frame="[" * 100_000)
@example(frame=b"\xff\xfe")
@example(frame="NaN")
def test_any_bytes_get_a_reply_or_an_error(store: Store, frame: str | bytes) -> None:
    _answer(Dispatcher(store, Control(store)), frame)


@FUZZ
@given(name=hostile_names)
@example(name="2026/11/Week_4/27/101010.csv")  # a symlink to a file outside
@example(name="2026/11/Week_4/28/101010.csv")  # a real file behind a symlinked folder
@example(name="2026/11/Week_4/27/../../../../../outside/secret.csv")
def test_resolver_returns_only_retained_segments_inside_readings(store: Store, name: str) -> None:
    try:
        path = store.resolve(name)
    except PathRejectedError:
        with pytest.raises((PathRejectedError, RequestError)):
            store.read_csv(name, 10)
        return
    readings = os.path.realpath(store.readings_dir)
    assert os.path.realpath(path).startswith(readings + os.sep)
    assert name in store.file_list()
    assert Path(path).is_file() and not Path(path).is_symlink()


@FUZZ
@given(name=hostile_names)
@example(name="../readings/aggregate_data.csv")
def test_export_resolver_stays_in_exports(store: Store, name: str) -> None:
    try:
        path = export_mod.resolve_export(store.exports_dir, name)
    except PathRejectedError:
        return
    assert os.path.realpath(path).startswith(os.path.realpath(store.exports_dir) + os.sep)


def test_the_traps_are_really_there(store: Store) -> None:
    """The fixture's symlinks exist, so the examples above test something."""
    day = store.readings_dir / "2026/11/Week_4"
    assert (day / "27" / "101010.csv").is_symlink()
    assert (day / "28" / "101010.csv").read_text().endswith("SECRET\n")
    assert len(store.file_list()) >= 3
