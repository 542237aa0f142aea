"""The read side of the segments: the dashboard's folder tree and a segment's decimated rows."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wilo_backend.model import PathRejectedError
from wilo_backend.store.csvformat import HEADER, iter_row_blocks, parse_rows_lenient
from wilo_backend.store.summary import decimate_chunks, make_points, points_to_rows


def folder_tree(entries: Iterable[tuple[str, int, int]]) -> dict[str, Any]:
    """year → month → week → day → [file] from (relative, size, mtime_ns), oldest first."""
    tree: dict[str, Any] = {}
    for relative, size, mtime_ns in entries:
        year, month, week, day, filename = relative.split("/")
        files = tree.setdefault(year, {}).setdefault(month, {}).setdefault(week, {})
        files.setdefault(day, []).append(
            {
                "filename": filename,
                "path": relative,
                "size": size,
                # Unix seconds, a number: the dashboard multiplies it by 1000 (SPEC §5)
                "modified": round(mtime_ns / 1e9, 3),
            }
        )
    return tree


class SegmentReader:
    """Reads committed rows of a segment, decimated; one parse at a time.

    Each parse holds ~12 MB of temporaries for a 60 s segment, and several dashboards clicking
    at once would otherwise stack them (RSS ≤ 100 MB, SPEC §8).
    """

    def __init__(self) -> None:
        self._slot = threading.Lock()

    def read(
        self, path: Path, relative: str, committed: int, max_points: int
    ) -> list[dict[str, Any]]:
        length = max(0, committed - len(HEADER))
        # One 256 KiB block at a time, counted in a first pass so the decimation buckets are
        # those of the whole file: parsing the whole file at once held 7.2 MiB for a moment per
        # request on a 3.2 MB segment (3.2 MiB now; bench/transients.py), which showed in the
        # soak's RSS peaks.
        with self._slot:
            try:
                with path.open("rb") as f:
                    f.seek(len(HEADER))
                    rows = sum(block.count(b"\n") for block in iter_row_blocks(f, length))
                    f.seek(len(HEADER))
                    chunks = (
                        make_points(*parse_rows_lenient(block))
                        for block in iter_row_blocks(f, length)
                    )
                    points = decimate_chunks(chunks, rows, max(1, max_points))
            except FileNotFoundError:
                raise PathRejectedError(f"file {relative!r} was rotated out") from None
        return points_to_rows(points)
