"""The accept loop: each socket meets the connection gate before any protocol object exists.

asyncio's own accept loop builds a transport, a websockets connection and a handshake task for
every socket and only then lets the server look at it. Under an idle-socket flood most sockets
are refused, and that work (~0.5 ms each, ~1,000 a second in the abuse bench) kept a token
holder's handshake waiting behind the refusals for 0.5-4 s. Here a refused socket costs an
accept, a reader until its request arrives, one send of the 503 and a close (Refusals); an
admitted one becomes a connection once its request begins to arrive (Accepted.wait_for_request:
most admitted sockets of such a flood never send a byte).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

log = logging.getLogger("wilo_backend.server")

# accept() errors that mean "no descriptor or memory for now": wait, the backlog keeps the rest
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_SECONDS: Final = 1.0


class _HasTransport(Protocol):
    @property
    def transport(self) -> asyncio.Transport: ...


@dataclass(eq=False)
class Accepted:
    """One admitted socket, from accept (no connection object yet) until it is closed."""

    sock: socket.socket
    address: str
    connection: _HasTransport | None = None
    dropped: bool = False
    # bytes of its request already read off the socket (a refusal rescued, Refusals), fed to
    # its connection first
    preread: bytes = b""
    # the event loop's time at accept: its request is due request_timeout_seconds after it
    accepted_at: float = 0.0
    # while it waits for its first byte (wait_for_request): its deadline
    _deadline: asyncio.TimerHandle | None = None

    def wait_for_request(
        self, deadline: float, ready: Callable[[], object], expired: Callable[[], object]
    ) -> None:
        """Call `ready` once its first bytes have arrived, or `expired` (after closing it) at
        the loop time `deadline`. Until then it costs a reader and a timer, no connection
        object: most sockets of an idle-socket flood never send a byte."""
        loop = asyncio.get_running_loop()
        fd = self.sock.fileno()

        def readable() -> None:
            self._stop_waiting()
            ready()

        def too_late() -> None:
            self._deadline = None
            self._stop_waiting()
            self.sock.close()
            expired()

        loop.add_reader(fd, readable)
        self._deadline = loop.call_at(deadline, too_late)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def abort(self) -> None:
        """Drop it now (evicted): an RST, whether or not its connection object exists yet."""
        self.dropped = True
        if self.connection is not None:
            # made but not connected yet: its connection_made sees `dropped` and aborts
            transport = getattr(self.connection, "transport", None)
            if transport is not None:
                transport.abort()
        else:
            self._stop_waiting()
            self.sock.close()


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening TCP sockets on every address `host` resolves to, as asyncio's create_server
    binds them ("localhost": 127.0.0.1 and ::1; IPv6 sockets IPv6 only), all on one port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    bound: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address[0]) in bound:
                continue
            bound.add((family, address[0]))
            if sockets:  # port 0: the port the first one got, for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"server.host {host!r} resolves to no address")
    return sockets


class Refusals:
    """Refused sockets answered as HTTP expects and closed without a reset.

    The answer goes out once the client's request has arrived (or at the deadline, for one
    that never sends); then our side shuts down, and what the client still sends is read and
    dropped until it closes, so the kernel never resets the connection under the answer.
    Answered and closed the moment it was accepted, before its request went out, websockets'
    own sync client failed with an internal assertion instead of its InvalidStatus 503.

    At most `limit` sockets wait at once (their descriptors come out of the connection
    budget); beyond that the one waiting longest is answered and closed.

    `rescue(sock, request)` sees the first bytes of each refused socket's request; when it
    returns True it has taken the socket over (admitted after all: its request carried the
    token) and nothing is answered here.
    """

    def __init__(
        self,
        limit: int,
        linger_seconds: float = 1.0,
        rescue: Callable[[socket.socket, bytes], bool] | None = None,
    ) -> None:
        self._limit = limit
        self._linger = linger_seconds
        self._rescue = rescue
        self._loop = asyncio.get_running_loop()
        # socket -> (deadline, the answer while it is still to be sent)
        self._waiting: dict[socket.socket, tuple[float, bytes | None]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def refuse(self, sock: socket.socket, answer: bytes) -> None:
        if len(self._waiting) >= self._limit:
            # the oldest goes (answered, if it never sent a byte): a flood of sockets that send
            # nothing cannot keep a real client's refusal from its answer
            oldest = next(iter(self._waiting))
            unsent = self._waiting[oldest][1]
            if unsent is not None:
                self._answer(oldest, unsent)
            self._close(oldest)
        self._waiting[sock] = (self._loop.time() + self._linger, answer)
        self._loop.add_reader(sock.fileno(), self._readable, sock)
        if self._sweep is None:
            self._sweep = self._loop.call_later(self._linger, self._close_expired)

    @staticmethod
    def _answer(sock: socket.socket, answer: bytes) -> bool:
        try:
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the client is gone already
            return False
        return True

    def _readable(self, sock: socket.socket) -> None:
        if sock not in self._waiting:  # pushed out earlier in this turn of the loop
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        deadline, answer = self._waiting[sock]
        if not data:  # the client closed: no reset on our side
            self._close(sock)
        elif answer is not None:  # its request (or the start of it): now the answer
            if self._rescue is not None and self._rescue(sock, data):
                del self._waiting[sock]
                self._loop.remove_reader(sock.fileno())
                return
            if self._answer(sock, answer):
                self._waiting[sock] = (deadline, None)
            else:
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        if self._waiting.pop(sock, None) is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _close_expired(self) -> None:
        self._sweep = None
        now = self._loop.time()
        for sock, (deadline, answer) in list(self._waiting.items()):
            if deadline <= now:
                if answer is not None:  # never sent a byte: answered, then closed
                    self._answer(sock, answer)
                self._close(sock)
        if self._waiting:
            first = min(deadline for deadline, _ in self._waiting.values())
            self._sweep = self._loop.call_at(first, self._close_expired)

    def close(self) -> None:
        for sock in list(self._waiting):
            self._close(sock)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


class AcceptLoop:
    """Accepts on `sock` with the event loop's reader; `admit` says whether a socket is kept.

    `admit(sock, address)` returns the gate's key for a kept socket, or None after it has
    answered and closed a refused one; `connect(key)` then makes its connection (a task).
    """

    def __init__(
        self,
        sock: socket.socket,
        accepts_per_wakeup: int,
        admit: Callable[[socket.socket, str], Accepted | None],
        connect: Callable[[Accepted], object],
    ) -> None:
        self._sock = sock
        self._accepts_per_wakeup = accepts_per_wakeup
        self._admit = admit
        self._connect = connect
        self._loop = asyncio.get_running_loop()
        self._reading = False

    def start(self) -> None:
        if not self._reading and self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)
            self._reading = True

    def stop(self) -> None:
        if self._reading and self._sock.fileno() >= 0:  # closing the socket removed its reader
            self._loop.remove_reader(self._sock.fileno())
        self._reading = False

    def close(self) -> None:
        self.stop()
        self._sock.close()

    def _accept_ready(self) -> None:
        # a bounded number per wake-up: other callbacks get their turn between the bursts
        for _ in range(self._accepts_per_wakeup):
            try:
                sock, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    log.warning(
                        "cannot accept connections (%s): pausing accept for %.0f s",
                        exc.strerror,
                        ACCEPT_RETRY_SECONDS,
                    )
                    self.stop()
                    self._loop.call_later(ACCEPT_RETRY_SECONDS, self.start)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # that client is gone; the next one may be waiting
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            key = self._admit(sock, address)
            if key is not None:
                self._connect(key)
