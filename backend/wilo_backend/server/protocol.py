"""The dashboard protocol without sockets: parse and validate requests, authorize, build replies."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from wilo_backend.model import OUTPUT_RATE_HZ, PathRejectedError, ReadingsView, ServiceControl
from wilo_backend.server.limits import valid_host
from wilo_backend.store.layout import check_relative

CONTROL_COMMANDS: Final = frozenset(
    {"start_collection", "stop_collection", "pause_collection", "resume_collection"}
)
EXPORT_COMMAND: Final = "export_all_csv_zip"
READ_COMMANDS: Final = frozenset(
    {
        "get_status",
        "get_file_list",
        "get_folder_structure",
        "get_csv_data",
        "get_recent_data",
        "subscribe_live",
        "unsubscribe_live",
    }
)
COMMANDS: Final = CONTROL_COMMANDS | READ_COMMANDS | {EXPORT_COMMAND}

DEFAULT_CSV_POINTS: Final = 1000
DEFAULT_RECENT_POINTS: Final = 3000
MAX_POINTS: Final = 100_000
# Used when the server is not told the retention window: "everything kept in memory".
ALL_RETAINED_SECONDS: Final = 1e9
MAX_REQUEST_ID_CHARS: Final = 200
# The reply echoes request_id and orjson writes 64-bit integers only: a bigger one made encoding
# the reply fail (fuzz-found: -9223372036854775809).
REQUEST_ID_INT_MIN: Final = -(2**63)
REQUEST_ID_INT_MAX: Final = 2**64 - 1
MAX_FILENAME_CHARS: Final = 255
FULL_RATE_HZ: Final = OUTPUT_RATE_HZ
# Coarsest live level: 4096 samples per bucket, ~0.4 points per second.
MAX_BUCKET_SAMPLES: Final = 4096

RequestId = str | int


class RequestError(Exception):
    """A request that gets an `error` reply; the connection stays up."""

    def __init__(self, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    """One validated request. Optional fields are None when the client left them out."""

    command: str
    request_id: RequestId | None = None
    token: str | None = None
    filename: str | None = None
    max_points: int | None = None
    seconds: float | None = None
    max_rate_hz: float | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every frame: json.loads() with an argument builds a new JSONDecoder per call,
# a tenth of the event loop's time per request in the abuse bench's expensive flood.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _decode(raw: str | bytes) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("invalid JSON: frame is not UTF-8 text") from None
    try:
        return _DECODER.decode(raw)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"invalid JSON: {exc}") from None


def _request_id(obj: Mapping[str, Any]) -> RequestId | None:
    value = obj.get("request_id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RequestError("request_id must be a string or an integer")
    if isinstance(value, str) and len(value) > MAX_REQUEST_ID_CHARS:
        raise RequestError(f"request_id longer than {MAX_REQUEST_ID_CHARS} characters")
    if isinstance(value, int) and not REQUEST_ID_INT_MIN <= value <= REQUEST_ID_INT_MAX:
        raise RequestError(
            f"request_id integer out of range: it must be between {REQUEST_ID_INT_MIN} "
            f"and {REQUEST_ID_INT_MAX}"
        )
    return value


def _optional_int(obj: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer between {low} and {high}")
    if not low <= value <= high:
        raise RequestError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _optional_positive(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{key} must be a positive number")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise RequestError(f"{key} must be a positive number, got {value!r}")
    return number


def check_filename(value: Any) -> str:
    """A segment path from get_file_list, or RequestError naming what is wrong.

    The hierarchy's own rule (store.layout) refuses '..', absolute paths, NUL bytes and
    backslashes before any path is built from client text; the store's resolve() then refuses
    symlinks that leave readings/ and files that are not retained.
    """
    if not isinstance(value, str):
        raise RequestError("filename must be a string (a path from get_file_list)")
    if len(value) > MAX_FILENAME_CHARS:
        raise RequestError(f"filename longer than {MAX_FILENAME_CHARS} characters")
    try:
        return check_relative(value)
    except PathRejectedError as exc:
        raise RequestError(f"filename rejected: {exc}") from None


def parse_request(raw: str | bytes, known: frozenset[str] = COMMANDS) -> Request:
    """Decode and validate one client frame; RequestError says what is wrong."""
    obj = _decode(raw)
    if not isinstance(obj, dict):
        raise RequestError(f"a request must be a JSON object, got {type(obj).__name__}")
    request_id = _request_id(obj)
    try:
        command = obj.get("command")
        if command is None:
            raise RequestError("missing field 'command'")
        if not isinstance(command, str):
            raise RequestError("command must be a string")
        if command not in known:
            shown = command if len(command) <= 64 else command[:64] + "…"
            raise RequestError(f"unknown command {shown!r}")
        token = obj.get("token")
        if token is not None and not isinstance(token, str):
            raise RequestError("token must be a string")
        filename = None
        if command == "get_csv_data":
            if "filename" not in obj:
                raise RequestError("get_csv_data needs a 'filename' (a path from get_file_list)")
            filename = check_filename(obj["filename"])
        return Request(
            command=command,
            request_id=request_id,
            token=token,
            filename=filename,
            max_points=_optional_int(obj, "max_points", 2, MAX_POINTS),
            seconds=_optional_positive(obj, "seconds"),
            max_rate_hz=_optional_positive(obj, "max_rate_hz"),
        )
    except RequestError as exc:
        exc.request_id = request_id
        raise


def needs_token(command: str, auth_token: str, protect_reads: bool) -> bool:
    """Control commands and exports need the token when one is set; reads only if protected."""
    if not auth_token:
        return False
    return protect_reads or command in CONTROL_COMMANDS or command == EXPORT_COMMAND


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty expected token never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def download_signature(auth_token: str, filename: str) -> str:
    """A per-file capability for the export URL, so the link never carries the token itself."""
    mac = hmac.new(auth_token.encode("utf-8"), b"export:" + filename.encode("utf-8"), "sha256")
    return mac.hexdigest()


def signature_matches(given: str | None, auth_token: str, filename: str) -> bool:
    if not given or not auth_token:
        return False
    return hmac.compare_digest(given.encode(), download_signature(auth_token, filename).encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def download_url(public_url: str, host_header: str | None, filename: str, sig: str) -> str:
    """server.public_url if set; else http://<Host> when Host is a plain host[:port]; else a URL
    relative to the server (the browser resolves it against the page), so a forged Host header
    never turns into a link elsewhere."""
    if public_url:
        base = public_url.rstrip("/")
    elif host_header is not None and valid_host(host_header.strip()):
        base = f"http://{host_header.strip()}"
    else:
        base = ""
    url = f"{base}/exports/{filename}"
    return f"{url}?sig={sig}" if sig else url


def message(kind: str, request_id: RequestId | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, **fields}
    if request_id is not None:
        out["request_id"] = request_id
    return out


def error_message(text: str, request_id: RequestId | None = None) -> dict[str, Any]:
    return message("error", request_id, message=text)


def encode(msg: Mapping[str, Any]) -> str:
    """Compact JSON (orjson: ~20x the stdlib on 3000-row replies); NaN becomes null, anything
    exotic (a Path) its string form."""
    return orjson.dumps(msg, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def encode_bytes(msg: Mapping[str, Any]) -> bytes:
    """encode() as UTF-8 bytes, for large replies sent as text frames without another copy."""
    return orjson.dumps(msg, default=str, option=orjson.OPT_NON_STR_KEYS)


class Dispatcher:
    """Answers the commands that are a plain call into the store or the service."""

    def __init__(
        self,
        view: ReadingsView,
        control: ServiceControl,
        default_recent_seconds: float = ALL_RETAINED_SECONDS,
    ) -> None:
        self._view = view
        self._control = control
        self._default_recent_seconds = default_recent_seconds
        self._handlers: dict[str, Callable[[Request], dict[str, Any]]] = {
            "get_status": self._status,
            "start_collection": self._control_command,
            "stop_collection": self._control_command,
            "pause_collection": self._control_command,
            "resume_collection": self._control_command,
            "get_file_list": self._file_list,
            "get_folder_structure": self._folder_structure,
            "get_csv_data": self._csv_data,
            "get_recent_data": self._recent_data,
        }

    @property
    def commands(self) -> frozenset[str]:
        """Every command a client may send: the dashboard's plus any registered ones."""
        return COMMANDS | frozenset(self._handlers)

    def register(self, command: str, handler: Callable[[Request], dict[str, Any]]) -> None:
        """Add a read-only command (e.g. analytics' get_features); its reply gets request_id."""
        if command in COMMANDS:
            raise ValueError(f"{command!r} is a built-in command")

        def with_request_id(request: Request) -> dict[str, Any]:
            reply = handler(request)
            return (
                {**reply, "request_id": request.request_id}
                if request.request_id is not None
                else reply
            )

        self._handlers[command] = with_request_id

    def handle(self, request: Request) -> dict[str, Any]:
        """The reply to `request`; RequestError for a refused file name."""
        return self._handlers[request.command](request)

    def status(self, request_id: RequestId | None = None) -> dict[str, Any]:
        return message("status", request_id, data=self._control.status_data())

    def _status(self, request: Request) -> dict[str, Any]:
        return self.status(request.request_id)

    def _control_command(self, request: Request) -> dict[str, Any]:
        action: Callable[[], None] = getattr(self._control, request.command)
        action()
        return self.status(request.request_id)

    def _file_list(self, request: Request) -> dict[str, Any]:
        return message("file_list", request.request_id, files=self._view.file_list())

    def _folder_structure(self, request: Request) -> dict[str, Any]:
        structure = self._view.folder_structure()
        return message("folder_structure", request.request_id, structure=structure)

    def _csv_data(self, request: Request) -> dict[str, Any]:
        assert request.filename is not None  # parse_request guarantees it
        points = request.max_points or DEFAULT_CSV_POINTS
        try:
            rows = self._view.read_csv(request.filename, points)
        except PathRejectedError as exc:
            raise RequestError(f"filename rejected: {exc}", request.request_id) from None
        except FileNotFoundError:
            raise RequestError(
                f"file not found: {request.filename!r} (it may have been rotated out)",
                request.request_id,
            ) from None
        return message("csv_data", request.request_id, filename=request.filename, data=rows)

    def _recent_data(self, request: Request) -> dict[str, Any]:
        seconds = request.seconds or self._default_recent_seconds
        points = request.max_points or DEFAULT_RECENT_POINTS
        rows = self._view.recent(seconds, points)
        file_count = self._view.status().file_count
        return message("recent_data", request.request_id, data=rows, file_count=file_count)


def live_rate_hz(bucket_samples: int) -> float:
    """Points per second a subscriber gets: every sample, or a min and a max per bucket."""
    return FULL_RATE_HZ if bucket_samples == 1 else 2 * FULL_RATE_HZ / bucket_samples


def live_bucket_samples(max_rate_hz: float | None) -> int:
    """Raw samples per min/max bucket for a subscriber's rate; 1 = every sample.

    A bucket yields two points (its min and its max), so b samples per bucket give 1600/b points
    per second. b is a power of two so that subscribers with similar rates share one level
    (and one encoding) instead of each getting their own.
    """
    if max_rate_hz is None or max_rate_hz >= FULL_RATE_HZ:
        return 1
    bucket = 4
    while 2 * FULL_RATE_HZ / bucket > max_rate_hz and bucket < MAX_BUCKET_SAMPLES:
        bucket *= 2
    return bucket


class TokenBucket:
    """Per-client request budget: `rate_per_second` sustained, bursts up to `burst`."""

    def __init__(self, rate_per_second: float, burst: float, now: float) -> None:
        self._rate = rate_per_second
        self._burst = burst
        self._tokens = burst
        self._last = now

    def allow(self, now: float) -> bool:
        """Spend one token if there is one; `now` is a monotonic time in seconds."""
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
