"""CSV rows from numpy arrays and back: vectorised formatting, block padding, fast parsing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from wilo_backend.model import Float64Array, Int64Array
from wilo_backend.timestamps import ISO_CHARS, iso_array, parse_iso_z

HEADER = b"timestamp,x,y,z,acceleration\n"
TIMESTAMP_BYTES = ISO_CHARS  # 2026-11-27T15:22:00.123456Z
DECIMALS = 6
_SCALE = 10**DECIMALS
_FRAC_POW = (10 ** np.arange(DECIMALS - 1, -1, -1)).astype(np.int64)
_COMMA, _NEWLINE, _DOT, _MINUS, _ZERO = (ord(c) for c in ",\n.-0")
# Values beyond this go through the slow (str) path; the sensor tops out at 16 g ≈ 157 m/s².
_FAST_LIMIT = 1e12

UInt8Array = npt.NDArray[np.uint8]


def magnitude(xyz: Float64Array) -> Float64Array:
    """Acceleration magnitude in m/s² for (n, 3) rows."""
    out: Float64Array = np.sqrt(np.einsum("ij,ij->i", xyz, xyz))
    return out


def _timestamp_matrix(t_ns: Int64Array) -> UInt8Array:
    text = iso_array(t_ns)
    n = t_ns.shape[0]
    out = np.empty((n, TIMESTAMP_BYTES), dtype=np.uint8)
    out[:, :26] = text.astype("S26").view(np.uint8).reshape(n, 26)
    out[:, 26] = ord("Z")
    return out


def _field_columns(
    values: Float64Array, int_digits: int
) -> tuple[UInt8Array, npt.NDArray[np.bool_]]:
    """(n, 1 + int_digits + 1 + DECIMALS) bytes of each value and the mask of bytes to keep."""
    scaled = np.rint(values * _SCALE).astype(np.int64)
    negative = scaled < 0
    absolute = np.abs(scaled)
    whole, frac = np.divmod(absolute, _SCALE)
    n = values.shape[0]
    width = 1 + int_digits + 1 + DECIMALS
    cols = np.empty((n, width), dtype=np.uint8)
    keep = np.ones((n, width), dtype=np.bool_)
    cols[:, 0] = _MINUS
    keep[:, 0] = negative
    int_pow = (10 ** np.arange(int_digits - 1, -1, -1)).astype(np.int64)
    cols[:, 1 : 1 + int_digits] = (whole[:, None] // int_pow) % 10 + _ZERO
    digits = np.ones(n, dtype=np.int64)
    for k in range(1, int_digits):
        digits += whole >= 10**k
    # leading zeros of the whole part are dropped, one digit always stays
    keep[:, 1 : 1 + int_digits] = np.arange(int_digits) >= (int_digits - digits)[:, None]
    cols[:, 1 + int_digits] = _DOT
    cols[:, 2 + int_digits :] = (frac[:, None] // _FRAC_POW) % 10 + _ZERO
    return cols, keep


def format_rows(t_ns: Int64Array, xyz: Float64Array) -> bytes:
    """CSV rows `timestamp,x,y,z,acceleration` (ISO 8601 UTC µs + Z, m/s², 6 decimals)."""
    n = int(t_ns.shape[0])
    if n == 0:
        return b""
    values = np.empty((n, 4), dtype=np.float64)
    values[:, :3] = xyz
    values[:, 3] = magnitude(xyz)
    peak = float(np.max(np.abs(values))) if np.all(np.isfinite(values)) else np.inf
    if peak >= _FAST_LIMIT:
        return _format_rows_slow(t_ns, values)
    int_digits = max(1, len(str(int(peak + 1))))
    parts: list[UInt8Array] = [_timestamp_matrix(t_ns)]
    masks: list[npt.NDArray[np.bool_]] = [np.ones((n, TIMESTAMP_BYTES), dtype=np.bool_)]
    separator = np.full((n, 1), _COMMA, dtype=np.uint8)
    always = np.ones((n, 1), dtype=np.bool_)
    for column in range(4):
        cols, keep = _field_columns(values[:, column], int_digits)
        parts += [separator, cols]
        masks += [always, keep]
    parts.append(np.full((n, 1), _NEWLINE, dtype=np.uint8))
    masks.append(always)
    matrix = np.hstack(parts)
    return bytes(matrix[np.hstack(masks)].tobytes())


def _format_rows_slow(t_ns: Int64Array, values: Float64Array) -> bytes:
    stamps = _timestamp_matrix(t_ns)
    lines = []
    for stamp, row in zip(stamps, values, strict=True):
        fields = ",".join(f"{v:.{DECIMALS}f}" for v in row)
        lines.append(stamp.tobytes().decode() + "," + fields + "\n")
    return "".join(lines).encode()


def pad_rows(rows: bytes, pad_bytes: int) -> bytes:
    """`rows` grown by exactly `pad_bytes` trailing zeros in the decimal fields of its last rows.

    The numbers keep their value, so any CSV reader sees the same data; it lets a segment's data
    end on a filesystem block boundary (see aggregate.py).
    """
    if pad_bytes <= 0:
        return rows
    if not rows.endswith(b"\n"):
        raise ValueError("rows to pad must end with a newline")
    lines = rows[:-1].split(b"\n")
    fields_per_row = 4
    per_field = 16
    rows_needed = -(-pad_bytes // (per_field * fields_per_row))
    if rows_needed > len(lines):
        rows_needed = len(lines)
        per_field = -(-pad_bytes // (fields_per_row * rows_needed))
    remaining = pad_bytes
    for i in range(len(lines) - 1, len(lines) - 1 - rows_needed, -1):
        head, *numbers = lines[i].split(b",")
        grown = []
        for number in numbers:
            extra = min(per_field, remaining)
            remaining -= extra
            grown.append(number + b"0" * extra)
        lines[i] = b",".join([head, *grown])
    assert remaining == 0
    return b"\n".join(lines) + b"\n"


def padding_for(data_bytes: int, block_bytes: int) -> int:
    """Bytes to add so `data_bytes` becomes a block multiple (and at least one block)."""
    if data_bytes < block_bytes:
        return block_bytes - data_bytes
    return -data_bytes % block_bytes


_STAMP_SEPARATORS = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: ".", 26: "Z", 27: ","}
_STAMP_DIGITS = [i for i in range(26) if i not in _STAMP_SEPARATORS]


def _digits(stamp: UInt8Array, first: int, count: int) -> Int64Array:
    value = np.zeros(stamp.shape[0], dtype=np.int64)
    for i in range(first, first + count):
        value = value * 10 + (stamp[:, i].astype(np.int64) - _ZERO)
    return value


def _parse_timestamps(stamp: UInt8Array) -> Int64Array:
    """UTC ns from (n, 28) bytes `YYYY-MM-DDTHH:MM:SS.ffffffZ,`, checked byte by byte.

    Integer arithmetic, not numpy's datetime string cast: that cast crashes the interpreter
    (SIGSEGV, numpy 2.4) on a malformed string inside a large array.
    """
    for position, char in _STAMP_SEPARATORS.items():
        if np.any(stamp[:, position] != ord(char)):
            raise ValueError(f"timestamp separator {char!r} missing at column {position}")
    digits = stamp[:, _STAMP_DIGITS]
    if np.any((digits < _ZERO) | (digits > _ZERO + 9)):
        raise ValueError("timestamp has a non-digit where a digit belongs")
    year, month, day = _digits(stamp, 0, 4), _digits(stamp, 5, 2), _digits(stamp, 8, 2)
    hour, minute, second = _digits(stamp, 11, 2), _digits(stamp, 14, 2), _digits(stamp, 17, 2)
    micros = _digits(stamp, 20, 6)
    if np.any((month < 1) | (month > 12) | (day < 1) | (day > 31)) or np.any(
        (hour > 23) | (minute > 59) | (second > 60)
    ):
        raise ValueError("timestamp field out of range")
    months = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    days = months.astype("datetime64[D]").astype(np.int64) + day - 1
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    out: Int64Array = (seconds * 1_000_000 + micros) * 1000
    return out


# Rows parsed per pass: the vectorised parse needs ~10× the input in temporaries, so a whole
# 60 s segment at once (3.6 MB) cost ~39 MiB, which malloc then kept. 256 KiB passes cap it.
PARSE_CHUNK_BYTES = 256 * 1024


def iter_row_blocks(
    f: BinaryIO, length: int, block_bytes: int = PARSE_CHUNK_BYTES
) -> Iterator[bytes]:
    """The next `length` bytes of `f` in blocks of whole lines (about `block_bytes` each), so a
    reader holds one block, not the file. A last line without its newline is left out."""
    carry = b""
    remaining = length
    while remaining > 0:
        block = f.read(min(block_bytes, remaining))
        if not block:
            break
        remaining -= len(block)
        cut = block.rfind(b"\n") + 1
        if cut == 0:  # no newline yet: a line longer than a block
            carry += block
            continue
        yield carry + block[:cut]
        carry = block[cut:]


def parse_rows(data: bytes) -> tuple[Int64Array, Float64Array, Float64Array]:
    """(t_ns, xyz, acceleration) from CSV rows without header; every line must be complete."""
    if len(data) > PARSE_CHUNK_BYTES:
        return _parse_in_chunks(data)
    return _parse_chunk(data)


def _parse_in_chunks(data: bytes) -> tuple[Int64Array, Float64Array, Float64Array]:
    view = memoryview(data)
    parts: list[tuple[Int64Array, Float64Array, Float64Array]] = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + PARSE_CHUNK_BYTES) + 1
        if end <= start:  # no newline in a whole chunk: take the line, however long
            end = data.find(b"\n", start + PARSE_CHUNK_BYTES) + 1 or len(data)
        parts.append(_parse_chunk(bytes(view[start:end])))
        start = end
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def _parse_chunk(data: bytes) -> tuple[Int64Array, Float64Array, Float64Array]:
    if not data:
        return (
            np.empty(0, dtype=np.int64),
            np.empty((0, 3), dtype=np.float64),
            np.empty(0, dtype=np.float64),
        )
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == _NEWLINE)
    starts = np.concatenate(([0], ends[:-1] + 1))
    n = starts.shape[0]
    if starts[-1] + TIMESTAMP_BYTES + 1 > raw.shape[0]:
        raise ValueError("last line is too short for a row")
    t_ns = _parse_timestamps(raw[starts[:, None] + np.arange(TIMESTAMP_BYTES + 1)])
    keep = np.ones(raw.shape[0], dtype=np.bool_)
    # drop "timestamp," from every line so only numbers and separators remain
    drop = (starts[:, None] + np.arange(TIMESTAMP_BYTES + 1)).ravel()
    keep[drop] = False
    numbers = raw[keep].copy()
    numbers[numbers == _NEWLINE] = _COMMA
    values = np.array(numbers.tobytes()[:-1].split(b","), dtype="S").astype(np.float64)
    values = values.reshape(n, 4)
    return t_ns, np.ascontiguousarray(values[:, :3]), np.ascontiguousarray(values[:, 3])


def parse_rows_lenient(data: bytes) -> tuple[Int64Array, Float64Array, Float64Array]:
    """parse_rows, but a file damaged by someone else (a bad line) costs only its bad lines."""
    try:
        return parse_rows(data)
    except (ValueError, IndexError):
        pass
    stamps: list[int] = []
    rows: list[list[float]] = []
    for line in data.split(b"\n"):
        parts = line.split(b",")
        if len(parts) != 5 or not parts[0].endswith(b"Z"):
            continue
        try:
            stamp = parse_iso_z(parts[0].decode("ascii"))
            values = [float(v) for v in parts[1:]]
        except (ValueError, UnicodeDecodeError):
            continue
        stamps.append(stamp)
        rows.append(values)
    if not rows:
        return parse_rows(b"")
    t_ns = np.array(stamps, dtype=np.int64)
    table = np.array(rows, dtype=np.float64)
    return t_ns, np.ascontiguousarray(table[:, :3]), np.ascontiguousarray(table[:, 3])
