"""The socket layer: websockets connections, HTTP endpoints, timers (decisions: protocol.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, quote, unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from wilo_backend.config import ServerConfig
from wilo_backend.model import PathRejectedError, ReadingsView, SampleBatch, ServiceControl
from wilo_backend.server import protocol
from wilo_backend.server.live import LiveHub, Outbox
from wilo_backend.server.metrics import CONTENT_TYPE, ServerCounters, render_metrics
from wilo_backend.server.protocol import (
    CONTROL_COMMANDS,
    EXPORT_COMMAND,
    Dispatcher,
    RequestError,
    TokenBucket,
)
from wilo_backend.web import static_file

log = logging.getLogger("wilo_backend.server")

# A TCP connection that has not sent its HTTP request by then is dropped (slowloris guard);
# websockets' own open_timeout would also cut long export downloads, so it is off.
REQUEST_TIMEOUT_SECONDS: Final = 10.0
# Commands that read files: run in a worker thread so live frames keep flowing meanwhile.
EARLY_FRAME_FRACTION: Final = 0.8
THREADED_COMMANDS: Final = frozenset({"get_csv_data", "get_folder_structure"})
UNAUTHORIZED: Final = (
    "unauthorized: this command needs the server token "
    "(?token= in the URL, an 'Authorization: Bearer' header, or a 'token' field)"
)


class _Connection(ServerConnection):
    """A connection that is aborted if its HTTP request does not arrive in time."""

    request_timeout_seconds = REQUEST_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.loop.call_later(self.request_timeout_seconds, self._abort_without_request)

    def _abort_without_request(self) -> None:
        if self.request is None:
            self.transport.abort()


@dataclass(eq=False)
class _Client:
    connection: ServerConnection
    outbox: Outbox
    bucket: TokenBucket
    authorized: bool


def _json_response(status: http.HTTPStatus, body: dict[str, Any]) -> Response:
    return _response(status, json.dumps(body).encode(), "application/json")


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
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


def _host_for_url(connection: ServerConnection) -> str:
    """host:port of the socket the client reached, for a request without a Host header."""
    address = connection.local_address
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        self._clients: set[_Client] = set()
        self._admitted: set[ServerConnection] = set()
        self._exports_running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self.port: int | None = None
        self._last_flush = clock()
        self._commands = self._dispatcher.commands
        self._threaded = THREADED_COMMANDS
        self._metrics_sources: list[Callable[[], str]] = []
        self._live_fields: Callable[[], str] | None = None

    # --- the service's side -----------------------------------------------------------------

    async def start(self) -> int:
        """Bind config.host:config.port; returns the bound port (an ephemeral one for port 0)."""
        self._server = await serve(
            self._handle_connection,
            self._config.host,
            self._config.port,
            process_request=self._process_request,
            create_connection=_Connection,
            max_size=self._config.max_frame_bytes,
            # Compression would cost CPU per client and undo the once-per-level encoding.
            compression=None,
            open_timeout=None,
            max_queue=16,
        )
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
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

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
            client.outbox.put_event("new_file", text)

    def notify_event(self, kind: str, message: dict[str, Any]) -> None:
        """Push a message (e.g. analytics' `alert`) to every client allowed to read."""
        text = protocol.encode(message)
        for client in self._readers():
            client.outbox.put_event(kind, text)

    def add_metrics(self, render: Callable[[], str]) -> None:
        """Append another source's Prometheus text (whole lines) to GET /metrics."""
        self._metrics_sources.append(render)

    def set_live_fields(self, fields: Callable[[], str]) -> None:
        """`fields()` is asked at every live frame for '"name":<json>,' to include ('' = none)."""
        self._live_fields = fields

    def notify_status(self, exclude: _Client | None = None) -> None:
        text = protocol.encode(self._dispatcher.status())
        for client in self._readers():
            if client is not exclude:
                client.outbox.put_event("status", text)

    def add_command(
        self,
        command: str,
        handler: Callable[[protocol.Request], dict[str, Any]],
        *,
        threaded: bool = False,
    ) -> None:
        """Serve another read-only command (same validation, auth, rate limit, request_id).

        `handler` gets the parsed Request (its seconds/max_points/... fields) and returns the
        reply; `threaded` runs it in a worker thread when it may take more than a millisecond.
        """
        self._dispatcher.register(command, handler)
        self._commands = self._dispatcher.commands
        if threaded:
            self._threaded = self._threaded | {command}

    def backlog_bytes(self) -> list[int]:
        """Per client: bytes waiting in its outbox plus its socket's write buffer."""
        return [
            c.outbox.queued_bytes + c.connection.transport.get_write_buffer_size()
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
        if self._config.auth_token and self._config.protect_reads:
            return [c for c in self._clients if c.authorized]
        return list(self._clients)

    def _handshake_authorized(self, request: Request) -> bool:
        token = self._config.auth_token
        if not token:
            return True
        query = parse_qs(request.path.partition("?")[2])
        given = query.get("token", [None])[0]
        bearer = protocol.bearer_token(request.headers.get("Authorization"))
        return protocol.token_matches(given, token) or protocol.token_matches(bearer, token)

    def _open_connections(self) -> int:
        self._admitted = {c for c in self._admitted if c.protocol.state is not State.CLOSED}
        return len(self._admitted)

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.partition("?")[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self._open_connections() >= self._config.max_clients:
                self._counters.reject("max_clients")
                return _text_response(
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    f"too many clients (server.max_clients = {self._config.max_clients})\n",
                )
            self._admitted.add(connection)
            return None
        if path == "/healthz":
            healthy, reason = self._control.health()
            running, paused = self._collection_state()
            health = {
                "status": "ok" if healthy else "unhealthy",
                "reason": reason if not healthy else "ok",
                "collecting": running and not paused,
                "running": running,
                "paused": paused,
            }
            status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
            return _json_response(status, health)
        if path == "/metrics":
            if self._config.protect_reads and not self._handshake_authorized(request):
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
        return _text_response(http.HTTPStatus.NOT_FOUND, f"not found: {path[:200]}\n")

    def _collection_state(self) -> tuple[bool, bool]:
        """(running, paused) as the status reply says them."""
        data = self._control.status_data()
        return bool(data.get("running")), bool(data.get("paused"))

    async def _download(
        self, connection: ServerConnection, request: Request, filename: str
    ) -> Response:
        """Stream an export with sendfile, then close: the body never sits in memory."""
        token = self._config.auth_token
        if token:
            sig = parse_qs(request.path.partition("?")[2]).get("sig", [None])[0]
            if not (
                protocol.signature_matches(sig, token, filename)
                or self._handshake_authorized(request)
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
        bucket = TokenBucket(
            self._config.max_requests_per_second,
            max(1.0, self._config.max_requests_per_second),
            self._clock(),
        )
        client = _Client(
            connection,
            Outbox(),
            bucket,
            self._handshake_authorized(connection.request),  # type: ignore[arg-type]
        )
        self._clients.add(client)
        self._counters.connections_total += 1
        writer = asyncio.get_running_loop().create_task(self._write_pushes(client))
        try:
            if client in self._readers():
                client.outbox.put_event("status", protocol.encode(self._dispatcher.status()))
            async for raw in connection:
                reply = await self._respond(client, raw)
                if reply is not None:
                    await connection.send(protocol.encode(reply))
        except ConnectionClosed:
            pass
        finally:
            self._hub.unsubscribe(client.outbox)
            self._clients.discard(client)
            self._admitted.discard(connection)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write_pushes(self, client: _Client) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                text = await client.outbox.get()
                await client.connection.send(text)
                if text.startswith('{"type":"live_data"'):
                    self._counters.live_frames_sent_total += 1

    async def _respond(self, client: _Client, raw: str | bytes) -> dict[str, Any] | None:
        """The reply to one frame, or None when it comes later (an export)."""
        self._counters.requests_total += 1
        allowed = client.bucket.allow(self._clock())
        try:
            request = protocol.parse_request(raw, self._commands)
        except RequestError as exc:
            self._counters.request_errors_total += 1
            if not allowed:
                return self._rate_limited(exc.request_id)
            return protocol.error_message(exc.message, exc.request_id)
        if not allowed:
            return self._rate_limited(request.request_id)
        rid = request.request_id
        if protocol.needs_token(
            request.command, self._config.auth_token, self._config.protect_reads
        ):
            if protocol.token_matches(request.token, self._config.auth_token):
                client.authorized = True
            if not client.authorized:
                self._counters.unauthorized_total += 1
                if request.command == EXPORT_COMMAND:
                    return protocol.message("zip_export", rid, error=UNAUTHORIZED)
                return protocol.error_message(UNAUTHORIZED, rid)
        try:
            return await self._execute(client, request)
        except RequestError as exc:
            self._counters.request_errors_total += 1
            return protocol.error_message(exc.message, rid)
        except Exception as exc:
            self._counters.request_errors_total += 1
            log.exception("%s failed", request.command)
            return protocol.error_message(f"{request.command} failed: {exc}", rid)

    def _rate_limited(self, request_id: protocol.RequestId | None) -> dict[str, Any]:
        self._counters.rate_limited_total += 1
        limit = self._config.max_requests_per_second
        return protocol.error_message(
            f"rate limited: at most {limit:g} requests per second", request_id
        )

    async def _execute(self, client: _Client, request: protocol.Request) -> dict[str, Any] | None:
        rid = request.request_id
        if request.command == "subscribe_live":
            sub = self._hub.subscribe(client.outbox, request.max_rate_hz)
            return protocol.message(
                "live_subscribed",
                rid,
                rate_hz=sub.rate_hz,
                bucket_samples=sub.bucket_samples,
                frame_hz=self._config.live_frame_hz,
            )
        if request.command == "unsubscribe_live":
            self._hub.unsubscribe(client.outbox)
            return protocol.message(
                "live_unsubscribed", rid, frames_dropped=client.outbox.dropped_frames
            )
        if request.command == EXPORT_COMMAND:
            self._spawn(self._export(client, rid))
            return None
        if request.command in CONTROL_COMMANDS:
            # who stopped collection, and when: the journal must be able to tell
            log.info("%s requested by %s", request.command, _peer(client.connection))
        if request.command in self._threaded:
            reply = await asyncio.to_thread(self._dispatcher.handle, request)
        else:
            reply = self._dispatcher.handle(request)
        if request.command in CONTROL_COMMANDS:
            self.notify_status(exclude=client)
        return reply

    async def _export(self, client: _Client, rid: protocol.RequestId | None) -> None:
        reply = await self._build_export(client, rid)
        with contextlib.suppress(ConnectionClosed):
            await client.connection.send(protocol.encode(reply))

    async def _build_export(
        self, client: _Client, rid: protocol.RequestId | None
    ) -> dict[str, Any]:
        limit = self._config.max_concurrent_exports
        if self._exports_running >= limit:
            self._counters.export_errors_total += 1
            return protocol.message(
                "zip_export", rid, error=f"{limit} export(s) already running; try again shortly"
            )
        self._exports_running += 1
        try:
            result = await asyncio.to_thread(self._view.export_zip)
        except Exception as exc:
            self._counters.export_errors_total += 1
            log.exception("export failed")
            return protocol.message("zip_export", rid, error=f"export failed: {exc}")
        finally:
            self._exports_running -= 1
        self._counters.exports_total += 1
        token = self._config.auth_token
        sig = protocol.download_signature(token, result.filename) if token else ""
        url = protocol.download_url(
            client.connection.request.headers.get("Host") if client.connection.request else None,
            _host_for_url(client.connection),
            quote(result.filename),
            sig,
        )
        return protocol.message(
            "zip_export",
            rid,
            download_url=url,
            filename=result.filename,
            file_count=result.file_count,
        )
