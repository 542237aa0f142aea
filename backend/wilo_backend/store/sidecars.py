"""Summary sidecars: each segment's 100 ms min/max points saved beside it, so start-up loads a
small .npy instead of re-parsing the CSV (rebuilt from the CSV when missing or torn)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wilo_backend.store.csvformat import HEADER, parse_rows_lenient
from wilo_backend.store.segments import Segment
from wilo_backend.store.summary import POINT_DTYPE, Points, make_points, summarize_100ms

log = logging.getLogger("wilo_backend.store.store")


class SummarySidecars:
    """The summaries/ folder: one `<relative with _>.npy` per retained segment."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, relative: str) -> Path:
        return self.folder / (relative.replace("/", "_") + ".npy")

    def load(self, segments: Iterable[Segment]) -> Iterable[Points]:
        """Each segment's points, from its sidecar or rebuilt from its CSV (and saved); stray
        sidecars of segments no longer retained are removed afterwards."""
        names: set[str] = set()
        for seg in segments:
            sidecar = self.path(seg.relative)
            names.add(sidecar.name)
            points: Points | None = None
            try:
                loaded = np.load(sidecar, allow_pickle=False)
                if loaded.dtype == POINT_DTYPE:
                    points = loaded
            except (OSError, ValueError, EOFError):
                points = None  # missing or torn: rebuilt from the CSV below
            if points is None:
                points = summarize_file(seg)
                self.write(seg.relative, points)
            yield points
        for stray in [*self.folder.glob("*.npy"), *self.folder.glob("*.tmp")]:
            if stray.name not in names:
                log.debug("removing stale summary %s", stray.name[: -len(".npy")])
                stray.unlink(missing_ok=True)

    def write(self, relative: str, points: Points) -> None:
        target = self.path(relative)
        tmp = target.with_name(target.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                np.save(f, points, allow_pickle=False)
            tmp.replace(target)
        except OSError as exc:
            log.warning(
                "summary for %s not saved (%s); it is rebuilt from CSV at start-up", relative, exc
            )

    def remove(self, relative: str) -> None:
        self.path(relative).unlink(missing_ok=True)


def summarize_file(seg: Segment) -> Points:
    """The 100 ms points of a segment's committed rows, parsed from its CSV."""
    try:
        data = seg.path.read_bytes()[len(HEADER) : seg.size]
    except OSError as exc:
        log.error("segment %s unreadable (%s); its history is not shown", seg.relative, exc)
        return np.empty(0, dtype=POINT_DTYPE)
    t, xyz, accel = parse_rows_lenient(data)
    return summarize_100ms(make_points(t, xyz, accel))
