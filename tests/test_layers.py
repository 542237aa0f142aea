"""The import graph runs one way: sensor → sampler → store → server, analytics beside the store,
the shared base under all of them and the service on top. A test, so a shortcut cannot creep in."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "backend" / "wilo_backend"

# what each part may import (besides itself); anything else is an upward or sideways import
BASE = {"model", "config", "timestamps", "durable", "heap", "sdnotify", "web", "release"}
ALLOWED = {
    "model": set(),
    "timestamps": {"model"},
    "durable": set(),
    "config": {"model"},
    "heap": set(),
    "sdnotify": set(),
    "web": set(),
    "release": set(),
    "sensor": {"model"},
    "sampler": {"model", "config", "sensor"},
    "store": {"model", "config", "timestamps", "durable"},
    "analytics": {"model", "config", "timestamps", "durable"},
    "server": {"model", "config", "store", "web", "release"},  # /healthz names the release
    "service": BASE | {"sampler", "store", "server", "analytics"},
    # status_client asks a running service over its socket: a client of the protocol, no server
    "status_client": {"config"},
    "appliance": BASE,  # the image's first-boot settings (issue 16)
    "cli": BASE | {"service", "store", "status_client"},
    "__init__": set(),
    "__main__": {"cli"},
}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "wilo_backend" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_module_imports_only_from_below() -> None:
    wrong = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    for path in modules:
        part = _part(path)
        assert part in ALLOWED, f"{path}: a new part of the package; give it its place here"
        for imported in _imported_parts(path) - {part}:
            if imported not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports wilo_backend.{imported}")
    assert wrong == []
