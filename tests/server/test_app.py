"""The real server on 127.0.0.1:0 with a real websockets client and the real Store."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clocks import FakeClock
from wilo_backend.release import RUNNING_RELEASE
from wilo_backend.server.app import WiloServer
from wilo_backend.store.store import Store

from .conftest import Client, Control, DataFeed, http_get, ws_url

SEGMENT_KEYS = {"timestamp", "acceleration", "x", "y", "z"}


async def test_status_is_pushed_on_connect(server: WiloServer, control: Control) -> None:
    async with connect(ws_url(server)) as ws:
        first = json.loads(await ws.recv())
    assert first["type"] == "status" and "request_id" not in first
    assert first["data"] == control.status_data()
    for key in ("connected", "running", "paused", "sampling_rate", "total_samples", "csv_files"):
        assert key in first["data"]


async def test_get_status_echoes_request_id(client: Client, control: Control) -> None:
    reply = await client.request("get_status")
    assert reply["type"] == "status" and reply["request_id"].startswith("r")
    assert reply["data"]["csv_files"] == 5
    await client.ws.send(json.dumps({"command": "get_status", "request_id": 42}))
    assert (await client.reply_to(42))["data"] == control.status_data()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "running", "paused"),
    [
        ("stop_collection", False, False),
        ("start_collection", True, False),
        ("pause_collection", True, True),
        ("resume_collection", True, False),
    ],
)
async def test_control_commands_reply_status_and_push_it_to_others(
    server: WiloServer, control: Control, command: str, running: bool, paused: bool
) -> None:
    if command == "resume_collection":
        control.paused = True
    async with connect(ws_url(server)) as ws_a, connect(ws_url(server)) as ws_b:
        a, b = Client(ws_a), Client(ws_b)
        await a.next_push("status")
        await b.next_push("status")
        reply = await a.request(command)
        assert control.calls == [command]
        assert reply["type"] == "status"
        assert (reply["data"]["running"], reply["data"]["paused"]) == (running, paused)
        pushed = await b.next_push("status")
        assert pushed["data"] == reply["data"]


async def test_file_list_is_newest_first_and_structure_is_nested(
    client: Client, store: Store
) -> None:
    reply = await client.request("get_file_list")
    files = reply["files"]
    assert files == store.file_list() and len(files) == 5
    assert files == sorted(files, reverse=True)
    assert files[0] == "2026/11/Week_4/27/152210.csv"
    structure = (await client.request("get_folder_structure"))["structure"]
    day = structure["2026"]["11"]["Week_4"]["27"]
    assert sorted(entry["path"] for entry in day) == sorted(files)
    assert set(day[0]) >= {"filename", "path", "size", "modified"}
    assert isinstance(day[0]["modified"], float)  # Unix seconds; the dashboard multiplies by 1000


async def test_csv_data_echoes_the_filename_and_decimates(client: Client, store: Store) -> None:
    name = store.file_list()[-1]
    full = await client.request("get_csv_data", filename=name, max_points=5000)
    assert full["type"] == "csv_data" and full["filename"] == name
    assert len(full["data"]) == 1600  # one 2 s segment at 800 Hz
    assert set(full["data"][0]) == SEGMENT_KEYS
    hhmmss = name.rsplit("/", 1)[1][:6]
    clock = f"{hhmmss[:2]}:{hhmmss[2:4]}:{hhmmss[4:]}"
    assert full["data"][0]["timestamp"] == f"2026-11-27T{clock}.000000Z"
    small = await client.request("get_csv_data", filename=name)
    assert len(small["data"]) <= 1000
    # min/max decimation keeps the peaks of the full file
    peak = max(row["acceleration"] for row in full["data"])
    assert max(row["acceleration"] for row in small["data"]) == peak


async def test_recent_data_is_time_ordered_with_file_count(client: Client) -> None:
    reply = await client.request("get_recent_data")
    rows = reply["data"]
    assert reply["file_count"] == 5 and 0 < len(rows) <= 3000
    stamps = [row["timestamp"] for row in rows]
    assert stamps == sorted(stamps) and all(s.endswith("Z") for s in stamps)
    short = await client.request("get_recent_data", seconds=1, max_points=100)
    assert 0 < len(short["data"]) <= 100
    assert short["data"][0]["timestamp"] >= "2026-11-27T15:22:09"


async def test_new_file_is_pushed_to_clients(
    server: WiloServer, client: Client, feed: DataFeed, store: Store
) -> None:
    store.on_new_file = server.notify_new_file  # the wiring service.py does
    await client.next_push("status")
    feed.seconds(2)
    pushed = await client.next_push("new_file")
    assert pushed["filename"] in store.file_list()
    assert pushed["total_files"] == len(store.file_list())


async def test_status_is_pushed_periodically(make_server: Any, feed: DataFeed) -> None:
    server = await make_server(status_interval_seconds=0.5)
    async with connect(ws_url(server)) as ws:
        client = Client(ws)
        for _ in range(3):  # the one on connect, then at least two timed ones
            await client.next_push("status")


async def test_dashboard_session_replay_ends_in_a_valid_zip(
    server: WiloServer, store: Store, data_dir: Path
) -> None:
    async with connect(ws_url(server)) as ws:
        dash = Client(ws)
        # the dashboard sends both on open, without waiting in between
        status_id, files_id = await dash.send("get_status"), await dash.send("get_file_list")
        status, files = await dash.reply_to(status_id), await dash.reply_to(files_id)
        assert status["type"] == "status" and files["type"] == "file_list"
        recent = await dash.request("get_recent_data")
        assert recent["type"] == "recent_data" and recent["data"]
        structure = await dash.request("get_folder_structure")
        assert structure["type"] == "folder_structure"
        chosen = files["files"][2]
        csv = await dash.request("get_csv_data", filename=chosen)
        assert csv["filename"] == chosen and csv["data"]
        export = await dash.request("export_all_csv_zip")
    assert export["type"] == "zip_export", export
    assert export["file_count"] == len(store.file_list())
    assert export["download_url"] == f"http://127.0.0.1:{server.port}/exports/{export['filename']}"
    status_code, headers, body = await http_get(
        server.port or 0, export["download_url"].split(str(server.port), 1)[1]
    )
    assert status_code == 200
    assert headers["content-disposition"].startswith("attachment;")
    assert headers["content-type"] == "application/zip"
    assert int(headers["content-length"]) == len(body)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        for relative in store.file_list():
            assert relative in names or f"readings/{relative}" in names
            member = relative if relative in names else f"readings/{relative}"
            assert archive.read(member) == (data_dir / "readings" / relative).read_bytes()
        assert any(name.endswith("README.txt") for name in names)


async def test_download_url_follows_the_host_the_client_used(server: WiloServer) -> None:
    async with connect(ws_url(server, host="localhost")) as ws:
        reply = await Client(ws).request("export_all_csv_zip")
    assert reply["download_url"].startswith(f"http://localhost:{server.port}/exports/")


async def test_second_export_while_one_runs_is_refused(
    server: WiloServer, client: Client, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_export = store.export_zip

    started = asyncio.Event()

    def slow_export() -> Any:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        return real_export()

    monkeypatch.setattr(store, "export_zip", slow_export)
    await client.ws.send(json.dumps({"command": "export_all_csv_zip", "request_id": "first"}))
    async with asyncio.timeout(10):
        await started.wait()  # the first export holds the only slot
    second = await client.request("export_all_csv_zip")
    assert second["type"] == "zip_export" and "already running" in second["error"]
    release.set()
    first = await client.reply_to("first")
    assert "download_url" in first


async def test_live_subscribe_and_unsubscribe(server: WiloServer, client: Client) -> None:
    reply = await client.request("subscribe_live", max_rate_hz=100)
    assert reply["type"] == "live_subscribed" and reply["rate_hz"] == 100.0
    for k in range(10):
        server.publish(_batch(k))
    frame = await client.next_push("live_data")
    assert frame["seq"] == 1 and frame["bucket_samples"] == 16
    gone = await client.request("unsubscribe_live")
    assert gone["type"] == "live_unsubscribed" and gone["frames_dropped"] == 0


def _batch(k: int) -> Any:
    from .conftest import synthetic_batch

    return synthetic_batch(k * 40)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("{oops", "invalid JSON"),
        ("[1,2,3]", "must be a JSON object"),
        ('"hello"', "must be a JSON object"),
        ("{}", "missing field 'command'"),
        ('{"command": 7}', "command must be a string"),
        ('{"command": "rm_rf"}', "unknown command"),
        ('{"command": "get_csv_data"}', "needs a 'filename'"),
        ('{"command": "get_csv_data", "filename": 5}', "must be a string"),
        ('{"command": "get_recent_data", "seconds": "all"}', "seconds"),
        ('{"command": "get_recent_data", "max_points": -3}', "max_points"),
        ('{"command": "get_csv_data", "filename": "../secret.txt"}', "climbs out"),
        ('{"command": "get_csv_data", "filename": "/etc/passwd"}', "absolute"),
        ('{"command": "get_csv_data", "filename": "2026/11/Week_4/27/1522\\u0000.csv"}', "NUL"),
        ('{"command": "get_csv_data", "filename": "2026\\\\11\\\\x.csv"}', "backslash"),
        (
            '{"command": "get_csv_data", "filename": "2026/11/Week_4/27/000000.csv"}',
            "not a retained",
        ),
    ],
)
async def test_bad_input_gets_an_error_and_the_connection_stays_up(
    client: Client, frame: str, expected: str
) -> None:
    await client.send_raw(frame)
    error = await client.next_push("error")
    assert expected in error["message"], error
    assert (await client.request("get_status"))["type"] == "status"


async def test_binary_frame_that_is_not_utf8_is_an_error(client: Client) -> None:
    await client.send_raw(b"\xff\x00\xfe")
    assert "UTF-8" in (await client.next_push("error"))["message"]
    assert (await client.request("get_status"))["type"] == "status"


async def test_errors_for_a_request_carry_its_request_id(client: Client) -> None:
    reply = await client.request("get_csv_data", filename="../../etc/passwd")
    assert reply["type"] == "error" and "climbs out" in reply["message"]


async def test_symlink_out_of_readings_is_refused(
    client: Client, store: Store, data_dir: Path
) -> None:
    secret = data_dir / "secret.txt"
    secret.write_text(
        "timestamp,x,y,z,acceleration\n2026-11-27T15:22:00.000000Z,1,2,3,4242.424242\n"
    )
    victim = store.file_list()[-1]
    target = data_dir / "readings" / victim
    target.unlink()
    target.symlink_to(secret)
    reply = await client.request("get_csv_data", filename=victim)
    assert reply["type"] == "error" and "4242" not in json.dumps(reply)


async def test_an_export_leaves_out_a_segment_replaced_by_a_symlink(
    server: WiloServer, client: Client, store: Store, data_dir: Path
) -> None:
    marker = b"4242.424242"
    secret = data_dir / "secret.txt"
    secret.write_bytes(b"timestamp,x,y,z,acceleration\n2026-11-27T15:22:00.000000Z,1,2,3," + marker)
    victim = store.file_list()[-1]
    target = data_dir / "readings" / victim
    target.unlink()
    target.symlink_to(secret)
    export = await client.request("export_all_csv_zip")
    assert export["file_count"] == len(store.file_list()) - 1
    status_code, _, body = await http_get(
        server.port or 0, export["download_url"].split(str(server.port), 1)[1]
    )
    assert status_code == 200
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert all(marker not in archive.read(name) for name in archive.namelist())


async def test_a_secret_beside_readings_is_never_read(
    server: WiloServer, client: Client, data_dir: Path, store: Store
) -> None:
    marker = "4242.424242"
    secret = data_dir / "secret.txt"
    secret.write_text(f"timestamp,x,y,z,acceleration\n2026-11-27T15:22:00.000000Z,1,2,3,{marker}\n")
    day = data_dir / "readings/2026/11/Week_4/27"
    (day / "235959.csv").symlink_to(secret)  # a planted, well-named link to it
    attempts = [
        "../secret.txt",
        "../../secret.txt",
        "2026/../../secret.txt",
        str(secret),
        "2026/11/Week_4/27/235959.csv",
        "2026/11/Week_4/27/../../../../../secret.txt",
        "secret.txt",
        "2026%2F..%2F..%2Fsecret.txt",
    ]
    replies = [await client.request("get_csv_data", filename=name) for name in attempts]
    replies += [await client.request("get_file_list"), await client.request("get_folder_structure")]
    replies += [await client.request("get_recent_data")]
    for reply in replies:
        assert marker not in json.dumps(reply)
    assert all(r["type"] == "error" for r in replies[: len(attempts)])
    for path in [
        "/exports/../secret.txt",
        "/exports/%2e%2e%2fsecret.txt",
        "/exports/secret.txt",
        "/../secret.txt",
        "/readings/../secret.txt",
    ]:
        status_code, _, body = await http_get(server.port or 0, path)
        assert status_code == 404 and marker.encode() not in body


async def test_oversized_frame_closes_1009_and_others_go_on(
    make_server: Any,
) -> None:
    server = await make_server(max_frame_bytes=2048)
    async with connect(ws_url(server)) as big, connect(ws_url(server)) as other:
        await big.send(json.dumps({"command": "get_status", "pad": "x" * 4096}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await big.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert (await Client(other).request("get_status"))["type"] == "status"


async def test_request_flood_is_rate_limited_and_others_are_served(
    make_server: Any,
) -> None:
    # the server's clock stands still: the budget refills only when the test moves it
    server_clock = FakeClock()
    server = await make_server(max_requests_per_second=50.0, clock=server_clock)
    async with connect(ws_url(server)) as flood_ws, connect(ws_url(server)) as calm_ws:
        flood, calm = Client(flood_ws), Client(calm_ws)
        frames = [json.dumps({"command": "get_status", "request_id": i}) for i in range(1000)]

        async def send_all() -> None:
            for text in frames:
                await flood_ws.send(text)

        sender = asyncio.create_task(send_all())
        replies: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(30):
            while len(replies) < 1000:
                message = json.loads(await flood_ws.recv())
                if "request_id" in message:
                    replies[message["request_id"]] = message
                if len(replies) == 500:
                    # mid-flood, another client is still answered
                    assert (await calm.request("get_file_list"))["type"] == "file_list"
        await sender
        errors = [r for r in replies.values() if r["type"] == "error"]
        limited = [r for r in errors if "rate limited" in r["message"]]
        # within the rate, a request beyond the client's queue is refused 'busy' at once
        busy = [r for r in errors if r["message"].startswith("busy:")]
        assert len(limited) + len(busy) == len(errors)
        assert len(limited) >= 800
        assert server.counters.rate_limited_total == len(limited)
        assert server.counters.busy_total == len(busy)
        server_clock.now += 1.0  # the budget refills
        assert (await flood.request("get_status"))["type"] == "status"


async def test_200_simultaneous_connections_hit_max_clients_cleanly(
    make_server: Any,
) -> None:
    # one address here: the per-address cap (tests/server/test_hostile.py) is lifted
    server = await make_server(max_clients=64, max_connections_per_address=512)
    async with connect(ws_url(server)) as first:
        results = await asyncio.gather(
            *(connect(ws_url(server), open_timeout=20) for _ in range(200)),
            return_exceptions=True,
        )
        opened = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, InvalidStatus)]
        assert len(refused) + len(opened) == 200
        assert len(opened) == 63
        assert all(r.response.status_code == 503 for r in refused)
        assert b"max_clients" in refused[0].response.body
        assert (await Client(first).request("get_status"))["type"] == "status"
        assert (await Client(opened[-1]).request("get_file_list"))["type"] == "file_list"
        await asyncio.gather(*(ws.close() for ws in opened))

    async def reconnect() -> str:
        async with connect(ws_url(server)) as again:
            return str((await Client(again).request("get_status"))["type"])

    assert await reconnect() == "status"
    assert server.counters.connections_rejected["max_clients"] == 137


async def test_healthz_follows_the_service_health(server: WiloServer, control: Control) -> None:
    status_code, headers, body = await http_get(server.port or 0, "/healthz")
    assert status_code == 200
    assert json.loads(body) == {
        "status": "ok",
        "reason": "ok",
        "collecting": True,
        "running": True,
        "paused": False,
        "release": RUNNING_RELEASE,
    }
    assert headers["content-type"] == "application/json"
    control.healthy = (False, "sampler not alive")
    control.paused = True
    status_code, _, body = await http_get(server.port or 0, "/healthz")
    assert status_code == 503
    assert json.loads(body) == {
        "status": "unhealthy",
        "reason": "sampler not alive",
        "collecting": False,
        "running": True,
        "paused": True,
        "release": RUNNING_RELEASE,
    }


async def test_metrics_and_unknown_paths(server: WiloServer, client: Client) -> None:
    await client.request("get_status")
    status_code, headers, body = await http_get(server.port or 0, "/metrics")
    assert status_code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "wilo_ws_clients 1" in text
    assert 'wilo_samples_lost_total{cause="fifo_overflow"} 0' in text
    assert "wilo_storage_free_bytes" in text and "wilo_live_frames_dropped_total 0" in text
    assert (await http_get(server.port or 0, "/nope"))[0] == 404
    assert (await http_get(server.port or 0, "/exports/readings_nope.zip"))[0] == 404


async def test_the_built_in_page_is_served_at_root(server: WiloServer) -> None:
    status_code, headers, body = await http_get(server.port or 0, "/")
    assert status_code == 200 and headers["content-type"].startswith("text/html")
    assert b"<html" in body.lower()
    assert (await http_get(server.port or 0, "/app.js"))[0] == 200


async def test_added_commands_are_validated_and_answered(server: WiloServer) -> None:
    seen: list[float | None] = []

    def features(request: Any) -> dict[str, Any]:
        seen.append(request.seconds)
        return {"type": "features", "data": []}

    async with connect(ws_url(server)) as ws:
        client = Client(ws)
        before = await client.request("get_features")
        assert before["type"] == "error" and "unknown command" in before["message"]
        server.add_command("get_features", features, threaded=True)
        reply = await client.request("get_features", seconds=60)
        assert reply["type"] == "features" and reply["request_id"].startswith("r")
        bad = await client.request("get_features", seconds="x")
        assert bad["type"] == "error" and "seconds" in bad["message"]
    assert seen == [60.0]
    with pytest.raises(ValueError, match="built-in"):
        server.add_command("get_status", features)


async def test_a_connection_that_never_sends_its_request_is_dropped(make_server: Any) -> None:
    server = await make_server(request_timeout_seconds=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /heal")  # half a request line, then silence
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # the server hung up
    writer.close()
    assert (await http_get(server.port or 0, "/healthz"))[0] == 200


async def test_sockets_that_send_nothing_are_dropped_and_their_slots_freed(
    make_server: Any,
) -> None:
    """They wait for their first byte without a connection object (listener.Accepted): the
    deadline still drops them, and gives their slots back."""
    server = await make_server(request_timeout_seconds=0.2, max_connections_per_address=2)
    port = server.port or 0
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for reader, writer in silent:
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # the server hung up
        writer.close()
    assert (await http_get(port, "/healthz"))[0] == 200  # the address is under its cap again


async def test_stop_closes_sockets_still_waiting_for_their_request(make_server: Any) -> None:
    server = await make_server(request_timeout_seconds=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for _ in range(200):  # until it is accepted and waiting (10 s at most)
        if server._waiting:
            break
        await asyncio.sleep(0.05)
    assert len(server._waiting) == 1
    await server.stop()
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""
    writer.close()


@pytest.mark.parametrize("request_id", [0, ""])
async def test_a_falsy_request_id_is_echoed_in_every_kind_of_reply(
    server: WiloServer, request_id: object
) -> None:
    """0 and "" are request ids like any other: a client waiting for its reply by id must get it
    (found by timing out in a flood test when 0 was dropped)."""
    frames: list[dict[str, object]] = [
        {"command": "get_status"},
        {"command": "get_file_list"},
        {"command": "get_folder_structure"},
        {"command": "get_recent_data", "seconds": 2, "max_points": 10},
        {"command": "pause_collection"},
        {"command": "resume_collection"},
        {"command": "subscribe_live", "max_rate_hz": 50},
        {"command": "unsubscribe_live"},
        {"command": "export_all_csv_zip"},
        {"command": "get_csv_data", "filename": "../etc/passwd"},  # an error reply
        {"command": "no_such_command"},  # an error reply before dispatch
    ]
    async with connect(ws_url(server)) as ws:
        client = Client(ws)
        for frame in frames:
            await client.send_raw(json.dumps({**frame, "request_id": request_id}))
            async with asyncio.timeout(10):
                while True:
                    reply = json.loads(await ws.recv())
                    if "request_id" in reply:
                        break
            assert reply["request_id"] == request_id and type(reply["request_id"]) is type(
                request_id
            ), (frame, reply)
