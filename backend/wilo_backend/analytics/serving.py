"""Hooks the analytics into the server: get_features/get_spectrum, live features, /metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from wilo_backend.analytics.engine import Analytics
from wilo_backend.analytics.replies import features_reply, spectrum_reply


class RequestFields(Protocol):
    """What a parsed request offers the analytics commands."""

    @property
    def seconds(self) -> float | None: ...

    @property
    def max_points(self) -> int | None: ...


class ExtensibleServer(Protocol):
    """The hooks WiloServer has for features that live outside the server package."""

    def add_command(
        self, command: str, handler: Callable[[Any], dict[str, Any]], *, threaded: bool = False
    ) -> None: ...

    def add_metrics(self, render: Callable[[], str]) -> None: ...

    def set_live_fields(self, fields: Callable[[], str]) -> None: ...


class LiveFeatures:
    """'"features":{…},' for the first live frame after each new window, else ''."""

    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics
        self.sent_windows = 0

    def __call__(self) -> str:
        windows = self.analytics.windows
        if windows == self.sent_windows:
            return ""
        self.sent_windows = windows
        latest = self.analytics.latest()
        if latest is None:
            return ""
        return '"features":' + json.dumps(latest, separators=(",", ":"), allow_nan=False) + ","


def attach(server: ExtensibleServer, analytics: Analytics) -> None:
    """Serve the analytics: commands, live-frame features, Prometheus lines."""

    def features(request: RequestFields) -> dict[str, Any]:
        return features_reply(analytics, request.seconds, request.max_points)

    def spectrum(request: RequestFields) -> dict[str, Any]:
        return spectrum_reply(analytics, request.seconds)

    # get_features builds up to max_points dicts (milliseconds): off the event loop
    server.add_command("get_features", features, threaded=True)
    server.add_command("get_spectrum", spectrum)
    server.add_metrics(analytics.metrics_text)
    server.set_live_fields(LiveFeatures(analytics))
