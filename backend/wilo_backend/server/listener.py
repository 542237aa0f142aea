"""The accept loop: each socket meets the connection gate before any protocol object exists.

asyncio's own accept loop builds a transport, a websockets connection and a handshake task for
every socket and only then lets the server look at it. Under an idle-socket flood most sockets
are refused, and that work (~0.5 ms each, ~1,000 a second in the abuse bench) kept a token
holder's handshake waiting behind the refusals for 0.5-4 s. Here a refused socket costs an
accept, one send of the 503 and a close; only an admitted one becomes a connection.
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

    def abort(self) -> None:
        """Drop it now (evicted): an RST, whether or not its connection object exists yet."""
        self.dropped = True
        if self.connection is not None:
            self.connection.transport.abort()
        else:
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
