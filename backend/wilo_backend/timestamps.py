"""The one timestamp format of the CSV files, the replies and the feature files, in one place.

ISO 8601 in UTC to the microsecond with a `Z`: `2026-11-27T16:22:00.123456Z` (27 characters).
Sample times are Unix nanoseconds everywhere inside; they are cut (not rounded) to the
microsecond when written, the same way for one value and for a whole array, so a row in a file
and the same row in a reply always read alike.
"""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import numpy.typing as npt

from wilo_backend.model import Int64Array

ISO_CHARS = 27  # with the Z
NS_PER_S = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso_z(t_ns: int) -> str:
    """Unix nanoseconds → '2026-11-27T16:22:00.123456Z'."""
    seconds, rest_ns = divmod(int(t_ns), NS_PER_S)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest_ns // 1000:06d}Z"


def iso_array(t_ns: Int64Array) -> npt.NDArray[np.str_]:
    """`iso_z` of every element, without the Z (26 characters each), formatted by numpy in C."""
    micros = (t_ns // 1000).astype("datetime64[us]")  # floor, as iso_z's divmod
    text: npt.NDArray[np.str_] = np.datetime_as_string(micros, unit="us")
    return text


def parse_iso(text: str) -> int:
    """Unix nanoseconds of an ISO 8601 time with a zone ('…Z' or '…+00:00'); ValueError else."""
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {text!r}")
    return ((moment - _EPOCH) // dt.timedelta(microseconds=1)) * 1000


@functools.lru_cache(maxsize=64)
def _day_start_ns(date_text: str) -> int:
    return parse_iso(date_text + "T00:00:00+00:00")


def parse_iso_z(text: str) -> int:
    """`parse_iso` for this module's own format, without a datetime per call (feature files
    parse a row per window); anything else goes through `parse_iso`."""
    shaped = len(text) == ISO_CHARS and text[10] == "T" and text[19] == "." and text[26] == "Z"
    digits = text[11:13] + text[14:16] + text[17:19] + text[20:26]
    if not (shaped and text[13] == text[16] == ":" and digits.isascii() and digits.isdigit()):
        return parse_iso(text)
    hours, minutes, secs = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if hours > 23 or minutes > 59 or secs > 59:
        return parse_iso(text)  # raises, naming the text
    seconds = hours * 3600 + minutes * 60 + secs
    return _day_start_ns(text[:10]) + seconds * NS_PER_S + int(text[20:26]) * 1000
