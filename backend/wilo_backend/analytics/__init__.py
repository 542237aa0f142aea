"""Vibration analytics: features per window, severity zones, feature files and trends."""

from wilo_backend.analytics.engine import Analytics, AnalyticsStats, ZoneChange

__all__ = ["Analytics", "AnalyticsStats", "ZoneChange"]
