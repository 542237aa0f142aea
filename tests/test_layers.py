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


def _imported_parts(path: Path, source: str | None = None) -> set[str]:
    """The parts of the package `path` imports, relative imports (`from .. import x`) included."""
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    package = path.relative_to(PACKAGE).parts[:-1]  # the package the module is in
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module.split(".")]
        elif isinstance(node, ast.ImportFrom):
            base = ["wilo_backend", *package[: len(package) - (node.level - 1)]]
            if node.module:
                targets = [[*base, *node.module.split(".")]]
            else:  # `from .. import service`: each name may be a module
                targets = [[*base, alias.name] for alias in node.names]
        for parts in targets:
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


def test_relative_imports_count_as_the_part_they_name() -> None:
    """A `from .. import service` in the store is as much an upward import as the absolute one
    (relative imports went unchecked before: the appliance uses them)."""
    module = PACKAGE / "store" / "reader.py"
    assert _imported_parts(module, "from .. import service\n") == {"service"}
    assert _imported_parts(module, "from ..server.app import WiloServer\n") == {"server"}
    assert _imported_parts(module, "from .layout import X\n") == {"store"}
    assert _imported_parts(module, "import wilo_backend.sensor.sim\n") == {"sensor"}
