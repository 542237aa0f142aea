"""protocol.py without sockets: parsing, validation, auth decisions, replies, rate budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wilo_backend.model import ExportResult, PathRejectedError, SamplerStats, StorageStatus
from wilo_backend.server import protocol
from wilo_backend.server.protocol import Dispatcher, Request, RequestError, TokenBucket

CSV_REQUEST = '{"command": "get_csv_data", "filename": "2026/11/Week_4/27/152200.csv", '


def test_parse_accepts_a_dashboard_request_and_keeps_request_id() -> None:
    request = protocol.parse_request(
        '{"command": "get_csv_data", "filename": "2026/11/Week_4/27/152200.csv", "request_id": 7}'
    )
    assert request == Request(
        command="get_csv_data", request_id=7, filename="2026/11/Week_4/27/152200.csv"
    )


def test_parse_accepts_utf8_bytes() -> None:
    assert protocol.parse_request(b'{"command":"get_status"}').command == "get_status"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", "invalid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ('{"command": NaN}', "invalid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"get_status"', "must be a JSON object, got str"),
        ("42", "must be a JSON object, got int"),
        ("null", "must be a JSON object, got NoneType"),
        ("{}", "missing field 'command'"),
        ('{"command": 5}', "command must be a string"),
        ('{"command": "format_disk"}', "unknown command 'format_disk'"),
        ('{"command": "get_csv_data"}', "needs a 'filename'"),
        ('{"command": "get_csv_data", "filename": 3}', "filename must be a string"),
        (
            CSV_REQUEST + '"max_points": "9"}',
            "max_points",
        ),
        (
            CSV_REQUEST + '"max_points": true}',
            "max_points",
        ),
        (
            CSV_REQUEST + '"max_points": 1}',
            "between 2",
        ),
        ('{"command": "get_recent_data", "seconds": -1}', "seconds must be a positive"),
        ('{"command": "get_recent_data", "seconds": "60"}', "seconds must be a positive"),
        ('{"command": "subscribe_live", "max_rate_hz": 0}', "max_rate_hz must be a positive"),
        ('{"command": "subscribe_live", "max_rate_hz": 1e999}', "max_rate_hz must be a positive"),
        ('{"command": "get_status", "token": 1}', "token must be a string"),
        ('{"command": "get_status", "request_id": [1]}', "request_id must be"),
        ('{"command": "get_status", "request_id": true}', "request_id must be"),
        ('{"command": "get_status", "request_id": -9223372036854775809}', "request_id integer out"),
        ('{"command": "get_status", "request_id": 18446744073709551616}', "request_id integer out"),
    ],
)
def test_parse_rejects_bad_input_naming_the_problem(raw: str | bytes, expected: str) -> None:
    with pytest.raises(RequestError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        protocol.parse_request(raw)


def test_an_error_about_a_field_still_carries_the_request_id() -> None:
    with pytest.raises(RequestError) as caught:
        protocol.parse_request('{"command": "nope", "request_id": "r-1"}')
    assert caught.value.request_id == "r-1"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../secret.txt", "climbs out"),
        ("2026/../../secret.txt", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("2026\\11\\x.csv", "backslash"),
        ("2026/11/Week_4/27/152200.csv\x00.png", "NUL"),
        ("", "not a segment path"),
        ("2026//11/Week_4/27/152200.csv", "not a segment path"),
        ("./x.csv", "climbs out"),
        ("2026/11/Week_1/27/152200.csv", "week does not match"),
        ("secret.txt", "not a segment path"),
        ("x" * 300, "longer than"),
    ],
)
def test_filename_escapes_are_refused_before_any_path_is_built(name: str, expected: str) -> None:
    with pytest.raises(RequestError, match=expected):
        protocol.check_filename(name)


@given(st.text(max_size=200))
def test_parse_only_ever_raises_request_error_on_any_text(raw: str) -> None:
    try:
        protocol.parse_request(raw)
    except RequestError as exc:
        assert exc.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.sampled_from(sorted(protocol.COMMANDS)),
    st.dictionaries(
        st.sampled_from(
            ["filename", "max_points", "seconds", "max_rate_hz", "token", "request_id"]
        ),
        json_values,
        max_size=6,
    ),
)
def test_any_json_object_is_either_a_valid_request_or_a_request_error(
    command: str, fields: dict[str, Any]
) -> None:
    try:
        request = protocol.parse_request(json.dumps({"command": command, **fields}))
    except RequestError:
        return
    assert request.command == command
    if request.filename is not None:
        assert ".." not in request.filename.split("/")
        assert not request.filename.startswith("/")


def test_needs_token_matrix() -> None:
    assert not protocol.needs_token("start_collection", "", protect_reads=True)
    assert protocol.needs_token("start_collection", "s3cret", protect_reads=False)
    assert protocol.needs_token("export_all_csv_zip", "s3cret", protect_reads=False)
    assert not protocol.needs_token("get_status", "s3cret", protect_reads=False)
    assert not protocol.needs_token("subscribe_live", "s3cret", protect_reads=False)
    assert protocol.needs_token("get_status", "s3cret", protect_reads=True)


def test_token_and_signature_checks() -> None:
    assert protocol.token_matches("s3cret", "s3cret")
    assert not protocol.token_matches("s3cre", "s3cret")
    assert not protocol.token_matches(None, "s3cret")
    assert not protocol.token_matches("", "")
    sig = protocol.download_signature("s3cret", "export.zip")
    assert protocol.signature_matches(sig, "s3cret", "export.zip")
    assert not protocol.signature_matches(sig, "s3cret", "other.zip")
    assert not protocol.signature_matches(sig, "other-token", "export.zip")
    assert "s3cret" not in sig


def test_bearer_token() -> None:
    assert protocol.bearer_token("Bearer abc") == "abc"
    assert protocol.bearer_token("bearer  abc ") == "abc"
    assert protocol.bearer_token("Basic abc") is None
    assert protocol.bearer_token("Bearer") is None
    assert protocol.bearer_token(None) is None


def test_download_url_uses_the_host_the_browser_used() -> None:
    url = protocol.download_url("", "pump-7.plant:8765", "e.zip", "")
    assert url == "http://pump-7.plant:8765/exports/e.zip"
    assert protocol.download_url("", "[fe80::1]:8765", "e.zip", "ab") == (
        "http://[fe80::1]:8765/exports/e.zip?sig=ab"
    )


@pytest.mark.parametrize(
    "host",
    [None, "", "evil.example/phish?", "a b", "user@evil.example", "x" * 300, '"><script>', ":80"],
)
def test_download_url_is_relative_when_the_host_header_is_not_a_plain_host(
    host: str | None,
) -> None:
    assert protocol.download_url("", host, "e.zip", "ab") == "/exports/e.zip?sig=ab"


def test_download_url_prefers_the_configured_public_url() -> None:
    url = protocol.download_url("https://pump-7.example/wilo/", "evil.example", "e.zip", "")
    assert url == "https://pump-7.example/wilo/exports/e.zip"


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_second=10.0, burst=10.0, now=0.0)
    assert sum(bucket.allow(0.0) for _ in range(20)) == 10
    assert not bucket.allow(0.05)
    assert bucket.allow(0.1)
    # a long idle refills only up to the burst
    assert sum(bucket.allow(100.0) for _ in range(50)) == 10
    # a clock that goes backwards never mints tokens
    assert not bucket.allow(50.0)


@pytest.mark.parametrize(
    ("rate", "bucket"),
    [
        (None, 1),
        (800.0, 1),
        (5000.0, 1),
        (400.0, 4),
        (399.0, 8),
        (100.0, 16),
        (20.0, 128),
        (0.001, 4096),
    ],
)
def test_live_levels_are_powers_of_two_within_the_requested_rate(
    rate: float | None, bucket: int
) -> None:
    assert protocol.live_bucket_samples(rate) == bucket
    if rate is not None and bucket > 1 and bucket < protocol.MAX_BUCKET_SAMPLES:
        assert 2 * 800 / bucket <= rate < 2 * 800 / (bucket / 2)


def test_encode_is_compact_strict_json() -> None:
    assert protocol.encode({"type": "x", "p": Path("/a"), 1: 2}) == '{"type":"x","p":"/a","1":2}'
    assert protocol.encode({"v": float("nan"), "w": 9.80665}) == '{"v":null,"w":9.80665}'
    text = protocol.encode({"data": [{"timestamp": "t", "x": 0.1 + 0.2}]})
    assert json.loads(text) == {"data": [{"timestamp": "t", "x": 0.1 + 0.2}]}


class FakeView:
    """Records calls; the socket tests use the real Store."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def file_list(self) -> list[str]:
        return ["2026/11/Week_4/27/152300.csv", "2026/11/Week_4/27/152200.csv"]

    def folder_structure(self) -> dict[str, Any]:
        return {"2026": {}}

    def resolve(self, relative: str) -> Path:
        raise PathRejectedError(relative)

    def read_csv(self, relative: str, max_points: int) -> list[dict[str, Any]]:
        self.calls.append(("read_csv", (relative, max_points)))
        if relative.startswith("gone"):
            raise FileNotFoundError(relative)
        if relative.startswith("bad"):
            raise PathRejectedError(f"{relative} is not a retained segment")
        return [
            {
                "timestamp": "2026-11-27T15:22:00.000000Z",
                "acceleration": 9.8,
                "x": 0,
                "y": 0,
                "z": 9.8,
            }
        ]

    def recent(self, seconds: float, max_points: int) -> list[dict[str, Any]]:
        self.calls.append(("recent", (seconds, max_points)))
        return []

    def export_zip(self) -> ExportResult:
        raise NotImplementedError

    def export_path(self, filename: str) -> Path:
        raise PathRejectedError(filename)

    def status(self) -> StorageStatus:
        return StorageStatus(True, "", 2, None, 0, 0, 0, 0)


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def _record(self, name: str) -> None:
        self.calls.append(name)

    def start_collection(self) -> None:
        self._record("start_collection")

    def stop_collection(self) -> None:
        self._record("stop_collection")

    def pause_collection(self) -> None:
        self._record("pause_collection")

    def resume_collection(self) -> None:
        self._record("resume_collection")

    def status_data(self) -> dict[str, Any]:
        return {"connected": True, "running": True, "paused": False, "calls": len(self.calls)}

    def collection_state(self) -> tuple[bool, bool]:
        return True, False

    def health(self) -> tuple[bool, str]:
        return True, ""

    def sampler_stats(self) -> SamplerStats:
        return SamplerStats()


@pytest.fixture
def parts() -> tuple[FakeView, FakeControl, Dispatcher]:
    view, control = FakeView(), FakeControl()
    return view, control, Dispatcher(view, control, default_recent_seconds=7200.0)


def test_csv_data_echoes_the_filename_and_defaults_to_1000_points(parts: Any) -> None:
    view, _, dispatcher = parts
    reply = dispatcher.handle(Request("get_csv_data", request_id="a", filename="x/y.csv"))
    assert reply["type"] == "csv_data" and reply["filename"] == "x/y.csv"
    assert reply["request_id"] == "a" and len(reply["data"]) == 1
    assert view.calls == [("read_csv", ("x/y.csv", 1000))]


@pytest.mark.parametrize(
    ("name", "expected"), [("bad.csv", "filename rejected"), ("gone.csv", "not found")]
)
def test_csv_data_turns_store_refusals_into_request_errors(
    parts: Any, name: str, expected: str
) -> None:
    _, _, dispatcher = parts
    with pytest.raises(RequestError, match=expected) as caught:
        dispatcher.handle(Request("get_csv_data", request_id=3, filename=name))
    assert caught.value.request_id == 3


def test_recent_data_defaults_to_the_retention_window_and_3000_points(parts: Any) -> None:
    view, _, dispatcher = parts
    reply = dispatcher.handle(Request("get_recent_data"))
    assert reply == {"type": "recent_data", "data": [], "file_count": 2}
    dispatcher.handle(Request("get_recent_data", seconds=60.0, max_points=500))
    assert view.calls == [("recent", (7200.0, 3000)), ("recent", (60.0, 500))]


@pytest.mark.parametrize("command", sorted(protocol.CONTROL_COMMANDS))
def test_control_commands_call_the_service_and_answer_with_status(parts: Any, command: str) -> None:
    _, control, dispatcher = parts
    reply = dispatcher.handle(Request(command, request_id=1))
    assert control.calls == [command]
    assert reply == {"type": "status", "request_id": 1, "data": control.status_data()}


def test_lists_and_structure(parts: Any) -> None:
    _, _, dispatcher = parts
    assert dispatcher.handle(Request("get_file_list"))["files"][0].endswith("152300.csv")
    assert dispatcher.handle(Request("get_folder_structure")) == {
        "type": "folder_structure",
        "structure": {"2026": {}},
    }


@pytest.mark.parametrize("request_id", [-(2**63), 2**64 - 1])
def test_the_widest_integer_request_ids_are_kept_and_echoed(request_id: int) -> None:
    request = protocol.parse_request(f'{{"command": "get_status", "request_id": {request_id}}}')
    echoed = json.loads(protocol.encode(protocol.message("status", request.request_id)))
    assert echoed["request_id"] == request_id
