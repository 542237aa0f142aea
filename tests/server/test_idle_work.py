"""Work the server leaves undone for clients that are not there (issue 20)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wilo_backend.server.app import WiloServer
from wilo_backend.server.live import LiveHub, Outbox

from .conftest import Control, http_get


class CountingControl(Control):
    """Counts how often the whole status is gathered."""

    def __init__(self, control: Control) -> None:
        super().__init__(control.store)
        self.status_calls = 0

    def status_data(self) -> dict[str, Any]:
        self.status_calls += 1
        return super().status_data()


async def test_healthz_and_metrics_do_not_gather_the_whole_status(
    server: WiloServer, control: Control
) -> None:
    counting = CountingControl(control)
    server._control = counting  # the server asks this one from now on
    counting.paused = True
    status_code, _, body = await http_get(server.port or 0, "/healthz")
    assert json.loads(body)["collecting"] is False
    assert status_code == 200  # health() is the control's own switch here
    status_code, _, body = await http_get(server.port or 0, "/metrics")
    assert status_code == 200 and b"wilo_" in body
    # both read running/paused through collection_state(); before issue 20 each called
    # status_data() (sampler counters, disk usage, analytics) for those two flags
    assert counting.status_calls == 0


async def test_no_status_is_gathered_for_nobody(server: WiloServer, control: Control) -> None:
    counting = CountingControl(control)
    server._control = counting
    server._dispatcher._control = counting
    server.notify_status()
    assert counting.status_calls == 0


async def test_the_frame_timer_sleeps_while_nobody_subscribes() -> None:
    hub = LiveHub()
    waiting = asyncio.create_task(hub.wait_for_subscribers())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    outbox = Outbox()
    hub.subscribe(outbox, None)
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(hub.wait_for_subscribers(), 1)  # returns at once while subscribed
    hub.unsubscribe(outbox)
    again = asyncio.create_task(hub.wait_for_subscribers())
    await asyncio.sleep(0.05)
    assert not again.done()
    again.cancel()
