"""A real Store with a few segments (and traps outside it) for the fuzz tests, built once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from clocks import FakeClock
from wilo_backend.config import ServerConfig, StorageConfig
from wilo_backend.model import ExportResult, SampleBatch, SamplerStats
from wilo_backend.server.limits import AuthThrottle
from wilo_backend.server.live import LiveHub
from wilo_backend.server.metrics import ServerCounters
from wilo_backend.server.protocol import Dispatcher, Request
from wilo_backend.server.session import (
    Authenticator,
    Offload,
    Send,
    Session,
    SessionContext,
    StartExport,
)
from wilo_backend.store.store import Store

T0_NS = 1_795_792_920_000_000_000  # 2026-11-27T15:22:00Z
PERIOD_NS = 1_250_000


class Control:
    """A real, minimal ServiceControl."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.running, self.paused = True, False

    def start_collection(self) -> None:
        self.running, self.paused = True, False

    def stop_collection(self) -> None:
        self.running = False

    def pause_collection(self) -> None:
        self.paused = True

    def resume_collection(self) -> None:
        self.paused = False

    def status_data(self) -> dict[str, Any]:
        status = self.store.status()
        return {
            "connected": True,
            "running": self.running,
            "paused": self.paused,
            "sampling_rate": 800.0,
            "total_samples": status.rows_written,
            "csv_files": status.file_count,
            "latest_file": status.latest_file,
        }

    def collection_state(self) -> tuple[bool, bool]:
        return self.running, self.paused

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    def sampler_stats(self) -> SamplerStats:
        return SamplerStats()


def build_store(root: Path, seconds: int = 4) -> Store:
    """Segments of 1 s in root/data; a secret file, a symlinked segment and folder outside it."""
    data = root / "data"
    clock = FakeClock()
    store = Store(
        StorageConfig(data_dir=str(data), segment_seconds=1, fsync=False, min_free_mb=0),
        monotonic=clock,
    )
    store.open()
    rng = np.random.default_rng(3)
    for k in range(seconds * 20):
        t = T0_NS + (k * 40 + np.arange(40, dtype=np.int64)) * PERIOD_NS
        xyz = rng.normal(0.0, 1.0, (40, 3))
        store.append(SampleBatch(k * 40, t, xyz))
        clock.now += 0.05
    store.close_segment()
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("timestamp,x,y,z,acceleration\nSECRET\n")
    (outside / "101010.csv").write_text("timestamp,x,y,z,acceleration\nSECRET\n")
    day = data / "readings" / "2026" / "11" / "Week_4" / "27"
    os.symlink(outside / "secret.csv", day / "101010.csv")
    os.symlink(outside, data / "readings" / "2026" / "11" / "Week_4" / "28")
    return store


TOKEN = "s3cret-token"


class SessionDriver:
    """The real protocol session over the real store, its actions carried out as app.py does,
    synchronously: a Send is the reply, an Offload runs its job here, an export runs the real
    export_zip, a PushStatus is recorded."""

    def __init__(self, store: Store, config: ServerConfig, *, authorized: bool) -> None:
        self.control = Control(store)
        self.store = store
        self.clock = FakeClock()
        self.wrong_tokens_logged = 0
        self.status_pushes = 0

        def on_wrong(address: str) -> None:
            self.wrong_tokens_logged += 1

        auth = Authenticator(
            config.auth_token, AuthThrottle(config.max_auth_failures_per_minute), on_wrong
        )
        dispatcher = Dispatcher(store, self.control)
        self.counters = ServerCounters()
        self.context = SessionContext(config, dispatcher, LiveHub(), auth, self.counters)
        self.session = Session(self.context, "192.0.2.7", authorized=authorized, now=self.clock())

    def receive(self, frame: str | bytes) -> Request | str:
        return self.session.receive(frame, self.clock())

    def serve(self, request: Request) -> list[str | bytes]:
        """The worker's step for one queued request: the frames the client gets, in order."""
        replies: list[str | bytes] = []
        try:
            for action in self.session.respond(request, self.clock()):
                if isinstance(action, Send):
                    replies.append(action.frame)
                elif isinstance(action, Offload):
                    try:
                        replies.append(action.job())
                    except Exception as exc:
                        replies.append(self.session.offloaded(action.request, exc))
                elif isinstance(action, StartExport):
                    outcome: ExportResult | BaseException
                    try:
                        outcome = self.store.export_zip()
                    except Exception as exc:
                        outcome = exc
                    replies.append(
                        self.session.export_finished(action.request_id, outcome, "pump:8765")
                    )
                else:
                    self.status_pushes += 1
        finally:
            self.session.done()
        return replies
