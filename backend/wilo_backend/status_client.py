"""`wilo-backend status`: ask a running service for its status and say it in a few lines."""

from __future__ import annotations

import json
from typing import Any

from wilo_backend.config import ServerConfig

REQUEST_ID = "wilo-backend-status"
# Connecting and the reply each get this long; a live service answers in milliseconds.
TIMEOUT_SECONDS = 5.0


class StatusError(Exception):
    """The service could not be asked or answered with an error; the text says which and why."""


def default_url(server: ServerConfig) -> str:
    """The URL of the service that `run` with the same config listens on, from this machine."""
    host = server.host
    if host in ("", "0.0.0.0"):  # every IPv4 address: loopback is one of them
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{server.port}/"


def fetch_status(url: str, token: str, timeout_s: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    """The `data` of the service's reply to get_status; StatusError for anything else."""
    from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException
    from websockets.sync.client import connect

    request: dict[str, Any] = {"command": "get_status", "request_id": REQUEST_ID}
    if token:
        request["token"] = token
    try:
        with connect(url, open_timeout=timeout_s, close_timeout=1) as ws:
            ws.send(json.dumps(request))
            while True:  # pushes (status on connect, live frames) may come before the reply
                reply = json.loads(ws.recv(timeout=timeout_s))
                if reply.get("request_id") != REQUEST_ID:
                    continue
                if reply.get("type") == "error":
                    raise StatusError(f"{url} answered with an error: {reply.get('message')}")
                if reply.get("type") != "status" or not isinstance(reply.get("data"), dict):
                    raise StatusError(
                        f"{url} sent an unexpected reply of type {reply.get('type')!r}"
                    )
                data: dict[str, Any] = reply["data"]
                return data
    except InvalidURI as exc:
        raise ValueError(f"--url {url!r} is not a WebSocket URL (ws://HOST:PORT/)") from exc
    except ConnectionRefusedError:
        raise StatusError(
            f"cannot connect to {url}: connection refused; is the service running "
            "(`make run`, `systemctl status wilo-backend`) and is that its port?"
        ) from None
    except TimeoutError:
        raise StatusError(f"no answer from {url} within {timeout_s:g} s") from None
    except InvalidHandshake as exc:
        raise StatusError(f"{url} refused the connection: {exc}") from None
    except (OSError, WebSocketException) as exc:
        raise StatusError(f"cannot talk to {url}: {exc or type(exc).__name__}") from None
    except json.JSONDecodeError as exc:
        raise StatusError(f"{url} sent something that is not JSON: {exc}") from None


def _size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    if value >= 1 << 30:
        return f"{value / (1 << 30):,.1f} GiB"
    return f"{value / (1 << 20):,.1f} MiB"


def summary(url: str, data: dict[str, Any]) -> str:
    """A few lines for a person; `--json` gives scripts the whole reply."""
    state = "paused" if data.get("paused") else "running" if data.get("running") else "stopped"
    sensor = "sensor connected" if data.get("connected") else "SENSOR NOT CONNECTED"
    sampler = data.get("sampler") or {}
    storage = data.get("storage") or {}
    lines = [
        f"wilo-backend {data.get('version', '?')} at {url}: collection {state}, {sensor}, "
        f"{data.get('sampling_rate', 0):g} Hz",
        f"samples:  {data.get('total_samples', 0):,} read, {data.get('samples_stored', 0):,} "
        f"stored, {sampler.get('lost_samples', 0):,} lost",
        f"files:    {data.get('csv_files', 0)} segment(s), latest {data.get('latest_file') or '-'}",
        f"storage:  {storage.get('state', '?')}, {_size(storage.get('bytes_retained'))} retained, "
        f"{_size(storage.get('free_bytes'))} free"
        + (f" ({storage['error']})" if storage.get("error") else ""),
    ]
    if data.get("zone"):
        lines.append(f"zone:     {data['zone']} (velocity RMS {data.get('vrms_mms')} mm/s)")
    elif "zone" in data:
        lines.append("zone:     - (no complete window yet)")
    if sampler.get("last_error"):
        lines.append(f"sensor:   last error {sampler['last_error']}")
    return "\n".join(lines)
