"""Hostile-network bookkeeping without sockets: connection gate, token lockout, log rate."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import examples
from wilo_backend.server.limits import (
    AuthThrottle,
    ConnectionGate,
    LogLimiter,
    request_credentials,
    valid_host,
)


def test_the_gate_caps_each_address_and_evicts_an_old_waiting_socket() -> None:
    gate: ConnectionGate[str] = ConnectionGate(
        max_connections=4, max_per_address=3, evictable_after_seconds=1.0
    )
    for name in ("a1", "a2", "a3"):
        assert gate.admit(name, "10.0.0.1", 0.0).refused is None
    assert gate.admit("a4", "10.0.0.1", 0.0).refused == "max_connections_per_address"
    assert gate.admit("b1", "10.0.0.2", 0.0).evict is None
    gate.request_arrived("b1")  # b1 is a real client now, never evicted
    # at the cap, sockets waiting less than a second are not pushed out: refused instead
    assert gate.admit("c1", "10.0.0.3", 0.5).refused == "max_connections"
    admission = gate.admit("c1", "10.0.0.3", 1.5)
    assert admission.refused is None and admission.evict == "a1"
    assert gate.open_count == 4 and gate.waiting_count == 3
    gate.request_arrived("a2")
    gate.request_arrived("a3")
    assert gate.admit("d1", "10.0.0.4", 2.0).refused == "max_connections"  # c1 is young
    gate.release("a2")
    gate.release("a2")  # a second release (evicted, then closed) changes nothing
    assert gate.open_count == 3
    assert gate.admit("a5", "10.0.0.1", 2.0).refused is None


def test_the_gate_evicts_from_the_address_with_the_most_waiting_sockets() -> None:
    gate: ConnectionGate[str] = ConnectionGate(max_connections=7, max_per_address=7)
    for name in ("op1", "op2", "op3", "op4"):  # an operator's four live WebSockets
        gate.admit(name, "10.0.0.1", 0.0)
        gate.request_arrived(name)
    gate.admit("op5", "10.0.0.1", 0.0)  # and a fifth, its request not read yet
    gate.admit("x1", "10.0.0.9", 0.5)
    gate.admit("x2", "10.0.0.9", 0.5)  # two idle sockets: the most waiting, fewer in all
    assert gate.admit("n1", "10.0.0.7", 5.0).evict == "x1"


def test_a_hoarders_newcomers_are_refused_rather_than_evict_each_other() -> None:
    gate: ConnectionGate[str] = ConnectionGate(max_connections=4, max_per_address=4)
    for name in ("x1", "x2", "x3"):
        gate.admit(name, "10.0.0.9", 0.0)
    gate.admit("y1", "10.0.0.8", 0.0)
    assert gate.admit("x4", "10.0.0.9", 5.0).refused == "max_connections"
    assert gate.admit("y2", "10.0.0.8", 5.0).evict == "x1"  # 2 waiting there then, fewer than 3
    assert gate.admit("y3", "10.0.0.8", 6.0).refused == "max_connections"  # 3, not fewer than 2
    assert gate.admit("op", "10.0.0.1", 6.0).evict == "x2"


def test_a_token_holder_evicts_a_young_idle_socket_only_when_no_slot_is_a_real_client() -> None:
    gate: ConnectionGate[str] = ConnectionGate(max_connections=4, max_per_address=8)
    gate.admit("x1", "10.0.0.9", 0.0)
    gate.admit("x2", "10.0.0.9", 0.0)
    gate.admit("y1", "10.0.0.8", 0.0)
    gate.admit("op1", "10.0.0.1", 0.0)
    gate.request_arrived("op1")
    assert gate.admit("n", "10.0.0.7", 0.1).refused == "max_connections"  # all too young
    assert gate.admit_authorized("op2", "10.0.0.1", 0.1).evict == "x1"  # the busiest, oldest
    gate.request_arrived("op2")
    assert gate.admit_authorized("op3", "10.0.0.1", 0.1).evict in ("x2", "y1")
    gate.request_arrived("op3")
    assert gate.admit_authorized("op4", "10.0.0.1", 0.1).evict in ("x2", "y1")
    gate.request_arrived("op4")
    assert gate.admit_authorized("op5", "10.0.0.1", 0.1).refused == "max_connections"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET /?token=abc HTTP/1.1\r\nHost: x\r\n\r\n", ("abc", None)),
        (b"GET / HTTP/1.1\r\nauthorization: Bearer t\r\n\r\n", (None, "Bearer t")),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", None),  # the head is not complete
        (b"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", None),
        (b"\x16\x03\x01\r\n\r\n", None),
    ],
)
def test_request_credentials_of_a_raw_request_head(
    data: bytes, expected: tuple[str | None, str | None] | None
) -> None:
    assert request_credentials(data) == expected


def test_wrong_tokens_lock_an_address_out_for_the_window() -> None:
    throttle = AuthThrottle(max_failures=3, window_seconds=60.0)
    for t in (0.0, 1.0, 2.0):
        assert throttle.locked_for("10.0.0.1", t) == 0.0
        throttle.failed("10.0.0.1", t)
    assert throttle.locked_for("10.0.0.1", 3.0) == pytest.approx(57.0)
    assert throttle.locked_for("10.0.0.2", 3.0) == 0.0
    assert throttle.locked_for("10.0.0.1", 60.5) == 0.0  # the first failure has aged out


def test_the_throttle_forgets_the_oldest_address_beyond_its_table() -> None:
    throttle = AuthThrottle(max_failures=1)
    for k in range(5000):
        throttle.failed(f"10.{k // 65536}.{k // 256 % 256}.{k % 256}", 0.0)
    assert len(throttle._failures) <= 4096


def test_log_lines_are_limited_per_kind_and_count_the_rest() -> None:
    limiter = LogLimiter(burst=2, window_seconds=60.0)
    assert [limiter.allow("bad", t)[0] for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, False, False]
    assert limiter.allow("other", 3.0) == (True, 0)
    assert limiter.allow("bad", 61.0) == (True, 2)  # the next line says how many were left out


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("pump-7.plant:8765", True),
        ("10.0.0.2", True),
        ("[fe80::1]:80", True),
        ("", False),
        ("a b", False),
        ("evil/x", False),
        ("u@h", False),
        ("h:port", False),
        ("-bad.example", False),
    ],
)
def test_valid_host(host: str, ok: bool) -> None:
    assert valid_host(host) is ok


@dataclasses.dataclass
class _GateOracle:
    """The gate's rule recomputed from scratch on every admission (no counters, no shortcut)."""

    max_connections: int
    max_per_address: int
    evictable_after: float
    address_of: dict[int, str] = dataclasses.field(default_factory=dict)
    waiting_since: dict[int, float] = dataclasses.field(default_factory=dict)  # accept order

    def admit(self, conn: int, address: str, now: float) -> tuple[str | None, int | None]:
        if sum(1 for a in self.address_of.values() if a == address) >= self.max_per_address:
            return "max_connections_per_address", None
        evict = None
        if len(self.address_of) >= self.max_connections:
            evict = self._victim(address, now)
            if evict is None:
                return "max_connections", None
            self.release(evict)
        self.address_of[conn] = address
        self.waiting_since[conn] = now
        return None, evict

    def _victim(self, newcomer: str, now: float) -> int | None:
        by_address: dict[str, list[int]] = {}
        for conn in self.waiting_since:  # oldest first
            by_address.setdefault(self.address_of[conn], []).append(conn)
        eligible = [
            (len(conns), now - self.waiting_since[conns[0]], conns[0])
            for conns in by_address.values()
            if now - self.waiting_since[conns[0]] >= self.evictable_after
        ]
        if not eligible:
            return None
        count, _age, victim = max(eligible, key=lambda e: (e[0], e[1]))
        if len(by_address.get(newcomer, [])) + 1 >= count:
            return None
        return victim

    def release(self, conn: int) -> None:
        self.address_of.pop(conn, None)
        self.waiting_since.pop(conn, None)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "admit", "admit", "request", "release"]),
            st.integers(0, 5),
            st.integers(0, 40),
        ),
        max_size=120,
    )
)
def test_the_gate_decides_as_its_rule_recomputed_from_scratch(
    ops: list[tuple[str, int, int]],
) -> None:
    """Every admission (refusal, eviction victim) equals the rule's answer from a full scan,
    whatever the order of accepts, requests and closes: the gate's running counts and its
    shortcut for a hoarder's newcomers never change a decision."""
    gate: ConnectionGate[int] = ConnectionGate(
        max_connections=6, max_per_address=4, evictable_after_seconds=1.0
    )
    oracle = _GateOracle(6, 4, 1.0)
    now, next_conn = 0.0, 0
    for op, address_index, step in ops:
        now += step / 10
        live = list(oracle.address_of)
        if op == "admit":
            address = f"10.0.0.{address_index}"
            admission = gate.admit(next_conn, address, now)
            assert (admission.refused, admission.evict) == oracle.admit(next_conn, address, now)
            next_conn += 1
        elif live:
            conn = live[step % len(live)]
            if op == "request":
                gate.request_arrived(conn)
                oracle.waiting_since.pop(conn, None)
            else:
                gate.release(conn)
                oracle.release(conn)
        assert gate.open_count == len(oracle.address_of)
        assert gate.waiting_count == len(oracle.waiting_since)
