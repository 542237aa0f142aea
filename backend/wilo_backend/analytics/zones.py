"""Severity zones A/B/C/D on velocity RMS (ISO 20816-1 practice), with hysteresis."""

from __future__ import annotations

from dataclasses import dataclass

from wilo_backend.config import AnalyticsConfig

ZONES = ("A", "B", "C", "D")
NO_ZONE = -1

MEANING = {
    "A": "newly commissioned condition",
    "B": "acceptable for unrestricted long-term operation",
    "C": "unsatisfactory for long-term operation; plan maintenance",
    "D": "severe enough to cause damage",
}


_DEFAULTS = AnalyticsConfig()  # the defaults are the config's (ISO 10816-1 Annex B, Class I)


@dataclass(frozen=True)
class ZoneLimits:
    """Velocity RMS boundaries in mm/s; defaults: the config's `analytics.zone_*`."""

    ab_mms: float = _DEFAULTS.zone_ab_mms
    bc_mms: float = _DEFAULTS.zone_bc_mms
    cd_mms: float = _DEFAULTS.zone_cd_mms
    # A zone is left downwards only once the value is below limit × (1 − hysteresis), so a
    # value hovering at a limit does not raise an alert every second.
    hysteresis: float = _DEFAULTS.zone_hysteresis

    def __post_init__(self) -> None:
        if not 0 < self.ab_mms < self.bc_mms < self.cd_mms:
            raise ValueError(
                f"zone limits must increase: {self.ab_mms}, {self.bc_mms}, {self.cd_mms} mm/s"
            )
        if not 0 <= self.hysteresis < 1:
            raise ValueError(f"zone hysteresis must be in [0, 1), got {self.hysteresis}")

    @property
    def boundaries_mms(self) -> tuple[float, float, float]:
        return (self.ab_mms, self.bc_mms, self.cd_mms)


def classify(vrms_mms: float, limits: ZoneLimits, previous: int = NO_ZONE) -> int:
    """Zone index (0 = A … 3 = D) of a velocity RMS, given the zone it was in before.

    Up: as soon as the value reaches a boundary. Down: only below boundary × (1 − hysteresis).
    """
    raw = sum(vrms_mms >= b for b in limits.boundaries_mms)
    if previous == NO_ZONE or raw >= previous:
        return raw
    # Falling: step down only across boundaries cleared by the hysteresis margin.
    zone = previous
    while zone > raw and vrms_mms < limits.boundaries_mms[zone - 1] * (1 - limits.hysteresis):
        zone -= 1
    return zone


def zone_name(index: int) -> str:
    """'A'…'D', or '' before the first window."""
    return ZONES[index] if 0 <= index < len(ZONES) else ""
