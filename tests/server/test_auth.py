"""server.auth_token: control commands, exports and downloads need it; three ways to give it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect

from .conftest import Client, Control, DataFeed, http_get, ws_url

TOKEN = "s3cret-token"


@pytest.fixture
async def guarded(make_server: Any, feed: DataFeed) -> Any:
    feed.seconds(5)
    return await make_server(auth_token=TOKEN)


async def test_without_the_token_control_and_export_are_refused(
    guarded: Any, control: Control
) -> None:
    async with connect(ws_url(guarded)) as ws:
        client = Client(ws)
        for command in ("start_collection", "stop_collection", "pause_collection"):
            reply = await client.request(command)
            assert reply["type"] == "error" and reply["message"].startswith("unauthorized")
        export = await client.request("export_all_csv_zip")
        assert export["type"] == "zip_export" and export["error"].startswith("unauthorized")
        wrong = await client.request("stop_collection", token="s3cret")
        assert wrong["type"] == "error"
        # reads stay open
        assert (await client.request("get_status"))["type"] == "status"
        assert (await client.request("get_file_list"))["type"] == "file_list"
    assert control.calls == []


def _giving(server: Any, way: str, token: str) -> tuple[str, dict[str, str] | None, dict[str, str]]:
    """(URL, headers, request fields) that carry `token` the given way."""
    url = ws_url(server, query=f"?token={quote(token)}" if way == "query" else "")
    headers = {"Authorization": f"Bearer {token}"} if way == "bearer" else None
    fields = {"token": token} if way == "field" else {}
    return url, headers, fields


@pytest.mark.parametrize("way", ["query", "bearer", "field"])
async def test_each_way_of_giving_the_token_works(guarded: Any, control: Control, way: str) -> None:
    url, headers, fields = _giving(guarded, way, TOKEN)
    async with connect(url, additional_headers=headers) as ws:
        client = Client(ws)
        reply = await client.request("pause_collection", **fields)
        assert reply["type"] == "status" and reply["data"]["paused"] is True
        export = await client.request("export_all_csv_zip", **fields)
    assert control.calls == ["pause_collection"]
    assert "download_url" in export and TOKEN not in export["download_url"]
    path = export["download_url"].split(str(guarded.port), 1)[1]
    status_code, _, body = await http_get(guarded.port, path)
    assert status_code == 200 and body.startswith(b"PK")
    bare = path.split("?", 1)[0]
    assert (await http_get(guarded.port, bare))[0] == 401
    assert (await http_get(guarded.port, bare + "?sig=" + "0" * 64))[0] == 401
    assert (await http_get(guarded.port, bare + f"?token={TOKEN}"))[0] == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await http_get(guarded.port, bare, headers=bearer))[0] == 200


async def test_a_wrong_token_in_the_url_or_header_is_not_enough(guarded: Any) -> None:
    async with connect(ws_url(guarded, query="?token=nope")) as ws:
        assert (await Client(ws).request("stop_collection"))["type"] == "error"
    async with connect(ws_url(guarded), additional_headers={"Authorization": "Bearer nope"}) as ws:
        assert (await Client(ws).request("stop_collection"))["type"] == "error"


async def test_protect_reads_guards_everything_but_healthz(
    make_server: Any,
) -> None:
    server = await make_server(auth_token=TOKEN, protect_reads=True)
    async with connect(ws_url(server)) as ws:
        client = Client(ws)
        for command in ("get_status", "get_file_list", "get_recent_data", "subscribe_live"):
            reply = await client.request(command)
            assert reply["type"] == "error" and "unauthorized" in reply["message"]
        assert not any(push["type"] == "status" for push in client.pushes)
        ok = await client.request("get_status", token=TOKEN)
        assert ok["type"] == "status"
    async with connect(ws_url(server, query=f"?token={TOKEN}")) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "status"  # pushed on connect once authorized
    assert (await http_get(server.port, "/metrics"))[0] == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await http_get(server.port, "/metrics", headers=bearer))[0] == 200
    assert (await http_get(server.port, "/healthz"))[0] == 200


@pytest.mark.parametrize("way", ["query", "bearer", "field"])
@pytest.mark.parametrize(
    "near", [TOKEN[:1], TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" + TOKEN, TOKEN[1:]]
)
async def test_a_prefix_or_extension_of_the_token_is_refused(
    guarded: Any, control: Control, way: str, near: str
) -> None:
    url, headers, fields = _giving(guarded, way, near)
    async with connect(url, additional_headers=headers) as ws:
        client = Client(ws)
        reply = await client.request("stop_collection", **fields)
        assert reply["type"] == "error" and reply["message"].startswith("unauthorized")
    assert control.calls == []
    bare = "/exports/readings_20260101T000000Z.zip"
    assert (await http_get(guarded.port, bare + f"?token={quote(near)}"))[0] in (401, 404)
    assert (await http_get(guarded.port, bare, headers={"Authorization": f"Bearer {near}"}))[0] in (
        401,
        404,
    )
