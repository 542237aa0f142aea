"""The built-in live page: static files shipped in the package, served at GET /."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

# The only names served; anything else is not found (no path from the URL touches the disk).
STATIC_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def static_file(path: str) -> tuple[bytes, str] | None:
    """(body, content type) of the page file at URL `path` (query string removed), or None."""
    entry = STATIC_FILES.get(path)
    if entry is None:
        return None
    name, content_type = entry
    return _read(name), content_type
