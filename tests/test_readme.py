"""The README is true: its configuration reference is the real set of defaults, the numbers it
states come from the code, and every command of its getting-started and command-line sections
runs as written on a fresh copy of the repository (never a deploy command)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wilo_backend.config import Config, config_to_toml
from wilo_backend.model import OUTPUT_RATE_HZ

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
UP = re.compile(r"wilo-backend \S+ up: .* listening on [^ ]+:(\d+)")
SERVICE_LINE = re.compile(r"(^|\s)(make run|wilo-backend run)(\s|$)")


def readme() -> str:
    return README.read_text()


def getting_started() -> str:
    text = readme()
    return text[: text.index("\n## ")]


def section(title: str) -> str:
    text = readme()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def sh_blocks(text: str) -> list[list[str]]:
    """The commands of each ```sh block, comments and blank lines left out."""
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    out = []
    for block in blocks:
        lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
        out.append([line for line in lines if line and not line.startswith("#")])
    return out


def test_readme_opens_with_run_and_test() -> None:
    head = getting_started()
    assert "make run" in head
    assert "make test" in head


def test_readme_config_block_matches_the_defaults() -> None:
    text = readme()
    part = text[text.index("## Configuration") :]
    block = part[part.index("```toml\n") + len("```toml\n") :]
    block = block[: block.index("```")]
    assert block == config_to_toml(Config())


def stated(pattern: str) -> tuple[str, ...]:
    """The groups of the one place the README states `pattern` (whitespace as in prose)."""
    found = re.findall(pattern.replace(" ", r"\s+"), readme())
    assert len(found) >= 1, f"README no longer states {pattern!r}"
    first = found[0]
    return first if isinstance(first, tuple) else (first,)


def test_the_numbers_the_readme_states_are_the_code_defaults() -> None:
    c = Config()
    assert float(stated(r"sampled at \*\*(\d+) Hz\*\*")[0]) == OUTPUT_RATE_HZ
    files, hours = stated(r"\*\*(\d+) one-minute segments = (\d+) hours\*\*")
    assert int(files) == c.storage.max_files and c.storage.segment_seconds == 60
    assert c.storage.max_files * c.storage.segment_seconds == int(hours) * 3600
    assert int(stated(r"WebSocket server on port \*\*(\d+)\*\*")[0]) == c.server.port
    assert int(stated(r"live page at http://127.0.0.1:(\d+)/")[0]) == c.server.port
    assert stated(r"The defaults, ([\d.]+) / ([\d.]+) / ([\d.]+) mm/s") == tuple(
        repr(v) for v in (c.analytics.zone_ab_mms, c.analytics.zone_bc_mms, c.analytics.zone_cd_mms)
    )
    amplitude, hz = stated(r"simulator's default signal \(([\d.]+) m/s² at ([\d.]+) Hz")
    assert float(amplitude) == c.sensor.sim.vibration_ms2
    assert float(hz) == c.sensor.sim.vibration_hz
    assert "make run" in readme() and "--data-dir data" in readme()
    assert "DATA_DIR ?= data" in (ROOT / "Makefile").read_text()


# --- the commands, run as written on a fresh copy ----------------------------------------------


def user_environment() -> dict[str, str]:
    """A shell's environment: no WILO_* settings, no active venv, not inside this `make test`."""
    drop = ("WILO_", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    venvs = {str(ROOT / ".venv" / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in venvs)
    return env


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, nothing ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = tmp_path_factory.mktemp("clone") / "wilo-backend"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    return copy


class Terminal:
    """Lines typed into a shell in `cwd`; `. x` lines stay in force, as in a real terminal."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.sourced: list[str] = []
        self.service: subprocess.Popen[bytes] | None = None
        self.service_log = cwd.parent / "service.log"
        self.env = user_environment()

    def script(self, line: str) -> str:
        return "".join(f"{s}\n" for s in self.sourced) + line

    def type(self, line: str) -> subprocess.CompletedProcess[str]:
        if line.startswith((". ", "source ")):
            self.sourced.append(line)
            line = ":"
        result = subprocess.run(
            ["bash", "-ec", self.script(line)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"`{line}` exit {result.returncode}:\n{result.stderr}"
        return result

    def start(self, line: str) -> int:
        """A line that runs the service: started, and left running until stop(); its port."""
        self.stop()
        with self.service_log.open("w") as log:
            self.service = subprocess.Popen(
                ["bash", "-ec", self.script(line)],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300  # the first `make run` installs the runtime
        while not (match := UP.search(self.service_log.read_text())):
            assert self.service.poll() is None, f"`{line}` ended:\n{self.service_log.read_text()}"
            assert time.monotonic() < deadline, f"`{line}` not up:\n{self.service_log.read_text()}"
            time.sleep(0.1)
        return int(match.group(1))

    def stop(self) -> None:
        """Ctrl-C, as the README says: the whole foreground group gets SIGINT."""
        if self.service is None:
            return
        os.killpg(self.service.pid, signal.SIGINT)
        try:
            self.service.wait(timeout=60)
        finally:
            if self.service.poll() is None:
                os.killpg(self.service.pid, signal.SIGKILL)
                self.service.wait()
        assert "stopped cleanly" in self.service_log.read_text(), self.service_log.read_text()
        self.service = None


@pytest.fixture
def terminal(fresh: Path) -> Iterator[Terminal]:
    term = Terminal(fresh)
    yield term
    term.stop()


def suite_line(line: str) -> bool:
    """`make test` is the suite this test belongs to: CI runs it (.ci/run), not this test."""
    return line == "make test"


def test_ci_runs_the_readmes_make_test() -> None:
    assert "make test" in sh_blocks(getting_started())[0]
    # each stage runs through .ci/run's `stage` (it prints the stage's time)
    assert re.search(r"^(stage )?make test$", (ROOT / ".ci" / "run").read_text(), flags=re.M)


def test_no_deploy_command_among_the_commands_run() -> None:
    for block in [*sh_blocks(getting_started()), *sh_blocks(section("Command line"))]:
        for line in block:
            assert "deploy" not in line and "ansible" not in line, line


def zone_of(terminal: Terminal) -> tuple[str, float]:
    """The running service's zone and velocity once its first window is in."""
    deadline = time.monotonic() + 30
    while True:
        data = json.loads(terminal.type(".venv/bin/wilo-backend status --json").stdout)
        if data.get("zone"):
            return str(data["zone"]), float(data["vrms_mms"])
        assert time.monotonic() < deadline, data
        time.sleep(0.5)


@pytest.mark.slow
def test_every_readme_command_runs_as_written_on_a_fresh_clone(terminal: Terminal) -> None:
    started = []
    # Getting started: one terminal runs the service, the other the commands.
    (block,) = sh_blocks(getting_started())
    for line in block:
        if suite_line(line):
            continue
        if SERVICE_LINE.search(line):
            port = terminal.start(line)
            started.append(port)
            if len(started) == 1:
                log = terminal.service_log.read_text()
                assert "Installing the runtime only (backend/requirements.txt: smbus2" in log
                zone, vrms = zone_of(terminal)
                amplitude, _, stated_vrms, stated_zone = stated(
                    r"signal \(([\d.]+) m/s² at ([\d.]+) Hz plus harmonics\) is ≈ ([\d.]+) mm/s: "
                    r"zone ([A-D])"
                )
                assert zone == stated_zone
                assert abs(vrms - float(stated_vrms)) < 0.1, vrms
                # "VIBRATION_MS2=1.5 shows zone D": velocity scales with the amplitude
                loud = float(stated(r"WILO_SENSOR_SIM_VIBRATION_MS2=([\d.]+) make run")[0])
                assert stated(r"VIBRATION_MS2=[\d.]+ make run` shows zone ([A-D])")[0] == "D"
                assert vrms * loud / float(amplitude) >= Config().analytics.zone_cd_mms
            continue
        output = terminal.type(line).stdout
        if "status" in line:
            assert f":{started[-1]}/: collection running" in output
    terminal.stop()
    assert started == [Config().server.port, 9000]
    # make run installed the runtime only, and said so; the dev tools are make test's
    assert not (terminal.cwd / ".venv" / "bin" / "pytest").exists()
    assert not (terminal.cwd / ".venv" / "bin" / "ansible-playbook").exists()
    assert (terminal.cwd / ".venv" / ".runtime-installed").exists()

    # Command line: the first block while `make run` serves, the export after it stopped.
    first, after_stop = sh_blocks(section("Command line"))
    terminal.start("make run")
    for line in first:
        assert not SERVICE_LINE.search(line), line
        terminal.type(line)
    terminal.stop()
    for line in after_stop:
        output = terminal.type(line).stdout
    assert "data/exports/readings_" in output

    # Everything written went under the one ignored folder.
    untracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=terminal.cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line for line in untracked.splitlines() if not line.startswith("A ")] == []
    assert {p.name for p in (terminal.cwd / "data").iterdir()} >= {"readings", "exports"}


def test_make_help_puts_user_targets_apart_from_contributor_targets() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        env=user_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    groups: dict[str, list[str]] = {}
    heading = ""
    for line in result.stdout.splitlines():
        if not line.startswith(" "):
            heading = line
            groups[heading] = []
        else:
            groups[heading].append(line.split()[1])
    use, work = list(groups)
    assert use.startswith("Use it") and work.startswith("Work on it")
    assert {"run", "help"} <= set(groups[use]) and "test" not in groups[use]
    assert {"test", "lint", "install"} <= set(groups[work]) and "run" not in groups[work]
    targets = re.findall(r"^([a-z-]+):.*## ", (ROOT / "Makefile").read_text(), flags=re.M)
    assert sorted(groups[use] + groups[work]) == sorted(targets)
