"""Command line: run, check-config, status, export, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wilo_backend.config import Config, ConfigError, config_to_toml, load_config
from wilo_backend.store.datalock import DataDirError, DataDirLock


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


def _load(args: argparse.Namespace) -> Config:
    path = Path(args.config) if getattr(args, "config", None) else None
    return load_config(path, overrides=_overrides(args))


def _cmd_run(args: argparse.Namespace) -> int:
    from wilo_backend.service import run_service

    return run_service(_load(args))


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    sys.stdout.write(config_to_toml(config))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from websockets.sync.client import connect

    url = args.url
    with connect(url, open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"command": "get_status", "request_id": "cli"}))
        while True:
            reply = json.loads(ws.recv(timeout=5))
            if reply.get("type") == "status" and reply.get("request_id") == "cli":
                print(json.dumps(reply["data"], indent=2, sort_keys=True))
                return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from wilo_backend.store.export import export_readings

    config = _load(args)
    data_dir = Path(config.storage.data_dir)
    # the export writes under the data folder and reads segments a running service evicts
    with DataDirLock(data_dir, create=False):
        result = export_readings(data_dir, config.storage)
    print(f"{result.path} ({result.file_count} files)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    sys.argv = ["bench", *args.rest]
    runpy.run_module("bench.run", run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wilo-backend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def config_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config (default /etc/wilo-backend/config.toml)")
        p.add_argument("--sensor", choices=["mpu6050", "sim"], help="sensor driver")
        p.add_argument("--data-dir", help="folder holding readings/ and exports/")
        p.add_argument("--host", help="listen address")
        p.add_argument("--port", type=int, help="listen port")

    run = sub.add_parser("run", help="sample, store and serve until SIGTERM / Ctrl-C")
    config_flags(run)
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="print the effective config or each bad key")
    check.add_argument("file", nargs="?", help="config file to check")
    config_flags(check)
    check.set_defaults(func=_cmd_check_config)

    status = sub.add_parser("status", help="ask a running service for its status")
    status.add_argument("--url", default="ws://127.0.0.1:8765/", help="WebSocket URL")
    status.set_defaults(func=_cmd_status)

    export = sub.add_parser("export", help="write a ZIP of the retained segments")
    config_flags(export)
    export.set_defaults(func=_cmd_export)

    bench = sub.add_parser("bench", help="run the benchmarks (as make bench)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "file", None) and not args.config:
        args.config = args.file
    try:
        result: int = args.func(args)
    except (ConfigError, DataDirError) as exc:
        print(f"wilo-backend: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
