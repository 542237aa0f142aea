"""CSV rows: exact format, readable by pandas and the csv module, padding keeps the values."""

from __future__ import annotations

import csv
import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import examples
from wilo_backend.store import csvformat
from wilo_backend.store.csvformat import HEADER, format_rows, pad_rows, padding_for, parse_rows

T0_NS = 1_795_792_920_000_000_000


def test_row_format_is_iso_utc_microseconds_and_magnitude() -> None:
    t = np.array([T0_NS + 1_250_000, T0_NS + 2_500_999], dtype=np.int64)
    xyz = np.array([[3.0, -4.0, 0.0], [-0.0000001, 0.5, 9.80665]])
    text = format_rows(t, xyz).decode()
    assert text == (
        "2026-11-27T15:22:00.001250Z,3.000000,-4.000000,0.000000,5.000000\n"
        "2026-11-27T15:22:00.002500Z,0.000000,0.500000,9.806650,9.819388\n"
    )


def test_large_values_take_the_slow_path_with_the_same_format() -> None:
    t = np.array([T0_NS], dtype=np.int64)
    text = format_rows(t, np.array([[1e13, 0.0, -2.5]])).decode()
    assert (
        text == "2026-11-27T15:22:00.000000Z,10000000000000.000000,0.000000,-2.500000,"
        "10000000000000.000000\n"
    )


finite = st.floats(min_value=-2000.0, max_value=2000.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=40), st.data())
def test_round_trip_and_padding(
    rows: list[tuple[float, float, float]], data: st.DataObject
) -> None:
    xyz = np.array(rows, dtype=np.float64)
    t = T0_NS + np.arange(len(rows), dtype=np.int64) * 1_250_000
    body = format_rows(t, xyz)
    pad = data.draw(st.integers(min_value=0, max_value=9000))
    padded = pad_rows(body, pad)
    assert len(padded) == len(body) + pad
    parsed_t, parsed_xyz, accel = parse_rows(padded)
    assert np.array_equal(parsed_t, t)
    assert np.allclose(parsed_xyz, xyz, atol=5e-7, rtol=0)
    assert np.allclose(accel, np.linalg.norm(xyz, axis=1), atol=5e-7, rtol=0)
    # the plain csv module and float() read the padded rows with no options
    reader = csv.reader(io.StringIO((HEADER + padded).decode()))
    assert next(reader) == ["timestamp", "x", "y", "z", "acceleration"]
    values = [[float(v) for v in row[1:]] for row in reader]
    assert np.allclose(np.array(values)[:, :3], xyz, atol=5e-7, rtol=0)


def test_pandas_reads_a_padded_block_with_no_options() -> None:
    import pandas as pd  # here: a second of every xdist worker's start-up otherwise

    t = T0_NS + np.arange(3, dtype=np.int64) * 1_250_000
    xyz = np.array([[0.1, 0.2, 9.8], [0.0, -0.1, 9.7], [1.0, 1.0, 1.0]])
    body = format_rows(t, xyz)
    padded = pad_rows(body, padding_for(len(body), 4096))
    assert len(padded) == 4096
    frame = pd.read_csv(io.BytesIO(HEADER + padded))
    assert list(frame.columns) == ["timestamp", "x", "y", "z", "acceleration"]
    assert [str(d) for d in frame.dtypes.iloc[1:]] == ["float64"] * 4
    assert np.allclose(frame[["x", "y", "z"]].to_numpy(), xyz)
    assert frame["timestamp"].iloc[0] == "2026-11-27T15:22:00.000000Z"
    assert pd.to_datetime(frame["timestamp"]).dt.tz is not None


def test_padding_for_block_multiples() -> None:
    assert padding_for(4096, 4096) == 0
    assert padding_for(100, 4096) == 3996
    assert padding_for(8193, 4096) == 4095
    assert padding_for(0, 4096) == 4096


def test_a_whole_segment_parses_in_bounded_passes_with_the_same_result() -> None:
    # 60 s at 800 Hz is ~3 MB, over a dozen PARSE_CHUNK_BYTES passes; some lines are long
    n = 48_000
    t_ns = 1_795_792_920 * 10**9 + np.arange(n, dtype=np.int64) * 1_250_000
    xyz = (
        np.random.default_rng(3).normal(0.0, 1.0, (n, 3))
        * np.where(np.arange(n) % 997 == 0, 1e6, 1.0)[:, None]
    )
    data = format_rows(t_ns, xyz)
    assert len(data) > 10 * csvformat.PARSE_CHUNK_BYTES
    t_back, xyz_back, accel_back = parse_rows(data)
    assert np.array_equal(t_back, t_ns)
    assert np.allclose(xyz_back, xyz, atol=1e-6, rtol=0)
    assert np.allclose(accel_back, np.linalg.norm(xyz, axis=1), atol=1e-5, rtol=1e-12)


@settings(max_examples=examples(200), deadline=None)
@given(
    data=st.binary(max_size=400).map(lambda b: b.replace(b"\r", b"\n")),
    extra=st.integers(0, 50),
    block_bytes=st.integers(1, 64),
)
def test_row_blocks_are_whole_lines_and_all_of_them(
    data: bytes, extra: int, block_bytes: int
) -> None:
    f = io.BytesIO(data + b"x" * extra)  # bytes past `length` must not be read
    blocks = list(csvformat.iter_row_blocks(f, len(data), block_bytes))
    assert all(block.endswith(b"\n") for block in blocks)
    assert b"".join(blocks) == data[: data.rfind(b"\n") + 1]
    assert f.tell() <= len(data)
