"""Security review of what ships, as tests: the token never reaches a log or a reply, exports need
it, the config file is 0640 root:wilo, the service user owns only its data folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from bench.servicerun import start_service
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "wilo_backend"
TOKEN = "s3cr3t-Tok3n-4f9b2c"


def _ask(ws: ClientConnection, command: str, **fields: Any) -> dict[str, Any]:
    ws.send(json.dumps({"command": command, "request_id": command, **fields}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = json.loads(ws.recv(timeout=30))
        if reply.get("request_id") == command:
            assert isinstance(reply, dict)
            return reply
    raise AssertionError(f"no reply to {command}")


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (loopback http)
            return response.status, response.read(), response.headers.get("Content-Disposition", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


def _start(
    tmp_path: Path, *, log_level: str = "DEBUG", preexec_fn: Callable[[], None] | None = None
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The real `wilo-backend run` with a token, the simulator and `log_level`; (process, port,
    log path). `preexec_fn` runs in the child before the service (e.g. to set a limit)."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nauth_token = "{TOKEN}"\nhost = "127.0.0.1"\nport = 0\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\nfsync = false\nsegment_seconds = 1\n'
        '[sensor]\ndriver = "sim"\n[sampler]\ncpu = "none"\nrt_priority = 0\n'
        f'[log]\nlevel = "{log_level}"\n'
    )
    log_path = tmp_path / "service.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WILO_")}
    process, port = start_service(
        ["--config", str(config)], log_path, env=environ, preexec_fn=preexec_fn, timeout_s=30
    )
    return process, port, log_path


def test_token_is_never_logged_or_echoed_and_exports_need_it(tmp_path: Path) -> None:
    process, port, log_path = _start(tmp_path)
    seen: list[str] = []
    try:
        base = f"ws://127.0.0.1:{port}/"
        with connect(base, open_timeout=10) as anonymous:
            refused = _ask(anonymous, "export_all_csv_zip")
            assert refused["type"] == "zip_export" and "unauthorized" in refused["error"]
            assert _ask(anonymous, "stop_collection")["type"] == "error"
            # a wrong token and a token in the wrong place are refused, and not echoed either
            wrong = _ask(anonymous, "start_collection", token=TOKEN[:-1])
            assert wrong["type"] == "error"
            _ask(anonymous, TOKEN)  # a token sent as a command: echoed to its sender only
            seen.append(json.dumps(wrong))
        deadline = time.monotonic() + 20  # a segment of data to export
        with connect(base + f"?token={TOKEN}", open_timeout=10) as ws:
            while not _ask(ws, "get_file_list")["files"] and time.monotonic() < deadline:
                time.sleep(0.2)
            export = _ask(ws, "export_all_csv_zip", token=TOKEN)
            seen += [json.dumps(_ask(ws, "get_status")), json.dumps(export)]
        with connect(
            base, open_timeout=10, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        ) as ws:
            assert _ask(ws, "pause_collection")["type"] == "status"
            assert _ask(ws, "resume_collection")["type"] == "status"
        with connect(base + "?token=wrong-" + TOKEN, open_timeout=10) as ws:
            assert _ask(ws, "stop_collection")["type"] == "error"
        url = export["download_url"]
        assert TOKEN not in url and "?sig=" in url
        bare = url.split("?", 1)[0]
        assert _get(bare)[0] == 401
        assert _get(bare + "?sig=" + "0" * 64)[0] == 401
        assert _get(bare + "?token=not-it")[0] == 401
        status, body, disposition = _get(url)
        assert status == 200 and body[:2] == b"PK" and disposition.startswith("attachment")
        metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert metrics[0] == 200
        seen.append(metrics[1].decode())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    log = log_path.read_text()
    assert "listening on" in log and "DEBUG" in log  # the log is there, at its most verbose
    assert TOKEN not in log
    assert not [text for text in seen if TOKEN in text]


def test_check_config_hides_the_token(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nauth_token = "{TOKEN}"\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WILO_")}
    shown = subprocess.run(
        [sys.executable, "-m", "wilo_backend.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=True,
    )
    assert 'auth_token = "<set, hidden>"' in shown.stdout
    assert TOKEN not in shown.stdout + shown.stderr


def _tasks() -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for path in sorted((ROLE / "tasks").glob("*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            tasks.extend(task.get("block", [task]) + task.get("rescue", []))
    return tasks


def _module(task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for name, args in task.items():
        if name.startswith("ansible.builtin.") and isinstance(args, dict):
            return name.removeprefix("ansible.builtin."), args
    return "", {}


def test_config_file_is_0640_root_wilo_wherever_the_role_writes_it() -> None:
    variables = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    variables |= yaml.safe_load((ROLE / "vars/main.yml").read_text()) or {}
    written = [
        args
        for module, args in map(_module, _tasks())
        if module in ("template", "copy") and "config.toml" in str(args.get("dest", ""))
    ]
    assert written, "the role renders the config somewhere"
    for args in written:
        assert args["owner"] == "root" and args["mode"] == "0640", args
        assert args["group"] == "{{ wilo_backend_group }}", args
    assert variables["wilo_backend_group"] == "wilo"


def test_only_the_data_folder_belongs_to_the_service_user() -> None:
    owned = [
        args.get("path") or args.get("dest")
        for module, args in map(_module, _tasks())
        if module in ("file", "template", "copy", "unarchive")
        and args.get("owner") == "{{ wilo_backend_user }}"
    ]
    assert owned == ["{{ wilo_backend_data_dir }}"]
    unit = (ROLE / "templates/etc/systemd/system/wilo-backend.service.j2").read_text()
    directives = dict(
        line.split("=", 1) for line in unit.splitlines() if re.match(r"^[A-Za-z]+=", line)
    )
    assert directives["ProtectSystem"] == "strict"  # everything else read-only for the unit
    assert directives["ReadWritePaths"] == "{{ wilo_backend_data_dir }}"
    assert directives["User"] == "{{ wilo_backend_user }}"
