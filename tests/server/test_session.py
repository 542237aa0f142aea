"""The protocol session without sockets: the actions it asks of the I/O layer, in order."""

from __future__ import annotations

import json

from clocks import FakeClock
from wilo_backend.config import ServerConfig
from wilo_backend.server.limits import AuthThrottle
from wilo_backend.server.live import LiveHub
from wilo_backend.server.metrics import ServerCounters
from wilo_backend.server.protocol import Dispatcher, Request
from wilo_backend.server.session import (
    Authenticator,
    Offload,
    PushStatus,
    Send,
    Session,
    SessionContext,
    StartExport,
)
from wilo_backend.server.workers import PoolBusyError
from wilo_backend.store.store import Store

from .conftest import Control

TOKEN = "t0ken"


def _session(store: Store, control: Control, **config: object) -> Session:
    server = ServerConfig(auth_token=TOKEN, **config)  # type: ignore[arg-type]
    auth = Authenticator(TOKEN, AuthThrottle(server.max_auth_failures_per_minute), lambda a: None)
    context = SessionContext(server, Dispatcher(store, control), LiveHub(), auth, ServerCounters())
    return Session(context, "192.0.2.1", authorized=False, now=FakeClock()())


def _queued(session: Session, frame: dict[str, object]) -> Request:
    outcome = session.receive(json.dumps(frame), 1000.0)
    assert isinstance(outcome, Request), outcome
    return outcome


def test_a_control_command_answers_status_then_pushes_it_to_the_others(
    store: Store, control: Control
) -> None:
    session = _session(store, control)
    request = _queued(session, {"command": "pause_collection", "token": TOKEN, "request_id": 1})
    actions = session.respond(request, 1000.0)
    assert [type(a) for a in actions] == [Send, PushStatus]
    reply = json.loads(actions[0].frame)  # type: ignore[union-attr]
    assert reply["type"] == "status" and reply["data"]["paused"] and reply["request_id"] == 1
    assert control.calls == ["pause_collection"] and session.authorized
    session.done()
    assert session.pending == 0


def test_a_second_export_is_refused_while_one_runs(store: Store, control: Control) -> None:
    session = _session(store, control)
    first = session.respond(_queued(session, {"command": "export_all_csv_zip", "token": TOKEN}), 0)
    assert first == [StartExport(None)]
    second = session.respond(_queued(session, {"command": "export_all_csv_zip"}), 0)
    refusal = json.loads(second[0].frame)  # type: ignore[union-attr]
    assert refusal["type"] == "zip_export" and "already running" in refusal["error"]
    done = json.loads(session.export_finished(None, store.export_zip(), "pump:8765"))
    assert done["download_url"].startswith("http://pump:8765/exports/")
    assert session.context.exports_running == 0


def test_expensive_work_is_offloaded_and_a_full_pool_is_busy(
    store: Store, control: Control
) -> None:
    session = _session(store, control)
    request = _queued(session, {"command": "get_recent_data", "max_points": 10})
    (action,) = session.respond(request, 0)
    assert isinstance(action, Offload)
    assert json.loads(action.job())["type"] == "recent_data"
    busy = json.loads(session.offloaded(request, PoolBusyError("worker pool full")))
    assert busy == {"type": "error", "message": "worker pool full"}
    assert session.context.counters.busy_total == 1
