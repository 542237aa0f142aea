"""The dashboard's contract (SPEC §5): its recorded command sequence against the real service,
with the type of every field it reads pinned. New fields may come; none may change type."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from test_service import start_service

SESSION = Path(__file__).parent / "fixtures" / "dashboard_session.json"
SEGMENT_PATH = re.compile(r"^[0-9]{4}/[0-9]{2}/Week_[1-5]/[0-9]{2}/[0-9]{6}(_[0-9]+)?\.csv$")
ISO_Z = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_rows(rows: object) -> None:
    assert isinstance(rows, list) and rows
    for row in rows:
        assert isinstance(row["timestamp"], str) and ISO_Z.match(row["timestamp"]), row
        for key in ("acceleration", "x", "y", "z"):
            assert _number(row[key]), (key, row)


def _check_status(data: dict[str, Any]) -> None:
    for key in ("connected", "running", "paused"):
        assert isinstance(data[key], bool), key
    assert data["sampling_rate"] == 800 and _number(data["sampling_rate"])  # nominal, printed
    assert _number(data["measured_rate_hz"])
    assert isinstance(data["total_samples"], int) and isinstance(data["csv_files"], int)
    assert data["latest_file"] is None or SEGMENT_PATH.match(data["latest_file"])


def _check_folder_structure(structure: dict[str, Any], now_s: float) -> None:
    entries = [
        entry
        for months in structure.values()
        for weeks in months.values()
        for days in weeks.values()
        for entries in days.values()
        for entry in entries
    ]
    assert entries
    for entry in entries:
        assert isinstance(entry["filename"], str) and isinstance(entry["path"], str)
        assert SEGMENT_PATH.match(entry["path"]) and entry["path"].endswith(entry["filename"])
        assert isinstance(entry["size"], int) and entry["size"] > 0
        # Unix seconds, a number: the dashboard does new Date(modified * 1000)
        assert _number(entry["modified"]) and now_s - 600 < entry["modified"] <= now_s + 1


def check_reply(reply: dict[str, Any], sent: dict[str, Any]) -> None:
    """Every field the dashboard reads, with its type."""
    kind = reply["type"]
    if kind == "status":
        _check_status(reply["data"])
    elif kind == "file_list":
        assert reply["files"] and all(SEGMENT_PATH.match(f) for f in reply["files"])
    elif kind == "folder_structure":
        _check_folder_structure(reply["structure"], time.time())
    elif kind == "csv_data":
        assert reply["filename"] == sent["filename"]  # echoed exactly: it becomes the selection
        _check_rows(reply["data"])
    elif kind == "recent_data":
        _check_rows(reply["data"])
        assert isinstance(reply["file_count"], int)
        stamps = [row["timestamp"] for row in reply["data"]]
        assert stamps == sorted(stamps)
    elif kind == "zip_export":
        assert "error" not in reply, reply
        assert isinstance(reply["download_url"], str) and reply["download_url"].startswith("http")
        assert "localhost" not in reply["download_url"]
        assert isinstance(reply["filename"], str) and isinstance(reply["file_count"], int)
    elif kind == "new_file":
        assert SEGMENT_PATH.match(reply["filename"]) and isinstance(reply["total_files"], int)
    else:
        raise AssertionError(f"unexpected reply type {kind}")


def test_the_recorded_dashboard_session_gets_the_replies_it_reads(tmp_path: Path) -> None:
    steps = json.loads(SESSION.read_text())["steps"]
    running = start_service(tmp_path, "--sensor", "sim", env={"WILO_STORAGE_SEGMENT_SECONDS": "2"})
    try:
        with connect(running.url, open_timeout=5) as ws:
            backlog: list[dict[str, Any]] = []

            def next_of(kind: str) -> dict[str, Any]:
                for i, message in enumerate(backlog):
                    if message["type"] == kind:
                        return backlog.pop(i)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    message = json.loads(ws.recv(timeout=20))
                    assert message["type"] != "error", message
                    if message["type"] == kind:
                        return dict(message)
                    backlog.append(message)
                raise AssertionError(f"no {kind}")

            check_reply(next_of("status"), {})  # pushed on connect
            # a loaded machine may take a while to write the first segment: the session needs one
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ws.send(json.dumps({"command": "get_status"}))
                if next_of("status")["data"]["csv_files"] >= 1:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # the dashboard asks for recent data a second after opening
            listed = ""
            for step in steps:
                if "push" in step:
                    check_reply(next_of(step["push"]), {})
                    continue
                sent = {k: (listed if v == "{listed}" else v) for k, v in step["send"].items()}
                backlog.clear()  # a reply to this frame, not an older push of the same type
                ws.send(json.dumps(sent))
                reply = next_of(step["reply"])
                check_reply(reply, sent)
                if reply["type"] == "file_list":
                    listed = reply["files"][-1]  # the oldest: a finished segment
    finally:
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=30)
