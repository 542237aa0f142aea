"""Config: defaults, TOML, environment, CLI overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from wilo_backend.cli import main
from wilo_backend.config import Config, ConfigError, config_to_toml, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.sensor.mode == "fifo"
    assert config.storage.max_files == 120
    assert config.storage.segment_seconds == 60
    assert config.server.port == 8765


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[sensor]\ndriver = "sim"\nmode = "polled"\n[sensor.sim]\nclock_error = 0.01\n'
        '[storage]\nflush_seconds = 2\ntimezone = "Europe/Berlin"\n',
    )
    config = load_config(path, environ={})
    assert config.sensor.driver == "sim"
    assert config.sensor.mode == "polled"
    assert config.sensor.sim.clock_error == 0.01
    assert config.storage.flush_seconds == 2.0
    assert isinstance(config.storage.flush_seconds, float)
    assert config.storage.timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[sensor]\ndriver = "fake"\n', "sensor.driver"),
        ("[sensor]\nbogus = 1\n", "sensor.bogus"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ('[storage]\nmax_files = "many"\n', "storage.max_files"),
        ("[storage]\nmax_files = 0\n", "storage.max_files"),
        ('[storage]\ntimezone = "Mars/Olympus"\n', "storage.timezone"),
        ("[storage]\nfsync = 1\n", "storage.fsync"),
        ("[server]\nport = 70000\n", "server.port"),
        ('[sampler]\ncpu = "fast"\n', "sampler.cpu"),
        ("[sensor.sim]\nclock_error = 0.5\n", "sensor.sim.clock_error"),
        ("sensor = 3\n", "sensor"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert any(p.startswith(key) for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = -1\nhost = 5\n[storage]\nmax_files = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    keys = {p.split(":")[0] for p in caught.value.problems}
    assert keys == {"server.port", "server.host", "storage.max_files"}


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[sensor\n"), environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml", environ={})


def test_environment_overrides_file_and_cli_overrides_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n")
    env = {"WILO_SERVER_PORT": "9001", "WILO_STORAGE_FSYNC": "false", "WILO_SAMPLER_CPU": "1"}
    config = load_config(path, environ=env)
    assert config.server.port == 9001
    assert config.storage.fsync is False
    assert config.sampler.cpu == 1
    config = load_config(path, environ=env, overrides={"server": {"port": 9002}})
    assert config.server.port == 9002


def test_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="WILO_SERVER_PROT"):
        load_config(None, environ={"WILO_SERVER_PROT": "1"})


def test_effective_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = load_config(None, environ={}, overrides={"server": {"port": 1234}})
    again = load_config(write(tmp_path, config_to_toml(config)), environ={})
    assert again == config


def test_token_is_never_printed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nauth_token = "s3cret"\n'), environ={})
    assert "s3cret" not in config_to_toml(config)


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, '[sensor]\ndriver = "sim"\n')
    assert main(["check-config", str(good)]) == 0
    assert 'driver = "sim"' in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage]\nmax_files = -3\nwhat = 1\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "storage.max_files" in err
    assert "storage.what: unknown key" in err


def test_a_retired_key_says_what_to_do(tmp_path: Path) -> None:
    """sensor.rate_hz was a setting with one allowed value; a file that still has it is told
    to delete the line rather than that the key is unknown."""
    path = tmp_path / "wilo.toml"
    path.write_text("[sensor]\nrate_hz = 800.0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "sensor.rate_hz: removed: the output rate is always 800 Hz; delete this line" in str(
        caught.value
    )
