"""Command line: run, check-config, status, export, bench.

Exit codes: 0 done; 1 the command could not do its job (no service answering, an error
reply, nothing to export, the port taken); 2 bad usage or configuration (a wrong flag, a bad
key, a data folder that is not one or that another wilo-backend holds). Every error is one
line on stderr naming what is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from wilo_backend.config import (
    DEFAULT_CONFIG_PATH,
    ENV_PREFIX,
    Config,
    ConfigError,
    config_to_toml,
    load_config,
)
from wilo_backend.store.datalock import DataDirError, DataDirLock

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PROG = "wilo-backend"


class UsageError(Exception):
    """Bad usage or a data folder that is not one: exit 2."""


class CommandFailedError(Exception):
    """The command could not do its job: exit 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    if getattr(args, "sensor", None):
        out.setdefault("sensor", {})["driver"] = args.sensor
    if getattr(args, "data_dir", None):
        out.setdefault("storage", {})["data_dir"] = str(Path(args.data_dir).resolve())
    if getattr(args, "host", None):
        out.setdefault("server", {})["host"] = args.host
    if getattr(args, "port", None) is not None:
        out.setdefault("server", {})["port"] = args.port
    return out


def _config_path(args: argparse.Namespace) -> Path | None:
    """The file `load_config` reads: --config, else the default path if it exists, else none."""
    if getattr(args, "config", None):
        return Path(args.config)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args), overrides=_overrides(args))


def _cmd_run(args: argparse.Namespace) -> int:
    from wilo_backend.service import run_service

    return run_service(_load(args))


def _cmd_check_config(args: argparse.Namespace) -> int:
    if args.file and args.config and Path(args.file).resolve() != Path(args.config).resolve():
        raise UsageError(
            f"two config files given ({args.file} and --config {args.config}); give one"
        )
    args.config = args.file or args.config
    path = _config_path(args)
    config = _load(args)
    if path is not None:
        source = f"# read {path.resolve()}"
    else:
        source = (
            f"# no config file read ({DEFAULT_CONFIG_PATH} does not exist, no --config): "
            "these are the defaults"
        )
    env = sorted(name for name in os.environ if name.startswith(ENV_PREFIX))
    if env:
        source += f"\n# with the environment's {', '.join(env)}"
    sys.stdout.write(source + "\n" + config_to_toml(config))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from wilo_backend.status_client import StatusError, default_url, fetch_status, summary

    if not 0 < args.timeout <= 3600:
        raise UsageError(f"--timeout {args.timeout:g} must be between 0 and 3600 seconds")
    config = _load(args)
    url = args.url or default_url(config.server)
    token = config.server.auth_token if args.token is None else args.token
    try:
        data = fetch_status(url, token, args.timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except StatusError as exc:
        text = str(exc)
        if "unauthorized" in text:
            text += "; pass --token or set WILO_SERVER_AUTH_TOKEN"
        raise CommandFailedError(text) from None
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(summary(url, data))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from wilo_backend.store.export import export_readings
    from wilo_backend.store.layout import READINGS_DIR
    from wilo_backend.store.recovery import scan_segment_files

    config = _load(args)
    data_dir = Path(config.storage.data_dir)
    readings = data_dir / READINGS_DIR
    # Checked before anything is written: a mistyped folder must not get an exports/ of its own.
    if not data_dir.is_dir():
        raise UsageError(
            f"data folder {data_dir} does not exist; pass --data-dir (or storage.data_dir) "
            "pointing at the service's data folder"
        )
    if not readings.is_dir():
        raise UsageError(
            f"{data_dir} is not a wilo-backend data folder (no {READINGS_DIR}/ in it); pass "
            "--data-dir (or storage.data_dir) pointing at the service's data folder"
        )
    if not scan_segment_files(readings):
        raise CommandFailedError(f"nothing to export: no segment files in {readings} yet")
    # the export writes under the data folder and reads segments a running service evicts
    with DataDirLock(data_dir, create=False):
        result = export_readings(data_dir, config.storage)
    print(f"{result.path} ({result.file_count} files)")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    sys.argv = ["bench", *args.rest]
    runpy.run_module("bench.run", run_name="__main__")
    return EXIT_OK


def _subcommand(sub: Any, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG_PATH} if it exists)")


def _service_flags(p: argparse.ArgumentParser) -> None:
    _config_flag(p)
    p.add_argument("--sensor", choices=["mpu6050", "sim"], help="sensor driver")
    p.add_argument("--data-dir", help="folder holding readings/ and exports/ (storage.data_dir)")
    p.add_argument("--host", help="listen address")
    p.add_argument("--port", type=int, help="listen port")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="`wilo-backend COMMAND --help` shows each command's flags and an example.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    run = _subcommand(
        sub,
        "run",
        "sample, store and serve until SIGTERM / Ctrl-C",
        "  wilo-backend run --sensor sim --data-dir ./data --port 9000\n"
        "  wilo-backend run --config /etc/wilo-backend/config.toml   # what systemd runs\n",
    )
    _service_flags(run)
    run.set_defaults(func=_cmd_run)

    check = _subcommand(
        sub,
        "check-config",
        "print the effective config (and which file it came from), or every bad key (exit 2)",
        "  wilo-backend check-config /etc/wilo-backend/config.toml\n"
        "  WILO_SERVER_PORT=9000 wilo-backend check-config   # defaults + environment\n",
    )
    check.add_argument("file", nargs="?", help="config file to check (same as --config FILE)")
    _service_flags(check)
    check.set_defaults(func=_cmd_check_config)

    status = _subcommand(
        sub,
        "status",
        "ask a running service for its status (port and token from the same config as run)",
        "  wilo-backend status\n"
        "  wilo-backend status --url ws://pump-7.plant:8765/ --token SECRET --json\n",
    )
    _config_flag(status)
    status.add_argument("--url", help="WebSocket URL (default ws://127.0.0.1:<server.port>/)")
    status.add_argument("--token", help="server token (default server.auth_token)")
    status.add_argument("--json", action="store_true", help="print the whole status as JSON")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    status.set_defaults(func=_cmd_status)

    export = _subcommand(
        sub,
        "export",
        "write a ZIP of the retained segments to <data_dir>/exports/",
        "  wilo-backend export --data-dir ./data\n"
        "  wilo-backend export --config /etc/wilo-backend/config.toml\n",
    )
    _service_flags(export)
    export.set_defaults(func=_cmd_export)

    bench = _subcommand(
        sub,
        "bench",
        "run the benchmarks (as make bench; needs the repository and its dev tools)",
        "  wilo-backend bench --quick\n",
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        # argparse's REMAINDER misses a first word that looks like a flag (bench --quick)
        args.rest = [*extra, *args.rest]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    where = f"{PROG} {args.command}"
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{where}: config: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, DataDirError) as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailedError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
