"""live.py: min/max decimation, one encoding per level, sequence numbers, bounded outboxes."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import examples
from wilo_backend.model import SampleBatch
from wilo_backend.server.live import LiveHub, Outbox

T0_NS = 1_795_800_000_000_000_000  # 2026-11-28T...
PERIOD_NS = 1_250_000  # 800 Hz


def make_stream(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t_ns = T0_NS + np.arange(n, dtype=np.int64) * PERIOD_NS
    xyz = rng.normal(0.0, 1.0, size=(n, 3)) + np.array([0.0, 0.0, 9.80665])
    return t_ns, xyz


def batches(
    t_ns: np.ndarray, xyz: np.ndarray, sizes: list[int], first_index: int = 0
) -> list[SampleBatch]:
    out, start = [], 0
    for size in sizes:
        if start >= t_ns.shape[0]:
            break
        end = min(start + size, t_ns.shape[0])
        out.append(SampleBatch(first_index + start, t_ns[start:end], xyz[start:end]))
        start = end
    return out


def drain(outbox: Outbox) -> list[dict[str, Any]]:
    frames = []
    while (text := outbox.pop()) is not None:
        frames.append(json.loads(text))
    return frames


def iso_timestamps(t_ns: np.ndarray) -> list[str]:
    """Reference formatting, one datetime per sample (the code under test is vectorised)."""
    out = []
    for t in t_ns.tolist():
        moment = datetime.fromtimestamp(t // 1_000_000_000, UTC)
        out.append(moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t % 1_000_000_000 // 1000:06d}Z")
    return out


def brute_minmax(values: np.ndarray, bucket: int) -> list[int]:
    picked: list[int] = []
    for start in range(0, len(values) - bucket + 1, bucket):
        chunk = values[start : start + bucket]
        picked += sorted({start + int(chunk.argmin()), start + int(chunk.argmax())})
    return picked


def test_frame_rows_have_the_csv_data_shape_and_iso_z_timestamps() -> None:
    moment = datetime(2026, 11, 27, 15, 22, 0, tzinfo=UTC)
    t_ns = np.array([int(moment.timestamp()) * 1_000_000_000 + 123_456_789], dtype=np.int64)
    hub, box = LiveHub(), Outbox()
    hub.subscribe(box, None)
    hub.publish(SampleBatch(0, t_ns, np.array([[3.0, 4.0, 0.0]])))
    hub.flush()
    frame = json.loads(box.pop() or "")
    assert frame["type"] == "live_data" and frame["seq"] == 1
    assert frame["data"] == [
        {
            "timestamp": "2026-11-27T15:22:00.123456Z",
            "acceleration": 5.0,
            "x": 3.0,
            "y": 4.0,
            "z": 0.0,
        }
    ]


@settings(max_examples=examples(40), deadline=None)
@given(
    st.lists(st.integers(1, 120), min_size=1, max_size=60),
    st.lists(st.integers(1, 6), min_size=1, max_size=30),
)
def test_full_rate_subscriber_gets_every_sample_once_in_order(
    sizes: list[int], flush_every: list[int]
) -> None:
    t_ns, xyz = make_stream(sum(sizes))
    hub = LiveHub(max_pending_samples=10_000)
    outbox = Outbox(max_live_frames=10_000, max_live_bytes=1 << 30)
    hub.subscribe(outbox, None)
    pattern = iter(flush_every * 100)
    countdown = next(pattern)
    for batch in batches(t_ns, xyz, sizes, first_index=500):
        hub.publish(batch)
        countdown -= 1
        if countdown == 0:
            hub.flush()
            countdown = next(pattern)
    hub.flush()
    frames = drain(outbox)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    rows = [row for f in frames for row in f["data"]]
    assert [r["timestamp"] for r in rows] == iso_timestamps(t_ns)
    assert [r["x"] for r in rows] == np.round(xyz[:, 0], 6).tolist()
    # index ranges tile the stream with no gap and no overlap
    assert frames[0]["first_index"] == 500
    for before, after in itertools.pairwise(frames):
        assert after["first_index"] == before["last_index"] + 1
    assert frames[-1]["last_index"] == 500 + t_ns.shape[0] - 1
    assert hub.counters.frames_dropped == 0


def test_decimated_level_keeps_bucket_peaks_across_frame_boundaries() -> None:
    t_ns, xyz = make_stream(800 * 3 + 5, seed=4)
    xyz[1000] = [50.0, 50.0, 50.0]  # a spike must survive decimation
    hub = LiveHub(max_pending_samples=10_000)
    outbox = Outbox(max_live_frames=1000)
    sub = hub.subscribe(outbox, 100.0)
    assert sub.bucket_samples == 16 and sub.rate_hz == 100.0
    for batch in batches(t_ns, xyz, [37] * 100):
        hub.publish(batch)
        hub.flush()
    rows = [row for f in drain(outbox) for row in f["data"]]
    magnitude = np.sqrt((xyz**2).sum(axis=1))
    full = (t_ns.shape[0] // 16) * 16
    expected = brute_minmax(magnitude[:full], 16)
    assert [r["timestamp"] for r in rows] == iso_timestamps(t_ns[expected])
    assert max(r["acceleration"] for r in rows) == pytest.approx(np.sqrt(3 * 50.0**2))


def test_each_level_is_encoded_once_and_subscribers_differ_only_in_seq() -> None:
    t_ns, xyz = make_stream(400)
    hub = LiveHub()
    boxes = [Outbox() for _ in range(5)]
    for box in boxes[:4]:
        hub.subscribe(box, None)
    hub.subscribe(boxes[4], 50.0)
    hub.subscribe(boxes[0], None)  # re-subscribing does not duplicate
    assert hub.subscriber_count == 5
    hub.publish(batches(t_ns, xyz, [400])[0])
    assert hub.flush() == 2
    assert hub.counters.frames_encoded == 2 and hub.counters.frames_queued == 5
    texts = [box.pop() for box in boxes[:4]]
    assert len(set(texts)) == 1  # same seq (1) for all, one shared encoding
    slow = json.loads(boxes[4].pop() or "")
    assert slow["bucket_samples"] == 32 and len(slow["data"]) <= 2 * (400 // 32)


def test_a_subscriber_that_does_not_read_drops_frames_and_sees_the_gap() -> None:
    t_ns, xyz = make_stream(800 * 10)
    hub = LiveHub()
    reader, stalled = Outbox(max_live_frames=8), Outbox(max_live_frames=8)
    hub.subscribe(reader, None)
    hub.subscribe(stalled, None)
    got: list[dict[str, Any]] = []
    for batch in batches(t_ns, xyz, [40] * 200):
        hub.publish(batch)
        hub.flush()
        got += drain(reader)
    assert [f["seq"] for f in got] == list(range(1, 201))
    late = drain(stalled)
    assert [f["seq"] for f in late] == list(range(193, 201))  # only the newest 8 kept
    assert stalled.dropped_frames == 192 and hub.counters.frames_dropped == 192
    assert stalled.queued_bytes == 0


def test_outbox_bounds_bytes_coalesces_status_and_sends_events_first() -> None:
    box = Outbox(max_live_frames=100, max_live_bytes=1000, max_events=3)
    for i in range(50):
        box.put_live(f"frame-{i:03d}" + "x" * 90)
    assert box.queued_bytes <= 1000 and box.dropped_frames == 40
    box.put_event("status", "s1")
    box.put_event("new_file", "n1")
    box.put_event("status", "s2")
    assert box.pop() == "n1" and box.pop() == "s2"
    for i in range(5):
        box.put_event("new_file", f"n{i}")
    assert box.dropped_events == 2
    assert [box.pop() for _ in range(3)] == ["n2", "n3", "n4"]
    assert (box.pop() or "").startswith("frame-040")


def test_pending_samples_are_bounded_when_frames_stall() -> None:
    t_ns, xyz = make_stream(800 * 10)
    hub = LiveHub(max_pending_samples=1600)
    box = Outbox()
    hub.subscribe(box, None)
    for batch in batches(t_ns, xyz, [40] * 200):
        hub.publish(batch)
    hub.flush()
    frame = json.loads(box.pop() or "")
    assert frame["samples"] == 1600 and frame["last_index"] == 800 * 10 - 1
    assert hub.counters.samples_overrun == 800 * 10 - 1600


def test_nothing_is_kept_without_subscribers() -> None:
    t_ns, xyz = make_stream(100)
    hub = LiveHub()
    box = Outbox()
    hub.subscribe(box, None)
    hub.unsubscribe(box)
    hub.publish(batches(t_ns, xyz, [100])[0])
    assert hub.flush() == 0 and hub.counters.samples_published == 0
