"""The aggregate stays header + every retained segment, byte for byte, on both trim paths."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storehelp import Feeder, aggregate_bytes, files_on_disk, make_config, segment_data

from clocks import FakeClock
from fuzzing import examples
from wilo_backend.store.aggregate import Aggregate, collapse_range, collapse_supported_in
from wilo_backend.store.csvformat import HEADER
from wilo_backend.store.store import Store

SHM = Path("/dev/shm")


def _collapse_works(folder: Path) -> bool:
    probe = folder / "probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 3 * os.statvfs(folder).f_bsize)
        collapse_range(fd, 0, os.statvfs(folder).f_bsize)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture(params=["ext4", "tmpfs"])
def base_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder on a filesystem that collapses (the work tree's ext4) or one that refuses."""
    if request.param == "ext4":
        folder = tmp_path
        assert _collapse_works(folder), "the work tree's filesystem should support COLLAPSE_RANGE"
        yield "ext4", folder
        return
    folder = Path(tempfile.mkdtemp(dir=SHM, prefix="wilo-agg-"))
    try:
        assert not _collapse_works(folder), "/dev/shm (tmpfs) should refuse COLLAPSE_RANGE"
        yield "tmpfs", folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


operation = st.one_of(
    st.tuples(st.just("feed"), st.integers(1, 2400), st.integers(1, 900)),
    st.tuples(st.just("flush"), st.floats(0.0, 2.5), st.just(0)),
    st.tuples(st.just("close"), st.just(0), st.just(0)),
    st.tuples(st.just("step"), st.integers(-5, 5), st.just(0)),
    # restart: 1 = clean close first, 0 = the process just stops (unflushed rows are lost)
    st.tuples(st.just("restart"), st.integers(0, 1), st.just(0)),
)


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    max_files=st.integers(1, 4),
    flush_seconds=st.sampled_from([0.05, 0.3, 1.0]),
    operations=st.lists(operation, min_size=1, max_size=25),
)
def test_aggregate_equals_retained_segments_after_every_step(
    base_dir: tuple[str, Path],
    max_files: int,
    flush_seconds: float,
    operations: list[tuple[str, float, int]],
) -> None:
    kind, base = base_dir
    folder = Path(tempfile.mkdtemp(dir=base))
    clock = FakeClock()
    config = make_config(
        folder, segment_seconds=1, max_files=max_files, flush_seconds=flush_seconds
    )
    store = Store(config, monotonic=clock)
    store.open()
    feeder = Feeder(store, clock)
    try:
        for name, amount, batch in operations:
            if name == "feed":
                feeder.feed(int(amount) / 800, batch_samples=int(batch))
            elif name == "flush":
                clock.now += float(amount)
                store.tick()
            elif name == "close":
                store.close_segment()
            elif name == "restart":
                if amount:
                    store.close()
                else:
                    store.wait_idle()  # (in-process stand-in for a kill: no close, no flush)
                store = Store(config, monotonic=clock)
                store.open()
                feeder.store = store
                feeder.t_ns += 10**9
                feeder.index += 800
            else:
                feeder.step_clock(float(amount))
            assert store.wait_idle()
            assert aggregate_bytes(store) == segment_data(store)
            assert files_on_disk(store.readings_dir) == sorted(store.file_list())
            assert len(store.file_list()) <= max_files + 1  # + the one just started
        store.close()
        assert aggregate_bytes(store) == segment_data(store)
        collapses = store.status().aggregate_collapses
        if kind == "tmpfs":
            assert collapses == 0 and not collapse_supported_in(store.readings_dir)
        else:
            assert collapse_supported_in(store.readings_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_collapse_path_trims_in_place_and_fallback_rebuilds(
    base_dir: tuple[str, Path],
) -> None:
    kind, base = base_dir
    clock = FakeClock()
    store = Store(make_config(base, segment_seconds=1, max_files=3), monotonic=clock)
    store.open()
    Feeder(store, clock).feed(10)
    assert store.wait_idle()
    assert len(store.file_list()) == 3
    assert aggregate_bytes(store) == segment_data(store)
    status = store.status()
    collapses, rebuilds = status.aggregate_collapses, status.aggregate_rebuilds
    assert status.evictions == 7
    if kind == "ext4":
        assert collapses == 7 and rebuilds == 0 and status.aggregate_bytes_rebuilt == 0
    else:
        # background rewrites may take several evicted segments at once
        assert collapses == 0 and 1 <= rebuilds <= 7 and status.aggregate_bytes_rebuilt > 0
        assert 1 <= len(status.rebuild_seconds) <= rebuilds
    # every eviction held up the writer for a measured while, once each
    assert len(status.eviction_seconds) == 7 and min(status.eviction_seconds) > 0
    store.close()


def test_collapse_then_header_rewrite_matches_the_rest(tmp_path: Path) -> None:
    block = os.statvfs(tmp_path).f_bsize
    agg = Aggregate(tmp_path / "agg.csv", HEADER, fsync=False)
    agg.open()
    agg.append(HEADER)
    segments = [bytes([65 + i]) * block * (i + 1) for i in range(3)]
    for data in segments:
        agg.append(data)
    assert agg.can_collapse(len(segments[0]), block)
    assert agg.collapse_head(len(segments[0]))
    assert (tmp_path / "agg.csv").read_bytes() == HEADER + segments[1] + segments[2]
    assert not agg.can_collapse(block + 1, block)
    agg.close()
