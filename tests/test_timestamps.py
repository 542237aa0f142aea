"""The one timestamp format: scalar and array formatting agree, parsing inverts both."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wilo_backend.timestamps import iso_array, iso_z, parse_iso, parse_iso_z

START_NS = 1_795_000_000 * 10**9  # 2026-11-18T11:06:40Z


def test_known_values() -> None:
    assert iso_z(START_NS) == "2026-11-18T11:06:40.000000Z"
    assert iso_z(START_NS + 123_456_789) == "2026-11-18T11:06:40.123456Z"  # cut, not rounded
    assert iso_z(0) == "1970-01-01T00:00:00.000000Z"


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800 * 10**9), max_size=50))
def test_array_and_scalar_formats_agree_and_parse_back(values: list[int]) -> None:
    t_ns = np.array(values, dtype=np.int64)
    as_array = [f"{text}Z" for text in iso_array(t_ns).tolist()]
    assert as_array == [iso_z(v) for v in values]
    for v, text in zip(values, as_array, strict=True):
        assert parse_iso_z(text) == parse_iso(text) == v - v % 1000


@pytest.mark.parametrize(
    "bad",
    [
        "2026-11-18T11:06:40",  # no zone
        "2026-11-18T25:06:40.000000Z",  # no such hour
        "2026-11-18T11:66:40.000000Z",
        "2026-11-18T11:06:4\u0660.000000Z",  # an Arabic-Indic digit
        "2026-11-18T11:06:40.00000 Z",
        "yesterday",
        "",
    ],
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_iso_z(bad)


def test_an_explicit_offset_is_understood() -> None:
    assert parse_iso_z("2026-11-18T12:06:40+01:00") == START_NS
