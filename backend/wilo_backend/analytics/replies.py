"""Replies of the analytics commands (get_features, get_spectrum), without sockets."""

from __future__ import annotations

from typing import Any, Final

from wilo_backend.analytics.engine import Analytics

DEFAULT_FEATURE_SECONDS: Final = 3600.0
DEFAULT_FEATURE_POINTS: Final = 1000
DEFAULT_SPECTRUM_SECONDS: Final = 10.0
# get_spectrum averages at most this much (the in-memory spectrum history).
MAX_SPECTRUM_SECONDS: Final = 300.0


def features_reply(
    analytics: Analytics, seconds: float | None, max_points: int | None
) -> dict[str, Any]:
    """{"type":"features","seconds","zone","zone_limits_mms","data":[points, oldest first]}.

    Each point: timestamp (start of its first window), windows (how many it stands for), zone
    (the worst), vrms_mms_max, and the mean of every feature column (x_rms_ms2 … vrms_mms).
    """
    span = seconds or DEFAULT_FEATURE_SECONDS
    retention_seconds = analytics.config.retention_days * 86400.0
    span = min(span, retention_seconds)
    points = analytics.features(span, max_points or DEFAULT_FEATURE_POINTS)
    return {
        "type": "features",
        "seconds": span,
        "zone": analytics.zone,
        "zone_limits_mms": list(analytics.limits.boundaries_mms),
        "window_seconds": analytics.config.window_seconds,
        "data": points,
    }


def spectrum_reply(analytics: Analytics, seconds: float | None) -> dict[str, Any]:
    """{"type":"spectrum","frequencies_hz":[...],"x":[...],"y","z","magnitude","dominant_hz"...}.

    Amplitudes are m/s² on a sine-peak scale, averaged (power) over the last `seconds`.
    """
    span = min(seconds or DEFAULT_SPECTRUM_SECONDS, MAX_SPECTRUM_SECONDS)
    return {"type": "spectrum", **analytics.spectrum(span)}
