"""Live fan-out: min/max decimation per rate level, one encoding per level, bounded outboxes."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from wilo_backend.model import Float64Array, Int64Array, SampleBatch
from wilo_backend.server.protocol import encode, live_bucket_samples, live_rate_hz
from wilo_backend.store.summary import make_points, minmax_indices, points_to_rows

# Two seconds of samples wait for the next frame at most; more means the frame timer stalled.
DEFAULT_MAX_PENDING_SAMPLES: Final = 1600
DEFAULT_MAX_LIVE_FRAMES: Final = 8
DEFAULT_MAX_LIVE_BYTES: Final = 256 * 1024
DEFAULT_MAX_EVENTS: Final = 32


class Outbox:
    """One client's pending pushes: a few events and a bounded run of live frames.

    Live frames beyond the bound drop the oldest (counted), so a client that stops reading costs
    at most `max_live_bytes` here while everyone else goes on. A newer status push replaces a
    queued older one.
    """

    def __init__(
        self,
        max_live_frames: int = DEFAULT_MAX_LIVE_FRAMES,
        max_live_bytes: int = DEFAULT_MAX_LIVE_BYTES,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self._max_live_frames = max_live_frames
        self._max_live_bytes = max_live_bytes
        self._max_events = max_events
        self._events: deque[tuple[str, str]] = deque()
        self._live: deque[str] = deque()
        self._live_bytes = 0
        self._wake = asyncio.Event()
        self.dropped_frames = 0
        self.dropped_events = 0

    @property
    def queued_bytes(self) -> int:
        return self._live_bytes + sum(len(text) for _, text in self._events)

    def put_event(self, kind: str, text: str) -> None:
        if kind == "status":
            self._events = deque(item for item in self._events if item[0] != "status")
        if len(self._events) >= self._max_events:
            self._events.popleft()
            self.dropped_events += 1
        self._events.append((kind, text))
        self._wake.set()

    def put_live(self, text: str) -> int:
        """Queue a frame; returns how many older frames were dropped to make room."""
        self._live.append(text)
        self._live_bytes += len(text)
        dropped = 0
        while len(self._live) > 1 and (
            len(self._live) > self._max_live_frames or self._live_bytes > self._max_live_bytes
        ):
            self._live_bytes -= len(self._live.popleft())
            dropped += 1
        self.dropped_frames += dropped
        self._wake.set()
        return dropped

    def pop(self) -> str | None:
        if self._events:
            return self._events.popleft()[1]
        if self._live:
            text = self._live.popleft()
            self._live_bytes -= len(text)
            return text
        return None

    async def get(self) -> str:
        while (text := self.pop()) is None:
            self._wake.clear()
            await self._wake.wait()
        return text


@dataclass(eq=False, slots=True)
class Subscription:
    """One client's live stream; `seq` counts every frame meant for it, sent or dropped."""

    outbox: Outbox
    bucket_samples: int
    seq: int = 0

    @property
    def rate_hz(self) -> float:
        return live_rate_hz(self.bucket_samples)


@dataclass(eq=False, slots=True)
class _Level:
    bucket_samples: int
    subscriptions: list[Subscription] = field(default_factory=list)
    # Samples of a bucket not yet complete, kept for the next frame so buckets span frames.
    carry_t_ns: Int64Array = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    carry_xyz: Float64Array = field(default_factory=lambda: np.empty((0, 3)))
    carry_index: Int64Array = field(default_factory=lambda: np.empty(0, dtype=np.int64))


@dataclass(slots=True)
class LiveCounters:
    samples_published: int = 0
    samples_overrun: int = 0
    frames_encoded: int = 0
    frames_queued: int = 0
    frames_dropped: int = 0


class LiveHub:
    """Collects published batches; flush() turns them into one frame per rate level."""

    def __init__(self, max_pending_samples: int = DEFAULT_MAX_PENDING_SAMPLES) -> None:
        self._max_pending = max_pending_samples
        self._pending: deque[SampleBatch] = deque()
        self._pending_samples = 0
        self._levels: dict[int, _Level] = {}
        self._by_outbox: dict[Outbox, Subscription] = {}
        self.counters = LiveCounters()
        # set while anyone subscribes: the frame timer sleeps on it instead of ticking 20 times
        # a second for nobody (an idle main process woke ~90 times a second, BENCHMARKS.md)
        self._subscribed = asyncio.Event()

    @property
    def pending_samples(self) -> int:
        return self._pending_samples

    @property
    def subscriber_count(self) -> int:
        return len(self._by_outbox)

    def subscribe(self, outbox: Outbox, max_rate_hz: float | None) -> Subscription:
        """(Re)subscribe `outbox`; a changed rate moves it to another level, seq continues."""
        previous = self.unsubscribe(outbox)
        bucket = live_bucket_samples(max_rate_hz)
        level = self._levels.get(bucket)
        if level is None:
            level = self._levels[bucket] = _Level(bucket)
        sub = Subscription(outbox, bucket, previous.seq if previous else 0)
        level.subscriptions.append(sub)
        self._by_outbox[outbox] = sub
        self._subscribed.set()
        return sub

    async def wait_for_subscribers(self) -> None:
        """Return at once while anyone subscribes, else when someone does."""
        await self._subscribed.wait()

    def unsubscribe(self, outbox: Outbox) -> Subscription | None:
        sub = self._by_outbox.pop(outbox, None)
        if sub is None:
            return None
        level = self._levels[sub.bucket_samples]
        level.subscriptions.remove(sub)
        if not level.subscriptions:
            del self._levels[sub.bucket_samples]
        if not self._levels:
            self._pending.clear()
            self._pending_samples = 0
            self._subscribed.clear()
        return sub

    def publish(self, batch: SampleBatch) -> None:
        """Keep a batch for the next frame (nothing is kept while nobody subscribes)."""
        if not self._levels or len(batch) == 0:
            return
        self.counters.samples_published += len(batch)
        self._pending.append(batch)
        self._pending_samples += len(batch)
        while len(self._pending) > 1 and self._pending_samples > self._max_pending:
            dropped = self._pending.popleft()
            self._pending_samples -= len(dropped)
            self.counters.samples_overrun += len(dropped)

    def flush(self, extra_fields: str = "") -> int:
        """Encode one frame per level from the pending samples and queue it; returns frames.

        `extra_fields` ('"name":<json>,' already encoded, e.g. the newest vibration features)
        goes into every frame of this flush, encoded once.
        """
        if not self._pending:
            return 0
        batches = list(self._pending)
        self._pending.clear()
        self._pending_samples = 0
        t_ns = np.concatenate([b.t_ns for b in batches]).astype(np.int64, copy=False)
        xyz = np.concatenate([b.xyz for b in batches])
        index = np.concatenate(
            [np.arange(b.first_index, b.first_index + len(b), dtype=np.int64) for b in batches]
        )
        frames = 0
        for level in list(self._levels.values()):
            tail = self._encode_level(level, t_ns, xyz, index)
            if tail is None:
                continue
            frames += 1
            for sub in level.subscriptions:
                sub.seq += 1
                self.counters.frames_dropped += sub.outbox.put_live(
                    f'{{"type":"live_data","seq":{sub.seq},{extra_fields}{tail}'
                )
                self.counters.frames_queued += 1
        self.counters.frames_encoded += frames
        return frames

    def _encode_level(
        self, level: _Level, t_ns: Int64Array, xyz: Float64Array, index: Int64Array
    ) -> str | None:
        """The frame without its opening brace and per-subscriber fields, or None if empty."""
        bucket = level.bucket_samples
        if bucket > 1 and level.carry_t_ns.shape[0]:
            t_ns = np.concatenate([level.carry_t_ns, t_ns])
            xyz = np.concatenate([level.carry_xyz, xyz])
            index = np.concatenate([level.carry_index, index])
        used = t_ns.shape[0] if bucket == 1 else (t_ns.shape[0] // bucket) * bucket
        if bucket > 1:
            level.carry_t_ns, level.carry_xyz = t_ns[used:].copy(), xyz[used:].copy()
            level.carry_index = index[used:].copy()
        if used == 0:
            return None
        points = make_points(t_ns[:used], xyz[:used])
        if bucket > 1:
            # min/max per bucket of `bucket` consecutive samples (the store's chart rule)
            points = points[minmax_indices(points["a"], np.arange(used) // bucket)]
        body = encode(
            {
                "rate_hz": live_rate_hz(bucket),
                "bucket_samples": bucket,
                "first_index": int(index[0]),
                "last_index": int(index[used - 1]),
                "samples": used,
                "data": points_to_rows(points),
            }
        )
        return body[1:]
