"""The socket layer: websockets connections, HTTP endpoints, timers (decisions: protocol.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import json
import logging
import os
import resource
import socket
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import parse_qs, quote, unquote

from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from wilo_backend.config import ServerConfig
from wilo_backend.model import (
    ExportResult,
    PathRejectedError,
    ReadingsView,
    SampleBatch,
    ServiceControl,
)
from wilo_backend.release import RUNNING_RELEASE
from wilo_backend.server import protocol
from wilo_backend.server.limits import (
    AuthThrottle,
    ConnectionGate,
    LogLimiter,
    open_listener_warning,
    request_credentials,
)
from wilo_backend.server.listener import Accepted, AcceptLoop, Refusals, listening_sockets
from wilo_backend.server.live import LiveHub
from wilo_backend.server.metrics import CONTENT_TYPE, ServerCounters, render_metrics
from wilo_backend.server.protocol import Dispatcher
from wilo_backend.server.session import (
    UNAUTHORIZED,
    Authenticator,
    Offload,
    PushStatus,
    Send,
    Session,
    SessionContext,
    StartExport,
)
from wilo_backend.server.workers import BoundedPool
from wilo_backend.web import static_file

log = logging.getLogger("wilo_backend.server")

# Descriptors kept out of the connection cap: the store's open segments, feature files,
# exports, the sampler's pipes and shared memory, the journal socket, libraries (~40 in use).
STORE_RESERVED_FDS: Final = 256
EARLY_FRAME_FRACTION: Final = 0.8
# Connections the kernel queues before we accept them: not our descriptors until accepted, and
# each accepted one meets the gate at once (listener.py). At 512 a flood's bursts (1,000 idle
# sockets reconnecting together) overflowed the queue: the kernel dropped the final ACK of a
# token holder's connect, and its request waited for the 1 s / 3 s SYN-ACK retransmissions
# (TcpExtListenOverflows). Linux caps it at net.core.somaxconn (4096 on bookworm).
LISTEN_BACKLOG: Final = 4096
# Refused sockets that may wait (at most 1 s) for their client to close first (listener.py
# Refusals): their descriptors come out of the connection budget.
REFUSALS_LINGERING: Final = 256
# Sockets accepted per wake-up of the listener: then the loop's other callbacks get their turn.
ACCEPTS_PER_WAKEUP: Final = 256
GIL_SWITCH_INTERVAL_SECONDS: Final = 0.001
# Headers this server reads: a second copy is a malformed (or smuggling) request, not a choice.
SINGLE_HEADERS: Final = (
    "Host",
    "Authorization",
    "Origin",
    "Upgrade",
    "Content-Length",
    "Transfer-Encoding",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
)
# A client-supplied detail quoted in a log line or reply is cut to this many characters.
QUOTE_CHARS: Final = 80


def _short(text: object) -> str:
    value = repr(str(text))
    return value if len(value) <= QUOTE_CHARS else value[: QUOTE_CHARS - 4] + "...'"


def _peer_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def _shorten_gil_switch_interval() -> None:
    """The event loop waits up to the GIL switch interval each time it wakes while a worker
    computes. At CPython's 5 ms, a flood of expensive commands (50 clients, one worker) held a
    legitimate get_status at 17 ms p50; at 1 ms, 2.4 ms (bench abuse, same load)."""
    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_SECONDS:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)


class _Connection(ServerConnection):
    """One admitted socket's connection; the server's gate counts it from accept (listener.py)
    until it is closed.

    Dropped if its HTTP request does not arrive within server.request_timeout_seconds; answered
    400 (one short, rate-limited log line) if the request cannot be parsed; HEAD is served as GET
    without the body.
    """

    owner: WiloServer  # set on the per-server subclass made in WiloServer.start()
    accepted: Accepted  # set by WiloServer._new_connection
    head_request = False
    authorized = False
    _first_data = True
    _answered = False
    _request_deadline: asyncio.TimerHandle | None = None

    @property
    def peer(self) -> str:
        return self.accepted.address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.accepted.dropped:  # evicted while its connection was being made
            self.transport.abort()
            return
        # Cancelled when the request arrives or the connection closes: a pending timer holds the
        # whole connection (parser, buffers, a failed handshake's traceback) until it fires, and a
        # flood of short connections (~2,500/s in the abuse bench) then held ~8,000 closed ones.
        self._request_deadline = self.loop.call_at(
            self.accepted.accepted_at + self.owner.config.request_timeout_seconds,
            self._abort_without_request,
        )
        if self.accepted.preread:  # read while it was being refused (WiloServer._rescue)
            request, self.accepted.preread = self.accepted.preread, b""
            self.data_received(request)

    def _abort_without_request(self) -> None:
        if self.request is None:
            self.transport.abort()

    def _cancel_request_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_deadline()
        self.owner.released(self.accepted)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._first_data:
            self._first_data = False
            # websockets parses GET only; HEAD is the same request without a body in the answer.
            if data.startswith(b"HEAD "):
                self.head_request = True
                data = b"GET " + data[5:]
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        if self.request is None and isinstance(event, Request):
            self._cancel_request_deadline()
            self.owner.request_arrived(self.accepted)
        super().process_event(event)

    def send_data(self) -> None:
        # The request could not be parsed: websockets would only half-close. Answer 400 first,
        # before that end-of-stream goes out.
        exc = self.protocol.handshake_exc
        if self.request is None and exc is not None and not self._answered:
            self._answered = True
            cause = exc.__cause__
            if cause is not None and not isinstance(cause, EOFError):
                self.owner.bad_request(self, f"malformed HTTP request: {_short(cause)}")
        super().send_data()

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        # A client error (closed early, malformed request, bad WebSocket headers) is already
        # answered and logged in one line: websockets would log a traceback at ERROR for it.
        with contextlib.suppress(InvalidHandshake, ConnectionClosed):
            await super().handshake(*args, **kwargs)


class _Server(Server):
    """websockets' Server over an asyncio server that never accepts by itself (listener.py
    does): it serves for as long as it is not closed."""

    def is_serving(self) -> bool:
        return self.close_task is None


@dataclass(eq=False)
class _Client:
    """A WebSocket connection and its protocol session (session.py decides, this moves bytes)."""

    connection: ServerConnection
    session: Session
    # requests the session accepted, waiting for this client's serial worker
    queue: asyncio.Queue[protocol.Request] = field(default_factory=asyncio.Queue)
    # set each time one of its requests is through: a held reader may read on (Session.read_hold)
    request_done: asyncio.Event = field(default_factory=asyncio.Event)


def _json_response(status: http.HTTPStatus, body: dict[str, Any]) -> Response:
    return _response(status, json.dumps(body).encode(), "application/json")


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _text_response(status: http.HTTPStatus, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


def _not_an_http_answer(record: logging.LogRecord) -> bool:
    """websockets logs every response given instead of a handshake as "connection rejected":
    /healthz, /metrics, the page and downloads are answers, not rejections. Real refusals
    (too many clients, bad token) are counted in /metrics by the server itself."""
    return not str(record.msg).startswith("connection rejected")


logging.getLogger("websockets.server").addFilter(_not_an_http_answer)


def _peer(connection: ServerConnection) -> str:
    """The client's address as host:port, for log lines."""
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


class WiloServer:
    """WebSocket protocol (SPEC §5) and HTTP (/healthz, /metrics, /exports/) on one port."""

    def __init__(
        self,
        config: ServerConfig,
        view: ReadingsView,
        control: ServiceControl,
        *,
        default_recent_seconds: float = protocol.ALL_RETAINED_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._view = view
        self._control = control
        self._clock = clock
        self._dispatcher = Dispatcher(view, control, default_recent_seconds)
        self._hub = LiveHub()
        self._counters = ServerCounters()
        self._auth = Authenticator(
            config.auth_token,
            AuthThrottle(config.max_auth_failures_per_minute),
            lambda address: self._client_log("auth_failed", "wrong token from %s", address),
        )
        self._sessions = SessionContext(
            config, self._dispatcher, self._hub, self._auth, self._counters
        )
        self._clients: set[_Client] = set()
        self._admitted: set[ServerConnection] = set()
        # a live client sends its request as soon as the loop reads its socket: a third of the
        # request timeout (1 s by default) is far beyond that, even on a loaded machine
        self._gate: ConnectionGate[Accepted] = ConnectionGate(
            config.max_connections,
            config.max_connections_per_address,
            config.request_timeout_seconds / 3,
        )
        self._log_limiter = LogLimiter()
        self._pool = BoundedPool(config.expensive_workers, config.expensive_queue)
        # exports take seconds (mostly zlib and file reads): on their own bounded threads they
        # never hold the data commands' worker
        self._export_pool = BoundedPool(config.max_concurrent_exports, 0)
        self._allowed_origins = frozenset(
            o.lower() for o in config.allowed_origins.replace(",", " ").split()
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._accept_loops: list[AcceptLoop] = []
        self._refusals: Refusals | None = None
        # admitted sockets waiting for their first byte (no connection object yet; their
        # reader and timer hold them, so each leaves this set once it stops waiting)
        self._waiting: weakref.WeakSet[Accepted] = weakref.WeakSet()
        self._connection_class: type[_Connection] = _Connection
        self.port: int | None = None
        self._last_flush = clock()
        self._metrics_sources: list[Callable[[], str]] = []
        self._live_fields: Callable[[], str] | None = None

    # --- the service's side -----------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        return self._config

    async def start(self) -> int:
        """Bind config.host:config.port; returns the bound port (an ephemeral one for port 0)."""
        self._reserve_descriptors()
        _shorten_gil_switch_interval()
        self._warn_if_open()
        self._connection_class = type("_BoundConnection", (_Connection,), {"owner": self})
        # Our own accept loop (listener.py) in front of websockets' Server: the same objects
        # websockets.serve() would make, but only for sockets the gate admits.
        self._refusals = Refusals(
            REFUSALS_LINGERING, rescue=self._rescue if self._config.auth_token else None
        )
        listening = listening_sockets(self._config.host, self._config.port, LISTEN_BACKLOG)
        self._accept_loops = [
            AcceptLoop(sock, ACCEPTS_PER_WAKEUP, self._admit, self._connect) for sock in listening
        ]
        try:
            self._server = _Server(
                self._handle_connection, process_request=self._process_request, open_timeout=None
            )
            # websockets' Server closes through an asyncio server: it holds the first socket
            # (websockets logs "server listening on" for it); stop() closes the others.
            loop = asyncio.get_running_loop()
            self._server.wrap(
                await loop.create_server(asyncio.Protocol, sock=listening[0], start_serving=False)
            )
        except BaseException:
            for accept_loop in self._accept_loops:
                accept_loop.close()
            self._accept_loops = []
            raise
        for accept_loop in self._accept_loops:
            accept_loop.start()
        # The store's rings and index are built by now and live as long as the process:
        # moving them out of the collector's generations keeps full collections (tens of ms
        # with millions of objects) off the request and live paths.
        gc.freeze()
        self._spawn(self._frame_loop())
        self._spawn(self._status_loop())
        port = int(next(iter(self._server.sockets)).getsockname()[1])
        self.port = port
        # No line of our own: websockets logs "server listening on ..." and the service's
        # start-up line names the port; a third would say it twice more.
        return port

    async def stop(self) -> None:
        """Close every connection and the listening socket; cancel the timers."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for accept_loop in self._accept_loops:
            accept_loop.stop()
        # the first listening socket is the asyncio server's: websockets' close() closes it
        for accept_loop in self._accept_loops[1:]:
            accept_loop.close()
        self._accept_loops = []
        if self._refusals is not None:
            self._refusals.close()
        for key in list(self._waiting):
            key.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._pool.shutdown()
        self._export_pool.shutdown()

    def _reserve_descriptors(self) -> None:
        """Raise the soft descriptor limit to the hard one and keep STORE_RESERVED_FDS and
        REFUSALS_LINGERING of it out of the connection cap: a connection flood cannot take the
        store's descriptors.

        Every accepted socket meets the gate before the next accept (listener.py), so at most
        the cap, the refusals waiting for their request and one more are open at once, whatever
        the listen backlog holds."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
        if soft == resource.RLIM_INFINITY:
            return
        room = max(8, soft - STORE_RESERVED_FDS - REFUSALS_LINGERING)
        if self._gate.max_connections > room:
            log.warning(
                "server.max_connections = %d does not fit the descriptor limit (%d, %d kept for "
                "the store and refusals): at most %d connections at once",
                self._gate.max_connections,
                soft,
                STORE_RESERVED_FDS + REFUSALS_LINGERING,
                room,
            )
            self._gate.max_connections = room
            self._gate.max_per_address = min(self._gate.max_per_address, room)

    def _warn_if_open(self) -> None:
        warning = open_listener_warning(self._config.host, self._config.auth_token)
        if warning:
            log.warning("%s", warning)

    # --- connection accounting (called by _Connection) -------------------------------------

    def _admit(self, sock: socket.socket, address: str) -> Accepted | None:
        """The gate's verdict on a socket just accepted: its key, or None once refused (503)."""
        key = Accepted(sock, address)
        admission = self._gate.admit(key, address, self._clock())
        if admission.evict is not None:
            self._counters.reject("idle_evicted")
            admission.evict.abort()
        if admission.refused is None:
            return key
        self._counters.reject(admission.refused)
        self._client_log(
            admission.refused,
            "refused a connection from %s: server.%s reached",
            address,
            admission.refused,
        )
        limit = getattr(self._config, admission.refused)
        body = f"too many connections (server.{admission.refused} = {limit})\n".encode()
        assert self._refusals is not None  # made in start(), before the first accept
        self._refusals.refuse(sock, _raw_response(503, "Service Unavailable", body))
        return None

    def _rescue(self, sock: socket.socket, request: bytes) -> bool:
        """A socket refused at the cap whose request carries the token gets in after all
        (ConnectionGate.admit_authorized): the token is checked before a slot is taken, so
        idle strangers cannot keep the operator out. A wrong token counts as a failed attempt
        of its address, as on an admitted socket."""
        credentials = request_credentials(request)
        if credentials is None:
            return False
        given, authorization = credentials
        try:
            address = str(sock.getpeername()[0])
        except OSError:  # the client is gone
            return False
        now = self._clock()
        bearer = protocol.bearer_token(authorization)
        if self._auth.check(address, now, given, bearer) is not True:
            return False
        key = Accepted(sock, address, preread=request)
        admission = self._gate.admit_authorized(key, address, now)
        if admission.refused is not None:
            return False
        if admission.evict is not None:
            self._counters.reject("idle_evicted")
            admission.evict.abort()
        self._counters.connections_rescued_total += 1
        self._connect(key)
        return True

    def _connect(self, key: Accepted) -> None:
        """Its connection, once its request has begun to arrive (at once for a rescued one,
        whose request was read while it was being refused)."""
        loop = asyncio.get_running_loop()
        key.accepted_at = loop.time()
        if key.preread:
            self._spawn(self._make_connection(key))
            return

        def ready() -> None:
            self._waiting.discard(key)
            self._spawn(self._make_connection(key))

        def expired() -> None:
            self._waiting.discard(key)
            self._gate.release(key)

        key.wait_for_request(key.accepted_at + self._config.request_timeout_seconds, ready, expired)
        self._waiting.add(key)

    async def _make_connection(self, key: Accepted) -> None:
        if key.dropped:
            return  # evicted before its turn; the gate has forgotten it
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: self._new_connection(key), key.sock
            )
        except OSError:
            self._gate.release(key)
            key.sock.close()

    def _new_connection(self, key: Accepted) -> _Connection:
        """What websockets.serve() makes per socket, with this server's settings."""
        assert self._server is not None
        connection = self._connection_class(
            ServerProtocol(max_size=self._config.max_frame_bytes),
            self._server,
            max_queue=16,
        )
        connection.accepted = key
        key.connection = connection
        return connection

    def request_arrived(self, key: Accepted) -> None:
        self._gate.request_arrived(key)

    def released(self, key: Accepted) -> None:
        self._gate.release(key)

    def bad_request(self, connection: _Connection, reason: str) -> None:
        """Answer 400 on the raw socket (the request never parsed) and log one short line."""
        self._counters.reject("bad_request")
        self._client_log(
            "bad_request", "bad request from %s: %s; answered 400", connection.peer, reason
        )
        body = f"bad request: {reason}\n".encode("utf-8", "replace")
        connection.transport.write(_raw_response(400, "Bad Request", body))

    def _client_log(self, kind: str, fmt: str, *args: object) -> None:
        """One WARNING per client error, at most LogLimiter.burst of a kind a minute."""
        write, suppressed = self._log_limiter.allow(kind, self._clock())
        if write:
            more = f" ({suppressed} more like this not logged)" if suppressed else ""
            log.warning(fmt + more, *args)

    def publish(self, batch: SampleBatch) -> None:
        """Queue a batch for live subscribers; frames go out as soon as one is due."""
        self._hub.publish(batch)
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        # A frame leaves with the batch that makes it due rather than on the next timer tick:
        # that saves up to a frame period of latency. EARLY_FRAME_FRACTION keeps ~live_frame_hz
        # when batches arrive at about the frame rate with jitter.
        now = self._clock()
        if not self._hub.pending_samples:
            return  # an empty tick must not delay the next batch's frame
        if now - self._last_flush >= EARLY_FRAME_FRACTION / self._config.live_frame_hz:
            self._last_flush = now
            try:
                self._hub.flush(self._live_fields() if self._live_fields else "")
            except Exception:
                log.exception("live frame failed; subscribers miss this frame")

    def notify_new_file(self, filename: str, total_files: int) -> None:
        text = protocol.encode(
            protocol.message("new_file", filename=filename, total_files=total_files)
        )
        for client in self._readers():
            client.session.outbox.put_event("new_file", text)

    def notify_event(self, kind: str, message: dict[str, Any]) -> None:
        """Push a message (e.g. analytics' `alert`) to every client allowed to read."""
        text = protocol.encode(message)
        for client in self._readers():
            client.session.outbox.put_event(kind, text)

    def add_metrics(self, render: Callable[[], str]) -> None:
        """Append another source's Prometheus text (whole lines) to GET /metrics."""
        self._metrics_sources.append(render)

    def set_live_fields(self, fields: Callable[[], str]) -> None:
        """`fields()` is asked at every live frame for '"name":<json>,' to include ('' = none)."""
        self._live_fields = fields

    def notify_status(self, exclude: _Client | None = None) -> None:
        readers = [client for client in self._readers() if client is not exclude]
        if readers:  # the status is not gathered and encoded for nobody
            text = protocol.encode(self._dispatcher.status())
            for client in readers:
                client.session.outbox.put_event("status", text)

    @property
    def live_subscribers(self) -> int:
        """Clients subscribed to live_data now (the service skips publishing for none)."""
        return self._hub.subscriber_count

    def add_command(
        self,
        command: str,
        handler: Callable[[protocol.Request], dict[str, Any]],
        *,
        threaded: bool = False,
    ) -> None:
        """Serve another read-only command (same validation, auth, rate limit, request_id).

        `handler` gets the parsed Request (its seconds/max_points/... fields) and returns the
        reply; `threaded` runs it on the bounded worker pool when it may take more than a
        millisecond.
        """
        self._sessions.add_command(command, handler, threaded=threaded)

    def backlog_bytes(self) -> list[int]:
        """Per client: bytes waiting in its outbox plus its socket's write buffer."""
        return [
            c.session.outbox.queued_bytes + c.connection.transport.get_write_buffer_size()
            for c in self._clients
        ]

    @property
    def counters(self) -> ServerCounters:
        self._counters.clients = len(self._clients)
        self._counters.live_subscribers = self._hub.subscriber_count
        live = self._hub.counters
        self._counters.live_frames_encoded_total = live.frames_encoded
        self._counters.live_frames_dropped_total = live.frames_dropped
        self._counters.live_samples_overrun_total = live.samples_overrun
        return self._counters

    # --- timers ---------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _frame_loop(self) -> None:
        """Sends what publish() left pending when batches come slower than frames."""
        period = 1.0 / self._config.live_frame_hz
        while True:
            await self._hub.wait_for_subscribers()
            await asyncio.sleep(period)
            self._flush_if_due()

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.status_interval_seconds)
            try:
                self.notify_status()
            except Exception:
                log.exception("status push failed; retrying at the next interval")

    # --- HTTP -------------------------------------------------------------------------------

    def _readers(self) -> list[_Client]:
        """Clients allowed to receive pushes (all of them unless reads are protected)."""
        return [c for c in self._clients if c.session.reads_pushes]

    def _handshake_authorized(self, connection: ServerConnection, request: Request) -> bool:
        if not self._config.auth_token:
            return True
        query = parse_qs(request.path.partition("?")[2])
        given = query.get("token", [None])[0]
        bearer = protocol.bearer_token(request.headers.get("Authorization"))
        address = _peer_address(connection.transport)
        return self._auth.check(address, self._clock(), given, bearer) is True

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """A browser's Origin: listed in server.allowed_origins, or the very host it asked."""
        origin = origin.strip().lower()
        if origin in self._allowed_origins:
            return True
        scheme, _, rest = origin.partition("://")
        return scheme in ("http", "https") and host is not None and rest == host.strip().lower()

    def _open_connections(self) -> int:
        self._admitted = {c for c in self._admitted if c.protocol.state is not State.CLOSED}
        return len(self._admitted)

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        try:
            response = await self._route(connection, request)
        except Exception:
            # our bug, not the client's: a traceback, but never one per request of a flood
            if self._log_limiter.allow("route_failed", self._clock())[0]:
                log.exception("HTTP request for %s failed", _short(request.path))
            return _text_response(http.HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        if response is not None and getattr(connection, "head_request", False):
            return replace(response, body=b"")  # Content-Length stays that of the GET
        return response

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        for name in SINGLE_HEADERS:
            if len(request.headers.get_all(name)) > 1:
                self._counters.reject("bad_request")
                self._client_log(
                    "bad_request",
                    "bad request from %s: duplicate %s header; answered 400",
                    _peer_address(connection.transport),
                    name,
                )
                return _text_response(
                    http.HTTPStatus.BAD_REQUEST, f"bad request: duplicate {name} header\n"
                )
        path = request.path.partition("?")[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return self._admit_websocket(connection, request)
        if path == "/healthz":
            healthy, reason = self._control.health()
            running, paused = self._collection_state()
            health = {
                "status": "ok" if healthy else "unhealthy",
                "reason": reason if not healthy else "ok",
                "collecting": running and not paused,
                "running": running,
                "paused": paused,
                # the deploy's health step waits for the release it switched to
                "release": RUNNING_RELEASE,
            }
            status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
            return _json_response(status, health)
        if path == "/metrics":
            if self._config.protect_reads and not self._handshake_authorized(connection, request):
                return _text_response(http.HTTPStatus.UNAUTHORIZED, UNAUTHORIZED + "\n")
            running, paused = self._collection_state()
            body = render_metrics(
                self._control.sampler_stats(),
                self._view.status(),
                self.counters,
                collecting=running and not paused,
                paused=paused,
            )
            body += "".join(render() for render in self._metrics_sources)
            return _response(http.HTTPStatus.OK, body.encode(), CONTENT_TYPE)
        if path.startswith("/exports/"):
            return await self._download(connection, request, unquote(path[len("/exports/") :]))
        page = static_file(path)
        if page is not None:
            # Open even with protect_reads: the page is code from the package, no readings; the
            # WebSocket it opens carries the token (?token= on the page URL) and is checked.
            # Its app.js/style.css are fetched without the query string, so a check here would
            # break the page for the very users who have the token.
            return _response(http.HTTPStatus.OK, page[0], page[1])
        return _text_response(http.HTTPStatus.NOT_FOUND, f"not found: {_short(path)}\n")

    def _admit_websocket(self, connection: ServerConnection, request: Request) -> Response | None:
        if getattr(connection, "head_request", False):
            return _text_response(http.HTTPStatus.BAD_REQUEST, "bad request: HEAD upgrade\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host")):
            self._counters.reject("origin")
            self._client_log(
                "origin",
                "refused a WebSocket from %s: Origin %s not in server.allowed_origins",
                _peer_address(connection.transport),
                _short(origin),
            )
            return _text_response(
                http.HTTPStatus.FORBIDDEN,
                "origin not allowed: add it to server.allowed_origins\n",
            )
        authorized = self._handshake_authorized(connection, request)
        limit = self._config.max_clients
        if self._config.auth_token and not authorized:
            # slots kept for the operator: idle strangers cannot lock the token holder out
            limit -= self._config.reserved_authorized_clients
        if self._open_connections() >= limit:
            self._counters.reject("max_clients")
            return _text_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many clients (server.max_clients = {self._config.max_clients}"
                + ("" if authorized else ", some kept for clients with the token")
                + ")\n",
            )
        setattr(connection, "authorized", authorized)  # noqa: B010 (a _Connection attribute)
        self._admitted.add(connection)
        return None

    def _collection_state(self) -> tuple[bool, bool]:
        """(running, paused) as the status reply says them, without gathering the rest of it."""
        return self._control.collection_state()

    async def _download(
        self, connection: ServerConnection, request: Request, filename: str
    ) -> Response:
        """Stream an export with sendfile, then close: the body never sits in memory."""
        token = self._config.auth_token
        if token:
            sig = parse_qs(request.path.partition("?")[2]).get("sig", [None])[0]
            if not (
                protocol.signature_matches(sig, token, filename)
                or self._handshake_authorized(connection, request)
            ):
                self._counters.unauthorized_total += 1
                return _text_response(http.HTTPStatus.UNAUTHORIZED, UNAUTHORIZED + "\n")
        try:
            if "/" in filename or "\\" in filename or "\x00" in filename:
                raise PathRejectedError(f"not an export name: {filename!r}")
            path = self._view.export_path(filename)
            file = path.open("rb")
        except (PathRejectedError, OSError):
            return _text_response(http.HTTPStatus.NOT_FOUND, "export not found (expired?)\n")
        transport = connection.transport
        with file:
            size = os.fstat(file.fileno()).st_size
            quoted = quote(filename)
            head = (
                "HTTP/1.1 200 OK\r\n"
                "Content-Type: application/zip\r\n"
                f"Content-Length: {size}\r\n"
                f'Content-Disposition: attachment; filename="{quoted}"; '
                f"filename*=UTF-8''{quoted}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n"
            )
            transport.write(head.encode("latin-1"))
            try:
                if not getattr(connection, "head_request", False):
                    await asyncio.get_running_loop().sendfile(transport, file, 0, size)
                    self._counters.downloads_total += 1
            except (OSError, RuntimeError) as exc:
                log.info("export download of %s cut short: %s", filename, exc)
                transport.abort()
        # The response is complete on the wire; closing now makes websockets' own response
        # below a no-op (asyncio drops writes to a closed transport).
        transport.close()
        return _response(http.HTTPStatus.OK, b"", "application/zip")

    # --- WebSocket --------------------------------------------------------------------------

    async def _handle_connection(self, connection: ServerConnection) -> None:
        session = Session(
            self._sessions,
            _peer_address(connection.transport),
            authorized=bool(getattr(connection, "authorized", False)),
            now=self._clock(),
            peer=_peer(connection),
        )
        client = _Client(connection, session)
        self._clients.add(client)
        self._counters.connections_total += 1
        writer = asyncio.get_running_loop().create_task(self._write_pushes(client))
        worker = asyncio.get_running_loop().create_task(self._serve_requests(client))
        try:
            session.opened()
            # Frames are read, counted and queued as they arrive, whatever is still running:
            # the rate limit and the per-client cap then see a flood as it is sent.
            async for raw in connection:
                outcome = session.receive(raw, self._clock())
                if isinstance(outcome, str):
                    await connection.send(outcome)
                    hold = session.read_hold()
                    if hold is not None:  # not read meanwhile: its frames wait in its socket
                        client.request_done.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(hold):
                                await client.request_done.wait()
                else:
                    client.queue.put_nowait(outcome)
        except ConnectionClosed:
            pass
        finally:
            session.closed()
            self._clients.discard(client)
            self._admitted.discard(connection)
            for task in (writer, worker):
                task.cancel()
            for task in (writer, worker):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _serve_requests(self, client: _Client) -> None:
        """One client's requests, one at a time and in order (its replies keep that order)."""
        session = client.session
        with contextlib.suppress(ConnectionClosed):
            while True:
                request = await client.queue.get()
                replies: list[str | bytes] = []
                try:
                    for action in session.respond(request, self._clock()):
                        reply = await self._carry_out(client, action)
                        if reply is not None:
                            replies.append(reply)
                finally:
                    # counted as answered before the reply leaves: a client that sends its next
                    # request on seeing the reply must find its slot free
                    session.done()
                    client.request_done.set()
                for reply in replies:
                    await client.connection.send(reply, text=True)

    async def _write_pushes(self, client: _Client) -> None:
        outbox = client.session.outbox
        with contextlib.suppress(ConnectionClosed):
            while True:
                text = await outbox.get()
                await client.connection.send(text)
                if text.startswith('{"type":"live_data"'):
                    self._counters.live_frames_sent_total += 1

    async def _carry_out(
        self, client: _Client, action: Send | Offload | StartExport | PushStatus
    ) -> str | bytes | None:
        """Do one thing the session asked for (the I/O it never does); the reply to send, if any."""
        if isinstance(action, Send):
            return action.frame
        if isinstance(action, Offload):
            try:
                return await self._pool.run(action.job)
            except Exception as exc:
                return client.session.offloaded(action.request, exc)
        if isinstance(action, StartExport):
            self._spawn(self._export(client, action))
        else:
            self.notify_status(exclude=client)
        return None

    async def _export(self, client: _Client, action: StartExport) -> None:
        outcome: ExportResult | BaseException
        try:
            outcome = await self._export_pool.run(self._view.export_zip)
        except Exception as exc:
            outcome = exc
        request = client.connection.request
        host = request.headers.get("Host") if request is not None else None
        reply = client.session.export_finished(action.request_id, outcome, host)
        with contextlib.suppress(ConnectionClosed):
            await client.connection.send(reply)


def _raw_response(code: int, phrase: str, body: bytes) -> bytes:
    """A whole HTTP response for a socket whose request was never parsed (or never read)."""
    head = (
        f"HTTP/1.1 {code} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
