"""End to end: the real `wilo-backend run` process, simulated sensor, a real client, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from waiting import wait_for

LISTENING = re.compile(r"listening on [^ ]+:(\d+)")


class RunningService:
    def __init__(self, process: subprocess.Popen[str], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return self.log_path.read_text()

    def request(self, command: str, **fields: object) -> dict[str, object]:
        with connect(self.url, open_timeout=5) as ws:
            ws.send(json.dumps({"command": command, "request_id": "t", **fields}))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                reply = json.loads(ws.recv(timeout=10))
                if reply.get("request_id") == "t":
                    return dict(reply)
        raise AssertionError(f"no reply to {command}")


def start_service(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> RunningService:
    log_path = tmp_path / "service.log"
    environ = {
        **os.environ,
        "WILO_STORAGE_FSYNC": "false",
        "WILO_SAMPLER_RT_PRIORITY": "0",
        "WILO_SAMPLER_CPU": "none",
        **(env or {}),
    }
    command = [sys.executable, "-m", "wilo_backend.cli", "run", "--data-dir", str(tmp_path)]
    command += ["--host", "127.0.0.1", "--port", "0", *extra]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environ,
            text=True,
            start_new_session=True,  # its own process group, as under systemd
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_text())
        if match:
            return RunningService(process, int(match.group(1)), log_path)
        if process.poll() is not None:
            raise AssertionError("service exited early:\n" + log_path.read_text())
        time.sleep(0.05)
    process.kill()
    raise AssertionError("service did not start:\n" + log_path.read_text())


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    running = start_service(tmp_path, "--sensor", "sim")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_runs_stores_serves_and_stops_cleanly(service: RunningService, tmp_path: Path) -> None:
    first = service.request("get_status")
    assert first["type"] == "status"
    data = first["data"]
    assert isinstance(data, dict)
    assert {"connected", "running", "paused", "sampling_rate", "total_samples"} <= data.keys()
    assert {"csv_files", "latest_file"} <= data.keys()

    def samples() -> int:
        status = service.request("get_status")["data"]
        assert isinstance(status, dict)
        return int(status["total_samples"])

    before = samples()
    wait_for(lambda: samples() > before + 800)
    readings = tmp_path / "readings"
    wait_for(lambda: any(readings.rglob("*.csv")) and (readings / "aggregate_data.csv").exists())
    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/healthz", timeout=5) as reply:
        assert reply.status == 200

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=30) == 0, service.log()
    assert "stopped cleanly" in service.log()

    # After a clean stop the aggregate is exactly header + every retained segment.
    segments = sorted(p for p in readings.rglob("*.csv") if p.name != "aggregate_data.csv")
    assert segments
    header = "timestamp,x,y,z,acceleration\n"
    body = "".join(p.read_text().removeprefix(header) for p in segments)
    assert (readings / "aggregate_data.csv").read_text() == header + body
    rows = body.splitlines()
    assert len(rows) >= 800
    assert all(row.count(",") == 4 and row[:4].isdigit() for row in rows)


def test_missing_sensor_keeps_serving_and_never_falls_back(tmp_path: Path) -> None:
    running = start_service(tmp_path, "--sensor", "mpu6050", env={"WILO_SENSOR_I2C_BUS": "250"})
    try:
        reply = running.request("get_status")
        data = reply["data"]
        assert isinstance(data, dict)
        assert data["connected"] is False
        assert data["total_samples"] == 0
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{running.port}/healthz", timeout=5)
            raise AssertionError("healthz must not be 200 without a sensor")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        wait_for(lambda: "i2c" in running.log().lower())
    finally:
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=30) == 0, running.log()
    assert not any((tmp_path / "readings").rglob("??????.csv"))


def test_main_shim_runs_like_the_seed() -> None:
    shim = Path(__file__).resolve().parent.parent / "backend" / "main.py"
    result = subprocess.run(
        [sys.executable, str(shim), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--sensor" in result.stdout


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_second_instance_on_the_same_data_folder_changes_no_byte(
    service: RunningService, tmp_path: Path
) -> None:
    readings = tmp_path / "readings"
    wait_for(
        lambda: (readings / "aggregate_data.csv").exists() and any(readings.rglob("??????.csv"))
    )
    time.sleep(1.5)  # mid-segment, rows flushed: what start-up repair would have cut and merged
    service.process.send_signal(signal.SIGSTOP)  # freeze the first so its files stand still
    try:
        before = _tree_bytes(tmp_path)
        second = subprocess.run(
            [
                *(sys.executable, "-m", "wilo_backend.cli", "run", "--sensor", "sim"),
                *("--data-dir", str(tmp_path), "--host", "127.0.0.1", "--port", "0"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "WILO_STORAGE_FSYNC": "false", "WILO_SAMPLER_CPU": "none"},
        )
        export = subprocess.run(
            [sys.executable, "-m", "wilo_backend.cli", "export", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        after = _tree_bytes(tmp_path)
    finally:
        service.process.send_signal(signal.SIGCONT)
    for result in (second, export):
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr  # one line, no traceback
        assert str(tmp_path) in lines[0] and f"pid {service.process.pid}" in lines[0]
    assert after.keys() == before.keys()
    assert [name for name in before if before[name] != after[name]] == []
    # and the first goes on as if nothing happened
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=30) == 0, service.log()


def test_stopped_collection_shows_in_healthz_metrics_and_the_log(service: RunningService) -> None:
    port = service.port

    def healthz_code() -> int:
        try:
            return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status)
        except urllib.error.HTTPError as exc:
            return exc.code

    wait_for(lambda: healthz_code() == 200)
    with connect(service.url, open_timeout=5) as ws:
        ws.send(json.dumps({"command": "stop_collection", "request_id": 1}))
        peer_port = ws.local_address[1]
        while json.loads(ws.recv(timeout=10)).get("request_id") != 1:
            pass
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        raise AssertionError("healthz must not be 200 while collection is stopped")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        health = json.loads(exc.read())
    assert health["collecting"] is False and "stop" in health["reason"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    assert "\nwilo_collecting 0\n" in metrics and "\nwilo_paused 0\n" in metrics
    wait_for(lambda: f"stop_collection requested by 127.0.0.1:{peer_port}" in service.log())
    assert "connection rejected" not in service.log()  # /healthz and /metrics are not rejections


def test_sigterm_to_the_process_group_stores_every_delivered_sample(tmp_path: Path) -> None:
    """systemd stops a unit by signalling every process in it at once."""
    running = start_service(tmp_path, "--sensor", "sim")
    try:
        wait_for(lambda: any((tmp_path / "readings").rglob("??????.csv")))
        time.sleep(1.0)
        os.killpg(os.getpgid(running.process.pid), signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0, running.log()
    finally:
        if running.process.poll() is None:
            running.process.kill()
    log = running.log()
    assert "died" not in log and "Traceback" not in log, log
    match = re.search(r"stopped cleanly: (\d+) samples stored \((\d+) delivered", log)
    assert match, log
    assert int(match.group(1)) == int(match.group(2)) > 800
    # the sampler's lines carry a timestamp like the service's own
    sampler_lines = [line for line in log.splitlines() if "wilo_backend.sampler" in line]
    assert sampler_lines and all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in sampler_lines)


def test_a_batch_the_store_raises_on_costs_only_itself_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pump hands a list of batches to the store; one that fails must not take the rest of
    the list with it, and its samples are counted, not lost silently."""
    import numpy as np

    from wilo_backend.config import load_config
    from wilo_backend.model import SampleBatch
    from wilo_backend.service import Service

    config = load_config(
        None,
        environ={},
        overrides={
            "storage": {"data_dir": str(tmp_path), "fsync": False},
            "sensor": {"driver": "sim"},
            "analytics": {"enabled": False},
        },
    )
    service = Service(config)
    service.store.open()
    try:
        start_ns = time.time_ns()
        batches = [
            SampleBatch(
                k * 100, start_ns + np.arange(k * 100, k * 100 + 100) * 1_250_000, np.ones((100, 3))
            )
            for k in range(5)
        ]
        real_append = service.store.append

        def append(batch: SampleBatch) -> None:
            if batch.first_index == 200:
                raise OSError(5, "Input/output error")
            real_append(batch)

        service.store.append = append  # type: ignore[method-assign]
        service._store_batches(batches)
        service._store_batches(batches[2:3])  # fails again: counted, no second traceback
        data = service.status_data()
        assert data["samples_store_failed"] == 200
        assert data["samples_stored"] == 400  # the batches after the failing one too
    finally:
        service.store.close()
    rows = (tmp_path / "readings" / "aggregate_data.csv").read_text().splitlines()[1:]
    assert len(rows) == 400
    assert caplog.text.count("Traceback") == 1
