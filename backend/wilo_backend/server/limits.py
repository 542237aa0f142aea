"""Hostile-network bookkeeping without sockets: connection caps, wrong-token lockout, log rates."""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar
from urllib.parse import parse_qs

Conn = TypeVar("Conn", bound=Hashable)

# A Host header that can go into a URL as it is: a DNS name or IPv4 address, or a bracketed
# IPv6 address, with an optional port. Anything else (spaces, '/', '@', quotes) is refused.
_HOST_RE: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
# Addresses kept by AuthThrottle at most: a scan from many addresses cannot grow it without bound.
MAX_TRACKED_ADDRESSES: Final = 4096


def valid_host(value: str | None) -> bool:
    """True for a Host header of the form host[:port] that is safe to put into a URL."""
    return bool(value) and len(value or "") <= 260 and bool(_HOST_RE.fullmatch(value or ""))


def open_listener_warning(host: str, auth_token: str) -> str | None:
    """The start-up warning for a server reachable beyond this machine with no token."""
    if auth_token:
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"listening on {host} without server.auth_token: anyone who can reach this port "
        "can stop or pause collection; set a token (SPEC §5 'Hostile network')"
    )


@dataclass(frozen=True, slots=True)
class Admission(Generic[Conn]):
    """What to do with a socket just accepted: `refused` names the cap; `evict` is aborted."""

    refused: str | None = None
    evict: Conn | None = None


@dataclass
class ConnectionGate(Generic[Conn]):
    """Counts every accepted socket against a global and a per-address cap from accept on.

    At the global cap a socket that has waited `evictable_after_seconds` without sending its
    HTTP request makes room for a newcomer from an address with fewer such sockets: the oldest
    one of the address with the most. Idle sockets then cannot lock a real client out; a client's
    own socket, accepted in the same burst as a flood and not read yet, is too young to be pushed
    out; an operator with many live WebSockets is not the one picked for a hoarder's idle
    sockets; and a hoarder's newcomers are refused rather than evicting each other.
    """

    max_connections: int
    max_per_address: int
    evictable_after_seconds: float = 1.0
    _address_of: dict[Conn, str] = field(default_factory=dict)
    _per_address: dict[str, int] = field(default_factory=dict)
    # connections without their request yet, per address, oldest first, with their accept time
    _waiting: dict[str, OrderedDict[Conn, float]] = field(default_factory=dict)
    # how many addresses have k waiting sockets, and the largest such k: a hoarder's newcomer
    # (as many waiting as the most) is refused at once, without a scan of every address
    _addresses_waiting: dict[int, int] = field(default_factory=dict)
    _most_waiting: int = 0

    @property
    def open_count(self) -> int:
        return len(self._address_of)

    @property
    def waiting_count(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    def admit(self, conn: Conn, address: str, now: float) -> Admission[Conn]:
        return self._admit(conn, address, now, lambda: self._eviction_candidate(now, address))

    def admit_authorized(self, conn: Conn, address: str, now: float) -> Admission[Conn]:
        """A socket refused at the cap whose request then carried the token: the oldest waiting
        socket of the address with the most waiting ones makes room for it, however young.

        The age rule of admit() keeps a flood's newcomers from evicting each other; a token
        holder is no such newcomer, and under a flood of sockets that reconnect as soon as they
        are dropped there were moments when no waiting socket was old enough (2 refused probes
        in the abuse bench). Only when every slot holds a socket that has sent its request
        (a real client) is it refused.
        """
        return self._admit(conn, address, now, self._oldest_of_the_busiest)

    def _admit(
        self, conn: Conn, address: str, now: float, victim: Callable[[], Conn | None]
    ) -> Admission[Conn]:
        if self._per_address.get(address, 0) >= self.max_per_address:
            return Admission(refused="max_connections_per_address")
        evict: Conn | None = None
        if len(self._address_of) >= self.max_connections:
            evict = victim()
            if evict is None:
                return Admission(refused="max_connections")
            self.release(evict)
        self._add(conn, address, now)
        return Admission(evict=evict)

    def _oldest_of_the_busiest(self) -> Conn | None:
        if not self._waiting:
            return None
        busiest = max(self._waiting.values(), key=len)
        return next(iter(busiest))

    def _add(self, conn: Conn, address: str, now: float) -> None:
        self._address_of[conn] = address
        self._per_address[address] = self._per_address.get(address, 0) + 1
        waiting = self._waiting.setdefault(address, OrderedDict())
        waiting[conn] = now
        self._count_waiting(len(waiting) - 1, len(waiting))

    def _count_waiting(self, before: int, after: int) -> None:
        """An address went from `before` to `after` waiting sockets (they differ by one)."""
        counts = self._addresses_waiting
        if before:
            left = counts[before] - 1
            if left:
                counts[before] = left
            else:
                del counts[before]
        if after:
            counts[after] = counts.get(after, 0) + 1
        if after > self._most_waiting:
            self._most_waiting = after
        elif before == self._most_waiting and before not in counts:
            self._most_waiting = after  # the only address with the most lost one

    def _eviction_candidate(self, now: float, newcomer: str) -> Conn | None:
        # see the rule below: no address can have more waiting sockets than the newcomer's + 1
        if len(self._waiting.get(newcomer, ())) + 1 >= self._most_waiting:
            return None
        best: tuple[int, float, Conn] | None = None
        for waiting in self._waiting.values():
            conn, since = next(iter(waiting.items()))
            if now - since < self.evictable_after_seconds:
                continue
            key = (len(waiting), now - since, conn)
            if best is None or key[:2] > best[:2]:
                best = key
        if best is None:
            return None
        # Only an address with fewer waiting sockets than the victim's may push one out: a
        # hoarder's own newcomers are refused instead of evicting each other (an eviction war
        # of ~1,000 connections a second in the abuse bench, which kept the operator refused).
        if len(self._waiting.get(newcomer, ())) + 1 >= best[0]:
            return None
        return best[2]

    def request_arrived(self, conn: Conn) -> None:
        address = self._address_of.get(conn)
        if address is not None:
            self._forget_waiting(address, conn)

    def _forget_waiting(self, address: str, conn: Conn) -> None:
        waiting = self._waiting.get(address)
        if waiting is not None and waiting.pop(conn, None) is not None:
            self._count_waiting(len(waiting) + 1, len(waiting))
            if not waiting:
                del self._waiting[address]

    def release(self, conn: Conn) -> None:
        """Forget a connection (closed or evicted); a second call is harmless."""
        address = self._address_of.pop(conn, None)
        if address is None:
            return
        self._forget_waiting(address, conn)
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]


def request_credentials(data: bytes) -> tuple[str | None, str | None] | None:
    """(the ?token= of the request line, the Authorization header's value) of a raw
    HTTP request head, or None when `data` does not hold a whole head with at most one
    Authorization header (such a request is not worth a slot before it is parsed properly)."""
    head, end, _ = data.partition(b"\r\n\r\n")
    if not end:
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3:
        return None
    query = parse_qs(parts[1].partition("?")[2])
    given = query.get("token", [None])[0]
    authorization = [
        value.strip()
        for name, sep, value in (line.partition(":") for line in header_lines)
        if sep and name.strip().lower() == "authorization"
    ]
    if len(authorization) > 1:
        return None
    return given, (authorization[0] if authorization else None)


@dataclass
class AuthThrottle:
    """At most `max_failures` wrong tokens per address per `window_seconds`; then a lockout.

    While locked out an address's tokens are not even compared, so guessing stays at
    `max_failures` per window whatever the attacker's rate.
    """

    max_failures: int
    window_seconds: float = 60.0
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def locked_for(self, address: str, now: float) -> float:
        """Seconds until `address` may try again (0 when it may)."""
        times = self._recent(address, now)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window_seconds - now)

    def failed(self, address: str, now: float) -> None:
        times = self._recent(address, now)
        times.append(now)
        self._failures[address] = times[-self.max_failures :]
        if len(self._failures) > MAX_TRACKED_ADDRESSES:
            # the address seen longest ago goes first (dicts keep insertion order)
            stale = next(iter(self._failures))
            del self._failures[stale]

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self._failures.pop(address, []) if now - t < self.window_seconds]
        if times:
            self._failures[address] = times
        return times


@dataclass
class LogLimiter:
    """At most `burst` lines per kind per `window_seconds`; the rest are counted, not written."""

    burst: int = 5
    window_seconds: float = 60.0
    _windows: dict[str, tuple[float, int, int]] = field(default_factory=dict)

    def allow(self, kind: str, now: float) -> tuple[bool, int]:
        """(write this line?, lines suppressed since the last written one of this kind)."""
        start, written, suppressed = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.window_seconds:
            start, written = now, 0
        if written < self.burst:
            self._windows[kind] = (start, written + 1, 0)
            return True, suppressed
        self._windows[kind] = (start, written, suppressed + 1)
        return False, 0
