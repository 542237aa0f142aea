"""One WebSocket client's protocol state without sockets: frames and the time in, replies and
actions out (in the manner of websockets' ServerProtocol; app.py only moves the bytes).

A frame goes through two steps, as on the socket:

1. `Session.receive(frame, now)` when it is read: counted, rate limited, parsed and checked
   against the client's pending cap. Out comes an immediate reply (an error) or the parsed
   Request, which the I/O layer queues for the client's serial worker.
2. `Session.respond(request, now)` when the worker takes it: the token check, then the routing.
   Out comes a list of actions for the I/O layer: `Send` a reply, `Offload` a job to the worker
   pool (and hand its outcome to `offloaded()`), `StartExport` (and hand the result to
   `export_finished()`), `PushStatus` to the other readers after a control command.
   `done()` is called when the worker is through with the request, whatever happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from wilo_backend.config import ServerConfig
from wilo_backend.model import ExportResult
from wilo_backend.server import protocol
from wilo_backend.server.limits import AuthThrottle
from wilo_backend.server.live import LiveHub, Outbox
from wilo_backend.server.metrics import ServerCounters
from wilo_backend.server.protocol import (
    CONTROL_COMMANDS,
    EXPORT_COMMAND,
    Dispatcher,
    Request,
    RequestError,
    RequestId,
    TokenBucket,
)
from wilo_backend.server.workers import PoolBusyError

log = logging.getLogger("wilo_backend.server")

# Commands that read files or build large replies: they run on the bounded worker pool (reply
# encoding included) so that cheap commands, pushes, live frames and handshakes keep the loop.
EXPENSIVE_COMMANDS: Final = frozenset({"get_csv_data", "get_folder_structure", "get_recent_data"})
UNAUTHORIZED: Final = (
    "unauthorized: this command needs the server token "
    "(?token= in the URL, an 'Authorization: Bearer' header, or a 'token' field)"
)


class Authenticator:
    """The server's token and its wrong-token lockout, shared by every session and the HTTP side.

    `on_wrong(address)` is told of each wrong token (the socket layer logs it, rate-limited).
    """

    def __init__(
        self, auth_token: str, throttle: AuthThrottle, on_wrong: Callable[[str], None]
    ) -> None:
        self.auth_token = auth_token
        self._throttle = throttle
        self._on_wrong = on_wrong

    def check(self, address: str, now: float, *given: str | None) -> bool | float:
        """True if one of `given` is the token; False if wrong or none; while `address` is
        locked out after too many wrong ones: the seconds left (nothing is compared)."""
        offered = [g for g in given if g]
        if not offered:
            return False
        locked = self._throttle.locked_for(address, now)
        if locked:
            return locked
        if any(protocol.token_matches(g, self.auth_token) for g in offered):
            return True
        self._throttle.failed(address, now)
        self._on_wrong(address)
        return False


@dataclass
class SessionContext:
    """What every session of one server shares: settings, the commands, the live hub, counters."""

    config: ServerConfig
    dispatcher: Dispatcher
    hub: LiveHub
    auth: Authenticator
    counters: ServerCounters
    expensive: frozenset[str] = EXPENSIVE_COMMANDS
    commands: frozenset[str] = field(init=False)
    exports_running: int = 0

    def __post_init__(self) -> None:
        self.commands = self.dispatcher.commands

    def add_command(
        self,
        command: str,
        handler: Callable[[Request], dict[str, Any]],
        *,
        threaded: bool = False,
    ) -> None:
        self.dispatcher.register(command, handler)
        self.commands = self.dispatcher.commands
        if threaded:
            self.expensive = self.expensive | {command}

    def readers_only(self) -> bool:
        """Whether pushes go to authorized sessions only (reads are protected by the token)."""
        return bool(self.config.auth_token and self.config.protect_reads)


@dataclass(frozen=True, slots=True)
class Send:
    """Send this frame to the client."""

    frame: str | bytes


@dataclass(frozen=True, slots=True)
class Offload:
    """Run `job` on the worker pool, send what it returns; its exception goes to offloaded()."""

    request: Request
    job: Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class StartExport:
    """Build the ZIP export off the loop; its result or exception goes to export_finished()."""

    request_id: RequestId | None


@dataclass(frozen=True, slots=True)
class PushStatus:
    """Push the new status to every other reader (a control command changed it)."""


Action = Send | Offload | StartExport | PushStatus


# Refusals ('busy', 'rate limited') in a row after which a client whose queue is full is not
# read until one of its requests is through (or HOLD_SECONDS pass): its frames wait in its own
# socket, TCP slows it down, and nothing is lost. ('rate limited' alone is not held: answering
# it is cheap, and a hold on the loop's clock would ignore the injected one.) Read and
# refused one by one, the expensive flood's ~2,800 frames a second kept the event loop busy
# and a legitimate get_status waited 60-200 ms p50 behind them (bench abuse).
HOLD_AFTER_REFUSALS: Final = 8
HOLD_SECONDS: Final = 1.0


class Session:
    """One client's auth state, request budget, pending count and live outbox."""

    def __init__(
        self,
        context: SessionContext,
        address: str,
        *,
        authorized: bool,
        now: float,
        peer: str | None = None,
    ) -> None:
        config = context.config
        self.context = context
        # the lockout counts per address; log lines name the peer (address and port)
        self.address = address
        self.peer = peer or address
        self.authorized = authorized
        self.outbox = Outbox()
        # requests read and not yet answered: queued for this client's serial worker or running
        self.pending = 0
        # 'busy' and 'rate limited' answers since the last request it was allowed
        self.refused_in_a_row = 0
        self._bucket = TokenBucket(
            config.max_requests_per_second, max(1.0, config.max_requests_per_second), now
        )

    @property
    def reads_pushes(self) -> bool:
        """Whether this client gets status, new_file and event pushes."""
        return self.authorized or not self.context.readers_only()

    def opened(self) -> None:
        """The connection is up: a reader gets the status at once."""
        if self.reads_pushes:
            self.outbox.put_event("status", protocol.encode(self.context.dispatcher.status()))

    def closed(self) -> None:
        self.context.hub.unsubscribe(self.outbox)

    # --- step 1: a frame arrives ----------------------------------------------------------

    def receive(self, frame: str | bytes, now: float) -> Request | str:
        """Count a frame as it arrives: the Request to queue, or an immediate error reply."""
        counters = self.context.counters
        counters.requests_total += 1
        allowed = self._bucket.allow(now)
        try:
            request = protocol.parse_request(frame, self.context.commands)
        except RequestError as exc:
            counters.request_errors_total += 1
            if not allowed:
                return self._rate_limited(exc.request_id)
            return protocol.encode(protocol.error_message(exc.message, exc.request_id))
        if not allowed:
            return self._rate_limited(request.request_id)
        limit = self.context.config.max_pending_requests
        if self.pending >= limit:
            counters.busy_total += 1
            self.refused_in_a_row += 1
            return protocol.encode(
                protocol.error_message(
                    f"busy: {limit} requests of this client already queued or running "
                    "(server.max_pending_requests); wait for their replies",
                    request.request_id,
                )
            )
        self.pending += 1
        self.refused_in_a_row = 0
        return request

    def read_hold(self) -> float | None:
        """None: read the next frame now. Else the client kept sending into refusals with its
        queue full: read on once a request of its is through (done()), at most these seconds."""
        full = self.pending >= self.context.config.max_pending_requests
        return HOLD_SECONDS if full and self.refused_in_a_row >= HOLD_AFTER_REFUSALS else None

    def _rate_limited(self, request_id: RequestId | None) -> str:
        self.refused_in_a_row += 1
        self.context.counters.rate_limited_total += 1
        limit = self.context.config.max_requests_per_second
        return protocol.encode(
            protocol.error_message(
                f"rate limited: at most {limit:g} requests per second", request_id
            )
        )

    # --- step 2: the worker takes it ------------------------------------------------------

    def respond(self, request: Request, now: float) -> list[Action]:
        """What to do for one queued request, in order."""
        refusal = self._refuse_unauthorized(request, now)
        if refusal is not None:
            return [Send(refusal)]
        context = self.context
        rid = request.request_id
        command = request.command
        if command == "subscribe_live":
            sub = context.hub.subscribe(self.outbox, request.max_rate_hz)
            reply = protocol.message(
                "live_subscribed",
                rid,
                rate_hz=sub.rate_hz,
                bucket_samples=sub.bucket_samples,
                frame_hz=context.config.live_frame_hz,
            )
            return [Send(protocol.encode(reply))]
        if command == "unsubscribe_live":
            context.hub.unsubscribe(self.outbox)
            reply = protocol.message(
                "live_unsubscribed", rid, frames_dropped=self.outbox.dropped_frames
            )
            return [Send(protocol.encode(reply))]
        if command == EXPORT_COMMAND:
            return [self._start_export(rid)]
        if command in CONTROL_COMMANDS:
            # who stopped collection, and when: the journal must be able to tell
            log.info("%s requested by %s", command, self.peer)
        if command in context.expensive:
            # encoded on the worker too, as the UTF-8 bytes of the text frame: a 100,000-point
            # reply is megabytes, and decoding and re-encoding it would cost the loop
            dispatcher = context.dispatcher
            return [Offload(request, lambda: protocol.encode_bytes(dispatcher.handle(request)))]
        try:
            reply = context.dispatcher.handle(request)
        except Exception as exc:
            return [Send(self.offloaded(request, exc))]
        actions: list[Action] = [Send(protocol.encode(reply))]
        if command in CONTROL_COMMANDS:
            actions.append(PushStatus())
        return actions

    def offloaded(self, request: Request, error: BaseException) -> str:
        """The error reply for a request whose work raised `error`."""
        counters = self.context.counters
        rid = request.request_id
        if isinstance(error, PoolBusyError):
            counters.busy_total += 1
            return protocol.encode(protocol.error_message(str(error), rid))
        counters.request_errors_total += 1
        if isinstance(error, RequestError):
            return protocol.encode(protocol.error_message(error.message, rid))
        log.error("%s failed", request.command, exc_info=error)
        return protocol.encode(protocol.error_message(f"{request.command} failed: {error}", rid))

    def done(self) -> None:
        """The worker is through with a request received earlier."""
        self.pending -= 1

    def _refuse_unauthorized(self, request: Request, now: float) -> str | None:
        config = self.context.config
        if not protocol.needs_token(request.command, config.auth_token, config.protect_reads):
            return None
        rid = request.request_id
        counters = self.context.counters
        verdict = self.context.auth.check(self.address, now, request.token)
        if verdict is True:
            self.authorized = True
        elif verdict is not False:
            counters.unauthorized_total += 1
            return protocol.encode(
                protocol.error_message(
                    f"too many wrong tokens from {self.address}: try again in "
                    f"{float(verdict):.0f} s",
                    rid,
                )
            )
        if self.authorized:
            return None
        counters.unauthorized_total += 1
        if request.command == EXPORT_COMMAND:
            return protocol.encode(protocol.message("zip_export", rid, error=UNAUTHORIZED))
        return protocol.encode(protocol.error_message(UNAUTHORIZED, rid))

    # --- exports --------------------------------------------------------------------------

    def _start_export(self, rid: RequestId | None) -> Action:
        context = self.context
        limit = context.config.max_concurrent_exports
        if context.exports_running >= limit:
            context.counters.export_errors_total += 1
            return Send(
                protocol.encode(
                    protocol.message(
                        "zip_export",
                        rid,
                        error=f"{limit} export(s) already running; try again shortly",
                    )
                )
            )
        context.exports_running += 1
        return StartExport(rid)

    def export_finished(
        self,
        rid: RequestId | None,
        outcome: ExportResult | BaseException,
        host_header: str | None,
    ) -> str:
        """The zip_export reply once the export started by StartExport has its outcome."""
        context = self.context
        context.exports_running -= 1
        counters = context.counters
        if isinstance(outcome, PoolBusyError):
            counters.busy_total += 1
            return protocol.encode(protocol.message("zip_export", rid, error=str(outcome)))
        if isinstance(outcome, BaseException):
            counters.export_errors_total += 1
            log.error("export failed", exc_info=outcome)
            return protocol.encode(
                protocol.message("zip_export", rid, error=f"export failed: {outcome}")
            )
        counters.exports_total += 1
        token = context.config.auth_token
        sig = protocol.download_signature(token, outcome.filename) if token else ""
        url = protocol.download_url(
            context.config.public_url, host_header, quote(outcome.filename), sig
        )
        return protocol.encode(
            protocol.message(
                "zip_export",
                rid,
                download_url=url,
                filename=outcome.filename,
                file_count=outcome.file_count,
            )
        )
