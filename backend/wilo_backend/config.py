"""Typed settings: defaults, TOML, WILO_* environment, CLI flags; errors name their key."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

DEFAULT_CONFIG_PATH = Path("/etc/wilo-backend/config.toml")
ENV_PREFIX = "WILO_"

Check = Callable[[Any], str | None]


class ConfigError(ValueError):
    """Settings are wrong; `problems` holds one "section.key: what is wrong" each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


def _choice(*allowed: object) -> Check:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(map(repr, allowed))}"

    return check


def _between(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _timezone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a folder
        return "is not a known IANA time zone (e.g. 'UTC', 'Europe/Berlin')"
    return None


def _cpu(value: Any) -> str | None:
    if value in ("auto", "none") or (isinstance(value, int) and 0 <= value < 1024):
        return None
    return "must be 'auto', 'none' or a CPU number ≥ 0"


def _fault_file(value: Any) -> str | None:
    if value and not Path(value).is_absolute():
        return "must be an absolute path (or empty for none)"
    return None


_ORIGIN_RE = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def _origins(value: Any) -> str | None:
    for origin in value.replace(",", " ").split():
        if not _ORIGIN_RE.fullmatch(origin):
            return (
                f"has {origin!r}, not an origin: scheme://host[:port] with no path, "
                "e.g. 'http://dashboard.plant:8080'"
            )
    return None


def _public_url(value: Any) -> str | None:
    if not value:
        return None
    parts = urlsplit(value)
    origin = f"{parts.scheme}://{parts.netloc}"
    if (
        not _ORIGIN_RE.fullmatch(origin)
        or parts.query
        or parts.fragment
        or any(c.isspace() or c in '"<>\\' for c in value)
    ):
        return "must be empty or http(s)://host[:port][/path], e.g. 'https://pump-1.example:8765'"
    return None


def _setting(default: Any, check: Check | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class SimConfig:
    """The simulated MPU-6050's signal, clock and injected faults."""

    vibration_hz: float = _setting(24.5, _between(0.0, 499.0), "pump fundamental, Hz")
    # 0.3 m/s² at 24.5 Hz ≈ 1.4 mm/s velocity RMS: zone B, a healthy small pump (1.5 was zone D)
    vibration_ms2: float = _setting(0.3, _between(0.0, 150.0), "fundamental amplitude, m/s²")
    harmonics: int = _setting(3, _between(0, 10), "number of harmonics (amplitude 1/k)")
    noise_ms2: float = _setting(0.05, _between(0.0, 50.0), "white noise RMS, m/s²")
    clock_error: float = _setting(
        0.0, _between(-0.05, 0.05), "chip clock error, fraction (0.01 = +1 %)"
    )
    i2c_error_rate: float = _setting(0.0, _between(0.0, 1.0), "probability an I2C transfer fails")
    fault_file: str = _setting(
        "", _fault_file, "JSON fault schedule polled each second (soak tests; sensor/faults.py)"
    )


@dataclass(frozen=True)
class SensorConfig:
    """Which sensor, how it is paced, and its range."""

    driver: str = _setting("mpu6050", _choice("mpu6050", "sim"), "real chip or the simulator")
    i2c_bus: int = _setting(1, _between(0, 255), "I2C bus number (/dev/i2c-N)")
    address: int = _setting(0x68, _choice(0x68, 0x69), "MPU-6050 I2C address")
    mode: str = _setting("fifo", _choice("fifo", "polled"), "sensor-paced FIFO or software-polled")
    fifo_rate_mode: str = _setting(
        "resample", _choice("resample", "direct"), "1 kHz + 5:4 resampler, or 8 kHz / 10"
    )
    accel_range_g: int = _setting(2, _choice(2, 4, 8, 16), "full-scale range, g")
    # 20 ms: 50 polls a second inside SPEC's 10-25 ms (the FIFO holds 170 ms); at 15 ms the
    # simulated sensor's process took 10.3 % of a core, at 20 ms 8.4 % (issue 20)
    fifo_poll_ms: float = _setting(20.0, _between(5.0, 100.0), "FIFO_COUNT poll interval, ms")
    retry_seconds: float = _setting(3.0, _between(0.5, 300.0), "reconnect interval, s")
    sim: SimConfig = field(default_factory=SimConfig)


@dataclass(frozen=True)
class SamplerConfig:
    """The acquisition process: CPU pinning, realtime priority, hand-off buffer."""

    cpu: int | str = _setting("auto", _cpu, "'auto' = last isolated CPU, 'none', or a CPU number")
    rt_priority: int = _setting(50, _between(0, 99), "SCHED_FIFO priority, 0 = do not ask")
    buffer_seconds: float = _setting(30.0, _between(1.0, 600.0), "hand-off buffer to the parent, s")


@dataclass(frozen=True)
class StorageConfig:
    """Where and how samples are kept on disk."""

    data_dir: str = _setting("/var/lib/wilo-backend", None, "holds readings/ and exports/")
    timezone: str = _setting("UTC", _timezone, "zone of folder and file names")
    flush_seconds: float = _setting(1.0, _between(0.05, 60.0), "buffer flushed to disk every N s")
    segment_seconds: int = _setting(60, _between(1, 3600), "a new segment file every N s")
    max_files: int = _setting(120, _between(1, 100_000), "segment files kept")
    fsync: bool = _setting(True, None, "fdatasync every flush")
    min_free_mb: int = _setting(200, _between(0, 1_000_000), "evict early below this free space")
    raw_memory_seconds: int = _setting(300, _between(0, 3600), "raw samples kept in memory, s")
    export_keep: int = _setting(3, _between(1, 100), "ZIP exports kept")
    export_max_age_seconds: int = _setting(3600, _between(60, 604_800), "ZIP exports expire")


@dataclass(frozen=True)
class ServerConfig:
    """The WebSocket + HTTP server."""

    host: str = _setting("0.0.0.0", None, "listen address")
    port: int = _setting(8765, _between(0, 65535), "listen port")
    auth_token: str = _setting("", None, "token for control commands and exports; empty = open")
    protect_reads: bool = _setting(False, None, "also require the token for read-only commands")
    max_clients: int = _setting(64, _between(1, 10_000), "simultaneous WebSocket clients")
    max_frame_bytes: int = _setting(65536, _between(1024, 16_777_216), "incoming frame limit")
    max_requests_per_second: float = _setting(50.0, _between(1.0, 10_000.0), "per client")
    live_frame_hz: float = _setting(20.0, _between(1.0, 100.0), "live_data frames per second")
    status_interval_seconds: float = _setting(5.0, _between(0.5, 3600.0), "status push period")
    max_concurrent_exports: int = _setting(1, _between(1, 16), "ZIP exports built at once")
    # Hostile network (SPEC §5): every accepted socket counts from accept, not from its request.
    max_connections: int = _setting(
        512, _between(8, 60_000), "TCP connections open at once (WebSocket + HTTP + unfinished)"
    )
    # = max_clients: one host (a control-room PC, a reverse proxy on the Pi) may use every slot
    max_connections_per_address: int = _setting(
        64, _between(1, 60_000), "TCP connections open at once from one client address"
    )
    request_timeout_seconds: float = _setting(
        3.0, _between(0.1, 60.0), "a connection that has not sent its HTTP request is dropped, s"
    )
    reserved_authorized_clients: int = _setting(
        8, _between(0, 10_000), "with a token set, WebSocket slots kept for clients that give it"
    )
    max_pending_requests: int = _setting(
        8, _between(1, 1000), "requests queued or running per client; beyond: 'busy' error"
    )
    # One: a second worker only adds GIL contention, and made a legitimate get_status 200 ms
    # p50 instead of 2 ms under a flood of expensive requests (bench abuse).
    expensive_workers: int = _setting(
        1, _between(1, 16), "threads for expensive commands (data, CSV, features, spectrum)"
    )
    expensive_queue: int = _setting(
        16, _between(0, 10_000), "expensive commands waiting for a worker; beyond: 'busy' error"
    )
    max_auth_failures_per_minute: int = _setting(
        10, _between(1, 10_000), "wrong tokens per client address; beyond: refused for a minute"
    )
    allowed_origins: str = _setting(
        "",
        _origins,
        "browser Origins allowed to open the WebSocket, space-separated; '' = same host",
    )
    public_url: str = _setting(
        "", _public_url, "base of export download URLs, e.g. 'https://pump-1.example:8765'"
    )

    def __post_init__(self) -> None:
        problems = []
        if self.max_connections_per_address > self.max_connections:
            problems.append(
                f"server.max_connections_per_address: {self.max_connections_per_address!r} "
                f"must not exceed server.max_connections ({self.max_connections!r})"
            )
        if self.reserved_authorized_clients >= self.max_clients:
            problems.append(
                f"server.reserved_authorized_clients: {self.reserved_authorized_clients!r} "
                f"must be below server.max_clients ({self.max_clients!r})"
            )
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True)
class LogConfig:
    """Logging to stdout/stderr (the journal on the Pi)."""

    level: str = _setting("INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "log level")


@dataclass(frozen=True)
class AnalyticsConfig:
    """Vibration features over windows of the stream, severity zones, and the feature files.

    Zone limits default to the ISO 10816-1:1995 Annex B "Class I" (small machines, up to 15 kW)
    boundaries on broadband velocity RMS, still the usual practice under ISO 20816-1:2016.
    """

    enabled: bool = _setting(True, None, "compute features, zones and the feature files")
    window_seconds: float = _setting(1.0, _between(0.25, 10.0), "one feature row per window, s")
    band_low_hz: float = _setting(10.0, _between(0.5, 399.0), "velocity band lower edge, Hz")
    band_high_hz: float = _setting(
        350.0, _between(1.0, 400.0), "velocity band upper edge, Hz (Nyquist 400)"
    )
    zone_ab_mms: float = _setting(0.71, _between(0.01, 1000.0), "zone A/B limit, velocity mm/s")
    zone_bc_mms: float = _setting(1.8, _between(0.01, 1000.0), "zone B/C limit, velocity mm/s")
    zone_cd_mms: float = _setting(4.5, _between(0.01, 1000.0), "zone C/D limit, velocity mm/s")
    zone_hysteresis: float = _setting(
        0.05, _between(0.0, 0.5), "a zone is left downwards only below limit × (1 − this)"
    )
    retention_days: int = _setting(30, _between(1, 366), "feature files kept, days")

    def __post_init__(self) -> None:
        problems = []
        if self.band_low_hz >= self.band_high_hz:
            problems.append(
                f"analytics.band_low_hz: {self.band_low_hz!r} must be below "
                f"analytics.band_high_hz ({self.band_high_hz!r})"
            )
        if not self.zone_ab_mms < self.zone_bc_mms < self.zone_cd_mms:
            problems.append(
                "analytics.zone_ab_mms, zone_bc_mms, zone_cd_mms: must increase "
                f"(got {self.zone_ab_mms!r}, {self.zone_bc_mms!r}, {self.zone_cd_mms!r})"
            )
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True)
class Config:
    """The whole configuration; every key has a default."""

    sensor: SensorConfig = field(default_factory=SensorConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)


def _is_section(f: dataclasses.Field[Any]) -> bool:
    return dataclasses.is_dataclass(f.default_factory) if callable(f.default_factory) else False


def _coerce(value: Any, default: Any, key: str, problems: list[str]) -> Any:
    """Check `value` against the type of `default`; ints are accepted where floats are expected."""
    kind = type(default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        try:
            value = float(value) if ok else value
        except OverflowError:  # an integer beyond any float
            ok = False
    elif key == "sampler.cpu":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    else:
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is int)
    if not ok:
        problems.append(f"{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return None
    return value


# Keys that existed once: a file that still has one is told what to do, not just "unknown".
RETIRED_KEYS: Final = {
    "sensor.rate_hz": "removed: the output rate is always 800 Hz; delete this line",
}


def _build(cls: type[Any], raw: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if prefix + name in RETIRED_KEYS:
            problems.append(f"{prefix}{name}: {RETIRED_KEYS[prefix + name]}")
        elif name not in known:
            problems.append(f"{prefix}{name}: unknown key (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name, f in known.items():
        key = prefix + name
        if _is_section(f):
            sub = raw.get(name, {})
            if not isinstance(sub, Mapping):
                problems.append(f"{key}: expected a [{key}] table")
                sub = {}
            assert callable(f.default_factory)
            values[name] = _build(f.default_factory, sub, key + ".", problems)  # type: ignore[arg-type]
            continue
        if name not in raw:
            continue
        value = _coerce(raw[name], f.default, key, problems)
        if value is None:
            continue
        check: Check | None = f.metadata.get("check")
        message = check(value) if check else None
        if message:
            problems.append(f"{key}: {value!r} {message}")
            continue
        values[name] = value
    try:
        return cls(**values)
    except ConfigError as exc:
        # A cross-field check (e.g. zone limits not increasing) is one more problem, reported
        # beside every per-key one rather than instead of them; defaults stand in meanwhile.
        problems.extend(exc.problems)
        return cls()


def _parse_env_value(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(
            text.strip().lower(), text
        )
    # int(text, 0) accepts 0x68 for addresses; a str default (sampler.cpu) may also take a number.
    if isinstance(default, int | str) and not isinstance(default, float):
        try:
            return int(text, 0)
        except ValueError:
            pass
    if isinstance(default, float | int):
        try:
            return float(text)
        except ValueError:
            pass
    return text


def _env_overrides(environ: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """WILO_SECTION_KEY=value (e.g. WILO_SERVER_PORT=9000, WILO_SENSOR_SIM_CLOCK_ERROR=0.01)."""
    out: dict[str, Any] = {}
    paths: dict[str, tuple[list[str], Any]] = {}

    def walk(cls: type[Any], path: list[str]) -> None:
        for f in dataclasses.fields(cls):
            if _is_section(f):
                assert callable(f.default_factory)
                walk(f.default_factory, [*path, f.name])  # type: ignore[arg-type]
            else:
                paths[ENV_PREFIX + "_".join([*path, f.name]).upper()] = ([*path, f.name], f.default)

    walk(Config, [])
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX) or var in ("WILO_CONFIG",):
            continue
        if var not in paths:
            problems.append(f"environment {var}: unknown setting")
            continue
        path, default = paths[var]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(text, default)
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < TOML file < WILO_* environment < CLI overrides; ConfigError names each key.

    `path=None` reads the default path only if it exists (a Pi without a config runs on defaults).
    """
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{path}: file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    raw = _merge(raw, _env_overrides(os.environ if environ is None else environ, problems))
    raw = _merge(raw, overrides or {})
    config = _build(Config, raw, "", problems)
    if problems:
        raise ConfigError(problems)
    assert isinstance(config, Config)
    return config


def config_to_toml(config: Config) -> str:
    """The effective configuration as TOML, for `check-config` and the docs."""
    lines: list[str] = []

    def emit(obj: Any, path: str) -> None:
        scalars = [
            f for f in dataclasses.fields(obj) if not dataclasses.is_dataclass(getattr(obj, f.name))
        ]
        tables = [
            f for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))
        ]
        if path and scalars:
            lines.append(f"[{path}]")
        for f in scalars:
            value = getattr(obj, f.name)
            if f.name == "auth_token" and value:
                value = "<set, hidden>"
            doc = f.metadata.get("doc", "")
            lines.append(f"{f.name} = {_toml_value(value)}" + (f"  # {doc}" if doc else ""))
        if path and scalars:
            lines.append("")
        for f in tables:
            emit(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)

    emit(config, "")
    return "\n".join(lines).rstrip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
