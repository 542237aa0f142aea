"""Fuzz: start-up repair of a segment with an arbitrary torn tail (store/recovery.py).

Whatever a crash left after the last complete row — half a row, zeros, garbage, CSV-like noise —
the store opens, keeps every complete row exactly, leaves only well-formed rows, and the aggregate
equals header + the segment again.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from wilo_backend.config import StorageConfig
from wilo_backend.store.csvformat import HEADER, format_rows
from wilo_backend.store.layout import AGGREGATE_NAME
from wilo_backend.store.store import Store

T0_NS = 1_795_792_920_000_000_000  # 2026-11-27T15:22:00Z
SEGMENT = "2026/11/Week_4/27/152200.csv"
ROW = re.compile(
    rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z,-?\d+\.\d+,-?\d+\.\d+,-?\d+\.\d+,\d+\.\d+"
)


def _rows(n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    t = T0_NS + np.arange(n, dtype=np.int64) * 1_250_000
    xyz = np.random.default_rng(n).normal(0.0, 3.0, (n, 3))
    return format_rows(t, xyz), t, xyz


ONE_ROW = _rows(1)[0]
tails = st.one_of(
    st.integers(min_value=1, max_value=len(ONE_ROW) - 1).map(lambda k: ONE_ROW[:k]),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=4096).map(lambda n: b"\0" * n),
    st.binary(max_size=60).map(lambda b: ONE_ROW + b),
    st.text(alphabet="0123456789.,-:TZ\n", max_size=150).map(str.encode),
)


def _parse(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """An independent reader: timestamps (µs) and x, y, z of well-formed rows."""
    lines = body.split(b"\n")[:-1]
    stamps = np.array([line[:26] for line in lines]).astype("U26").astype("datetime64[us]")
    values = np.array([line[28:].split(b",") for line in lines], dtype=np.float64)
    return stamps.astype(np.int64), values[:, :3]


@settings(max_examples=examples(60), deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    tail=tails,
    aggregate_got=st.sampled_from(["all", "none", "half"]),
)
@example(n=3, tail=ONE_ROW[:20], aggregate_got="half")
@example(n=1, tail=b"\n\n\n", aggregate_got="all")
def test_any_torn_tail_is_cut_and_the_rows_kept(n: int, tail: bytes, aggregate_got: str) -> None:
    body, t_ns, xyz = _rows(n)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        segment = data / "readings" / SEGMENT
        segment.parent.mkdir(parents=True)
        segment.write_bytes(HEADER + body + tail)
        copied = {"all": tail, "none": b"", "half": tail[: len(tail) // 2]}[aggregate_got]
        (data / "readings" / AGGREGATE_NAME).write_bytes(HEADER + body + copied)
        store = Store(StorageConfig(data_dir=str(data), fsync=False, min_free_mb=0))
        store.open()
        try:
            assert store.file_list() == [SEGMENT]
            repaired = segment.read_bytes()
            assert repaired.startswith(HEADER) and repaired.endswith(b"\n")
            rows = repaired[len(HEADER) :]
            lines = rows.split(b"\n")[:-1]
            assert all(ROW.fullmatch(line) for line in lines), [
                line for line in lines if not ROW.fullmatch(line)
            ][:2]
            got_t, got_xyz = _parse(rows)
            assert np.array_equal(got_t[:n], t_ns // 1000)
            assert np.allclose(got_xyz[:n], xyz, atol=5e-7, rtol=0)
            assert store.wait_idle()
            assert (data / "readings" / AGGREGATE_NAME).read_bytes() == repaired
        finally:
            store.close()
