"""The operator's commands as a person types them: the installed `wilo-backend` script as a
subprocess, its one-line messages and its exit codes (0 ok, 1 failure, 2 bad usage/config)."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from wilo_backend.cli import build_parser
from wilo_backend.config import DEFAULT_CONFIG_PATH

WILO = str(Path(sys.executable).parent / "wilo-backend")
TOKEN = "s3cret-token"
UP = re.compile(r"wilo-backend \S+ up: .* listening on [^ ]+:(\d+)")


def environment(**extra: str) -> dict[str, str]:
    """The caller's environment without any WILO_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILO_")}
    return {**env, **extra}


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WILO, *args],
        env=env or environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The result failed with `code` and a single stderr line holding every word; no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """`wilo-backend run --sensor sim` as the operator starts it, on a port from the environment."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [WILO, "run", "--sensor", "sim", "--data-dir", str(data_dir)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not UP.search(self.log()):
            assert self.process.poll() is None, "service exited early:\n" + self.log()
            assert time.monotonic() < deadline, "service did not start:\n" + self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


SERVICE_ENV = {
    "WILO_STORAGE_FSYNC": "false",
    "WILO_SAMPLER_RT_PRIORITY": "0",
    "WILO_SAMPLER_CPU": "none",
    "WILO_SERVER_HOST": "127.0.0.1",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One protected service: its port and token reach it through WILO_* as on a real install."""
    port = free_port()
    env = environment(
        **SERVICE_ENV,
        WILO_SERVER_PORT=str(port),
        WILO_SERVER_AUTH_TOKEN=TOKEN,
        WILO_SERVER_PROTECT_READS="true",
    )
    running = Service(tmp_path_factory.mktemp("svc") / "data", env)
    yield running
    running.stop()


# --- logs ------------------------------------------------------------------------------------


def test_the_start_up_says_server_listening_once(service: Service) -> None:
    assert service.log().count("server listening") == 1, service.log()


def test_a_taken_port_is_one_line_and_exit_1(service: Service, tmp_path: Path) -> None:
    result = cli("run", "--sensor", "sim", "--data-dir", str(tmp_path / "d"), env=service.env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # run logs its start and its clean stop before it; the error is the last line
    last = result.stderr.strip().splitlines()[-1]
    assert f"cannot listen on 127.0.0.1:{service.env['WILO_SERVER_PORT']}: " in last
    assert last.endswith(f": {os.strerror(errno.EADDRINUSE)}; stopped"), last


# --- status ----------------------------------------------------------------------------------


def test_status_reads_port_and_token_from_the_environment_as_run_does(service: Service) -> None:
    result = cli("status", env=service.env)
    assert result.returncode == 0, result.stderr
    port = service.env["WILO_SERVER_PORT"]
    first, *rest = result.stdout.splitlines()
    assert first.startswith(f"wilo-backend 0.1.0 at ws://127.0.0.1:{port}/: collection running")
    assert "sensor connected" in first
    assert any(line.startswith("samples:") for line in rest)
    assert any(line.startswith("zone:") for line in rest)


def test_status_reads_the_port_from_a_config_file(service: Service, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    port = service.env["WILO_SERVER_PORT"]
    config.write_text(f'[server]\nport = {port}\nauth_token = "{TOKEN}"\n')
    result = cli("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"ws://127.0.0.1:{port}/" in result.stdout


def test_status_url_token_and_json_flags(service: Service) -> None:
    url = f"ws://127.0.0.1:{service.env['WILO_SERVER_PORT']}/"
    result = cli("status", "--url", url, "--token", TOKEN, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["running"] is True and data["total_samples"] > 0
    assert data["storage"]["state"] == "ok"


def test_status_error_reply_is_an_error(service: Service) -> None:
    url = f"ws://127.0.0.1:{service.env['WILO_SERVER_PORT']}/"
    for token_args in ([], ["--token", "wrong"]):
        result = cli("status", "--url", url, *token_args)
        one_line_error(result, 1, "answered with an error: unauthorized", "--token")
        assert result.stdout == ""


def test_status_without_a_service_is_one_line_exit_1() -> None:
    port = free_port()
    result = cli("status", env=environment(WILO_SERVER_PORT=str(port)))
    one_line_error(result, 1, f"ws://127.0.0.1:{port}/", "connection refused")


def test_status_bad_url_or_timeout_is_usage() -> None:
    one_line_error(cli("status", "--url", "http://127.0.0.1:1/"), 2, "not a WebSocket URL")
    one_line_error(cli("status", "--timeout", "0"), 2, "--timeout 0 must be between")


# --- export ----------------------------------------------------------------------------------


def test_export_of_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    one_line_error(cli("export", "--data-dir", str(missing)), 2, str(missing), "does not exist")
    assert not missing.exists()


def test_export_of_a_folder_without_readings_creates_nothing(tmp_path: Path) -> None:
    one_line_error(cli("export", "--data-dir", str(tmp_path)), 2, "no readings/", "--data-dir")
    assert list(tmp_path.iterdir()) == []


def test_export_with_no_segments_yet_is_exit_1_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "readings").mkdir()
    one_line_error(cli("export", "--data-dir", str(tmp_path)), 1, "nothing to export")
    assert [p.name for p in tmp_path.iterdir()] == ["readings"]


def test_export_of_a_running_service_folder_is_refused(service: Service) -> None:
    result = cli("export", "--data-dir", str(service.data_dir))
    one_line_error(result, 2, str(service.data_dir), f"pid {service.process.pid}")


def test_export_after_a_run_hides_the_data_path(tmp_path: Path) -> None:
    env = environment(**SERVICE_ENV, WILO_SERVER_PORT="0")
    running = Service(tmp_path / "data", env)
    try:
        deadline = time.monotonic() + 20
        while not any((running.data_dir / "readings").rglob("[0-9]*.csv")):
            assert time.monotonic() < deadline, "no segment written"
            time.sleep(0.1)
    finally:
        running.stop()
    result = cli("export", "--data-dir", str(running.data_dir))
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.split(" (")[0])
    assert path.parent == running.data_dir / "exports"
    with zipfile.ZipFile(path) as zf:
        readme = zf.read("README.txt").decode()
        assert len(zf.namelist()) >= 2
    assert "m/s^2" in readme
    assert str(tmp_path) not in readme


# --- check-config ----------------------------------------------------------------------------


def test_check_config_reports_every_problem_with_the_cross_field_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[sensor]\ndriver = "x"\n[server]\nport = 99999\n'
        "[analytics]\nzone_ab_mms = 5.0\nzone_bc_mms = 2.0\nband_low_hz = -1.0\n"
    )
    result = cli("check-config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    prefix = "wilo-backend check-config: config: "
    assert all(line.startswith(prefix) for line in lines)
    keys = [line.removeprefix(prefix).split(":")[0] for line in lines]
    assert keys == [
        "sensor.driver",
        "server.port",
        "analytics.band_low_hz",
        "analytics.zone_ab_mms, zone_bc_mms, zone_cd_mms",
    ]


def test_check_config_says_which_file_it_read(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[server]\nport = 9100\n")
    result = cli("check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"# read {good}"
    assert "port = 9100" in result.stdout


def test_check_config_without_a_file_says_so(tmp_path: Path) -> None:
    result = cli("check-config", env=environment(WILO_SERVER_PORT="9000"))
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    if DEFAULT_CONFIG_PATH.is_file():
        assert first == f"# read {DEFAULT_CONFIG_PATH}"
    else:
        assert first.startswith("# no config file read")
        assert str(DEFAULT_CONFIG_PATH) in first
    assert second == "# with the environment's WILO_SERVER_PORT"
    assert "port = 9000" in result.stdout


def test_check_config_file_and_a_different_config_flag_is_usage(tmp_path: Path) -> None:
    one, other = tmp_path / "one.toml", tmp_path / "other.toml"
    one.write_text("[server]\nport = 9101\n")
    other.write_text("[server]\nport = 9102\n")
    result = cli("check-config", str(one), "--config", str(other))
    one_line_error(result, 2, "two config files", str(one), str(other))
    same = cli("check-config", str(one), "--config", str(one))
    assert same.returncode == 0 and "port = 9101" in same.stdout


def test_a_missing_config_file_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    for command in ("check-config", "status", "export", "run"):
        one_line_error(cli(command, "--config", str(missing)), 2, str(missing), "not found")


# --- usage and help --------------------------------------------------------------------------

COMMANDS = ["run", "check-config", "status", "export", "bench"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["required: COMMAND"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["status", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["run", "--port", "eighty"], ["--port", "invalid int value"]),
    ],
)
def test_bad_usage_is_one_line_exit_2(args: list[str], words: list[str]) -> None:
    one_line_error(cli(*args), 2, *words, "--help")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_a_valid_example(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    examples = result.stdout.split("examples:\n")[1].splitlines()
    commands = [line.split("#")[0].strip() for line in examples if "wilo-backend" in line]
    assert commands
    for example in commands:
        words = shlex.split(example)
        words = words[[w.startswith("wilo-backend") for w in words].index(True) + 1 :]
        assert words[0] == command
        args, extra = build_parser().parse_known_args(words)  # exits 2 on a wrong flag
        assert args.command == command
        assert extra == [] or command == "bench"


def test_top_level_help_lists_the_exit_codes() -> None:
    result = cli("--help")
    assert result.returncode == 0
    assert "Exit codes: 0" in " ".join(result.stdout.split())
    for command in COMMANDS:
        assert command in result.stdout
