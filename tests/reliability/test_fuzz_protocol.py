"""Fuzz: the real protocol session (server/session.py: rate limit, pending cap, token, lockout,
routing) with arbitrary JSON and bytes and against a model of its rules; the path resolvers with
hostile names. Every frame gets a valid reply or an error, and no file outside is ever read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from reliability.fuzzhelp import TOKEN, SessionDriver, build_store
from wilo_backend.config import ServerConfig
from wilo_backend.model import PathRejectedError
from wilo_backend.server import protocol
from wilo_backend.server.protocol import RequestError
from wilo_backend.store import export as export_mod
from wilo_backend.store.store import Store

RATE = 4.0  # requests per second, and the burst
MAX_PENDING = 3
MAX_WRONG = 3  # wrong tokens per address per minute
# a budget the single-frame tests never exhaust (each gets a fresh session)
OPEN_BUDGET = ServerConfig(auth_token=TOKEN, max_requests_per_second=10_000.0)
RULES = ServerConfig(
    auth_token=TOKEN,
    max_requests_per_second=RATE,
    max_pending_requests=MAX_PENDING,
    max_auth_failures_per_minute=MAX_WRONG,
)
FUZZ = settings(
    max_examples=examples(250),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
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


def _answer(store: Store, frame: str | bytes) -> list[dict[str, Any]]:
    """What the real session answers to one frame from a client that gave the token at the
    handshake: every reply is valid JSON, and a refused frame gets an error saying why."""
    driver = SessionDriver(store, OPEN_BUDGET, authorized=True)
    outcome = driver.receive(frame)
    if isinstance(outcome, str):
        reply = json.loads(outcome)
        assert reply["type"] == "error" and reply["message"]
        return [reply]
    assert outcome.command in protocol.COMMANDS
    replies = [json.loads(text) for text in driver.serve(outcome)]
    assert len(replies) == 1
    return replies


@FUZZ
@given(frame=st.one_of(json_values.map(json.dumps), requests().map(json.dumps)))
@example(frame='{"command": "get_recent_data", "seconds": 1e308}')
@example(frame='{"command": "get_file_list", "request_id": -9223372036854775809}')
@example(frame='{"command": "get_file_list", "request_id": 18446744073709551616}')
@example(frame='{"command": "get_csv_data", "filename": "2026/11/Week_4/27/101010.csv"}')
@example(frame='{"command": "get_csv_data", "filename": "2026/11/Week_4/28/101010.csv"}')
def test_any_json_gets_a_reply_or_an_error(store: Store, frame: str) -> None:
    replies = _answer(store, frame)
    assert "SECRET" not in json.dumps(replies)


@FUZZ
@given(frame=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
@example(frame="[" * 100_000)
@example(frame=b"\xff\xfe")
@example(frame="NaN")
def test_any_bytes_get_a_reply_or_an_error(store: Store, frame: str | bytes) -> None:
    _answer(store, frame)


# --- the session against a model of its rules: budget, pending cap, token, lockout -----------

LOCKOUT_SECONDS = 60.0
# steps of 1/8 s keep the budget's arithmetic exact, so the model never rounds differently
STEPS_SECONDS = [0.0, 0.0, 0.0, 0.125, 0.5, 1.0, 61.0]
REPLY_TYPE = {
    "get_status": "status",
    "get_file_list": "file_list",
    "get_folder_structure": "folder_structure",
    "get_csv_data": "csv_data",
    "get_recent_data": "recent_data",
    "subscribe_live": "live_subscribed",
    "unsubscribe_live": "live_unsubscribed",
    protocol.EXPORT_COMMAND: "zip_export",
    **dict.fromkeys(protocol.CONTROL_COMMANDS, "status"),
}
tokens = st.sampled_from(
    [TOKEN, TOKEN[:1], TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "", "wrong"]
) | st.text(max_size=12)


@st.composite
def session_frames(draw: st.DrawFn) -> str:
    """Mostly well-formed commands with and without a (right, prefix, wrong) token."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=20) | json_values.map(json.dumps))
    obj: dict[str, Any] = {"command": draw(st.sampled_from(sorted(protocol.COMMANDS)))}
    if obj["command"] == "get_csv_data":
        obj["filename"] = draw(st.sampled_from(["2026/11/Week_4/27/152200.csv", "x.csv"]))
    if draw(st.booleans()):
        obj["token"] = draw(tokens)
    if draw(st.booleans()):
        obj["request_id"] = draw(st.integers(0, 99))
    return json.dumps(obj)


steps = st.lists(
    st.tuples(
        st.sampled_from(["frame", "frame", "serve"]),
        session_frames(),
        st.sampled_from(STEPS_SECONDS),
    ),
    max_size=30,
)


class Model:
    """The session's rules, written from the spec (SPEC §5) rather than from its code."""

    def __init__(self, protect_reads: bool, authorized: bool) -> None:
        self.protect_reads = protect_reads
        self.authorized = authorized
        self.budget = RATE
        self.last_frame_at = 0.0
        self.pending = 0
        self.wrong_at: list[float] = []

    def spend(self, now: float) -> bool:
        """Whether a frame arriving at `now` is within the budget (RATE a second, RATE at once)."""
        self.budget = min(RATE, self.budget + (now - self.last_frame_at) * RATE)
        self.last_frame_at = now
        if self.budget >= 1.0:
            self.budget -= 1.0
            return True
        return False

    def needs_token(self, command: str) -> bool:
        """Control commands and exports always (a token is set); reads when protected."""
        return (
            self.protect_reads
            or command in protocol.CONTROL_COMMANDS
            or command == protocol.EXPORT_COMMAND
        )

    def token_verdict(self, given: str | None, now: float) -> str:
        """'locked', 'right', 'wrong' or 'none' for the token of a command that needs it."""
        if not given:
            return "none"
        self.wrong_at = [t for t in self.wrong_at if now - t < LOCKOUT_SECONDS]
        if len(self.wrong_at) >= MAX_WRONG:
            return "locked"
        if given == TOKEN:
            self.authorized = True
            return "right"
        self.wrong_at.append(now)
        return "wrong"


def _parses(frame: str) -> protocol.Request | None:
    try:
        return protocol.parse_request(frame)
    except protocol.RequestError:
        return None


@FUZZ
@given(script=steps, protect_reads=st.booleans(), authorized=st.booleans())
# a prefix of the token is not the token (a mutation accepting one fails here)
@example(
    script=[
        ("frame", json.dumps({"command": "stop_collection", "token": TOKEN[:4]}), 0.0),
        ("serve", "", 0.0),
    ],
    protect_reads=False,
    authorized=False,
)
# a burst beyond the budget is refused until the budget refills
@example(
    script=[("frame", '{"command": "get_status"}', 0.0)] * 6 + [("serve", "", 0.0)] * 6,
    protect_reads=False,
    authorized=False,
)
# the lockout: three wrong tokens, then even the right one is not compared for a minute
@example(
    script=[
        step
        for token in ["a", "b", "c", TOKEN]
        for step in [
            ("frame", json.dumps({"command": "pause_collection", "token": token}), 1.0),
            ("serve", "", 0.0),
        ]
    ],
    protect_reads=False,
    authorized=False,
)
def test_the_session_keeps_its_rules(
    store: Store, script: list[tuple[str, str, float]], protect_reads: bool, authorized: bool
) -> None:
    config = replace(RULES, protect_reads=protect_reads)
    driver = SessionDriver(store, config, authorized=authorized)
    model = Model(protect_reads, authorized)
    model.last_frame_at = driver.clock.now
    queued: list[protocol.Request] = []
    wrong_tokens = pushes = 0
    for kind, frame, elapsed in script:
        driver.clock.now += elapsed
        now = driver.clock.now
        if kind == "frame":
            outcome = driver.receive(frame)
            allowed = model.spend(now)
            request = _parses(frame)
            if not allowed:
                assert isinstance(outcome, str) and "rate limited" in outcome, (frame, outcome)
            elif request is None:
                assert isinstance(outcome, str) and '"type":"error"' in outcome
                assert "rate limited" not in outcome
            elif model.pending >= MAX_PENDING:
                assert isinstance(outcome, str) and "busy:" in outcome, outcome
            else:
                assert outcome == request
                model.pending += 1
                queued.append(request)
            continue
        if not queued:
            continue
        request = queued.pop(0)
        replies = [json.loads(text) for text in driver.serve(request)]
        model.pending -= 1
        assert len(replies) == 1, replies
        reply = replies[0]
        assert reply.get("request_id") == request.request_id
        if model.needs_token(request.command):
            verdict = model.token_verdict(request.token, now)
            wrong_tokens += verdict == "wrong"
            if verdict == "locked":
                assert reply["type"] == "error" and "too many wrong tokens" in reply["message"]
                continue
            if not model.authorized:
                text = reply.get("message") or reply.get("error")
                assert text and text.startswith("unauthorized"), (request, reply)
                continue
        expected = REPLY_TYPE[request.command]
        if request.command == "get_csv_data" and request.filename == "x.csv":
            expected = "error"
        assert reply["type"] == expected, (request, reply)
        if request.command in protocol.CONTROL_COMMANDS:
            pushes += 1
    assert driver.session.pending == model.pending
    assert driver.wrong_tokens_logged == wrong_tokens
    assert driver.status_pushes == pushes


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
