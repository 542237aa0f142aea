"""Acquisition bench: rate, losses, deadline deviation, CPU and spurs per mode, idle and loaded."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import psutil

from bench.spectrum import spur_db
from wilo_backend.config import SamplerConfig, SensorConfig, SimConfig
from wilo_backend.model import OUTPUT_RATE_HZ, Float64Array, SampleBatch
from wilo_backend.sampler.process import Sampler
from wilo_backend.sampler.transport import RingReader, RingWriter, ring_bytes

TONE_HZ = 100.0
WARMUP_S = 1.5
BURNERS = 2
# SPEC §8: every acquisition row runs for 10 minutes (--quick: 10 s)
ROW_SECONDS = 600.0
# a 15 ms FIFO poll at 800 Hz hands over 12 samples
HANDOFF_BATCH = 12
HANDOFF_WRITES = 200_000


@dataclass(frozen=True)
class Case:
    label: str
    mode: str
    rate_mode: str
    realtime: bool
    clock_error: float = 0.0
    loads: tuple[bool, ...] = (False, True)


CASES = (
    Case("fifo (1 kHz + resampler)", "fifo", "resample", True),
    Case("fifo, sensor clock +1 %", "fifo", "resample", True, 0.01, (True,)),
    Case("fifo, sensor clock −1 %", "fifo", "resample", True, -0.01, (True,)),
    Case("fifo direct (8 kHz / 10)", "fifo", "direct", True),
    Case("polled, SCHED_OTHER", "polled", "resample", False),
    Case("polled, SCHED_FIFO 50", "polled", "resample", True),
)


@dataclass
class Result:
    case: Case
    loaded: bool
    seconds: float
    rate_hz: float
    child_rate_hz: float
    delivered: int
    lost_overflow: int
    lost_missed: int
    lost_handoff: int
    missed_pct: float
    p50_us: float
    p99_us: float
    max_us: float
    cpu_pct: float
    spur: float | None
    realtime: bool
    clock_error_ppm: float
    load_average: float


def _burners(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(case: Case, loaded: bool, seconds: float) -> Result:
    """One run on the real clock: the sampler process with the simulated sensor fed a pure tone."""
    sensor = SensorConfig(
        driver="sim",
        mode=case.mode,
        fifo_rate_mode=case.rate_mode,
        sim=SimConfig(
            vibration_hz=TONE_HZ,
            vibration_ms2=5.0,
            harmonics=0,
            noise_ms2=0.0,
            clock_error=case.clock_error,
        ),
    )
    sampler = Sampler(sensor, SamplerConfig(rt_priority=50 if case.realtime else 0))
    burners = _burners(BURNERS) if loaded else []
    sampler.start()
    try:
        child = psutil.Process(sampler.pid)
        warm_until = time.monotonic() + WARMUP_S
        while time.monotonic() < warm_until:
            sampler.read(0.1)
        start_stats = sampler.stats()
        child.cpu_percent()
        started = time.monotonic()
        delivered = 0
        xs: list[Float64Array] = []
        firsts: list[tuple[int, int]] = []
        # rate between two moments just after data arrived, so the pipeline delay cancels
        first_arrival: tuple[float, int] | None = None
        last_arrival = (started, 0)
        while (now := time.monotonic()) < started + seconds:
            batches = sampler.read(0.1)
            arrived = time.monotonic()
            for batch in batches:
                delivered += len(batch)
                xs.append(batch.xyz[:, 0])
                firsts.append((batch.first_index, len(batch)))
            if batches:
                if first_arrival is None:
                    first_arrival, delivered = (arrived, 0), 0
                last_arrival = (arrived, delivered)
        elapsed = now - started
        load_average = os.getloadavg()[0]
        cpu_pct = child.cpu_percent()
        stats = sampler.stats()
    finally:
        sampler.stop()
        for burner in burners:
            burner.kill()
            burner.wait()
    contiguous = all(a + n == b for (a, n), (b, _) in itertools.pairwise(firsts))
    spur = spur_db(np.concatenate(xs), OUTPUT_RATE_HZ, TONE_HZ) if xs and contiguous else None
    missed = stats.lost_missed_deadlines - start_stats.lost_missed_deadlines
    taken = stats.samples - start_stats.samples
    return Result(
        case=case,
        loaded=loaded,
        seconds=elapsed,
        rate_hz=_rate(first_arrival, last_arrival),
        child_rate_hz=stats.rate_hz,
        delivered=delivered,
        lost_overflow=stats.lost_overflow,
        lost_missed=stats.lost_missed_deadlines,
        lost_handoff=stats.lost_handoff,
        missed_pct=100.0 * missed / max(1, missed + taken),
        p50_us=stats.deviation_us_p50,
        p99_us=stats.deviation_us_p99,
        max_us=stats.deviation_us_max,
        cpu_pct=cpu_pct,
        spur=spur,
        realtime=stats.realtime,
        clock_error_ppm=stats.clock_error_ppm,
        load_average=load_average,
    )


def handoff_cost(writes: int) -> tuple[float, float, float]:
    """CPU per hand-off on this machine, µs: one write of a 12-sample batch (the lock taken and
    given back, the slots copied), the lock alone, and the reader's read of it."""
    context = multiprocessing.get_context("spawn")
    capacity = 4096
    buffer, lock = context.RawArray("B", ring_bytes(capacity)), context.Lock()
    writer, reader = RingWriter(buffer, capacity, lock), RingReader(buffer, capacity, lock)
    t_ns = np.arange(HANDOFF_BATCH, dtype=np.int64)
    xyz = np.ones((HANDOFF_BATCH, 3))
    batches = [SampleBatch(k * HANDOFF_BATCH, t_ns, xyz) for k in range(64)]
    write_s = read_s = 0.0
    for k in range(writes):
        batch = batches[k % 64]
        started = time.thread_time()
        writer.write(SampleBatch(k * HANDOFF_BATCH, batch.t_ns, batch.xyz))
        middle = time.thread_time()
        reader.read()
        read_s += time.thread_time() - middle
        write_s += middle - started
    started = time.thread_time()
    for _ in range(writes):
        lock.acquire(False)
        lock.release()
    lock_s = time.thread_time() - started
    return 1e6 * write_s / writes, 1e6 * lock_s / writes, 1e6 * read_s / writes


def _rate(first: tuple[float, int] | None, last: tuple[float, int]) -> float:
    if first is None or last[0] <= first[0]:
        return 0.0
    return (last[1] - first[1]) / (last[0] - first[0])


def _row(r: Result) -> str:
    polled = r.case.mode == "polled"
    deviation = f"{r.p50_us:.0f} / {r.p99_us:.0f} / {r.max_us:.0f}" if polled else "—"
    missed = f"{r.missed_pct:.3f}" if polled else "—"
    spur = "gaps" if r.spur is None else f"{r.spur:.1f}"
    return (
        f"| {r.case.label} | {'yes' if r.realtime else 'no'} | "
        f"{'2 burners' if r.loaded else 'idle'} | {r.seconds:.0f} | "
        f"{r.rate_hz:.2f} / {r.child_rate_hz:.2f} | "
        f"{r.lost_overflow} / {r.lost_missed} / {r.lost_handoff} | {missed} | {deviation} | "
        f"{r.cpu_pct:.1f} | {spur} | {r.clock_error_ppm:+.0f} | {r.load_average:.1f} |"
    )


def run(quick: bool) -> str:
    """The markdown section for BENCHMARKS.md."""
    results = []
    for case in CASES:
        seconds = 10.0 if quick else ROW_SECONDS
        for loaded in case.loads:
            results.append(measure(case, loaded, seconds))
            print(_row(results[-1]), flush=True)
    write_us, lock_us, read_us = handoff_cost(HANDOFF_WRITES // (20 if quick else 1))
    lines = [
        "## Acquisition",
        "",
        f"Simulated MPU-6050 (register level, real clock, 400 kHz bus timing) fed a pure "
        f"{TONE_HZ:.0f} Hz sine, read by the real sampler process through its shared-memory "
        f"hand-off; {WARMUP_S} s warm-up excluded. Load = {BURNERS} processes spinning "
        f"`while True: pass` on this {os.cpu_count()}-CPU machine. Rate = samples per second of "
        "host time, as delivered to the parent (between two arrivals) / as the sampler counts "
        "them (its last 10 s). Lost = overflow / missed deadlines / hand-off "
        "(whole run). Deviation = how late each polled deadline was served, p50 / p99 / max µs. "
        "CPU = the sampler process, % of one core. Clock ppm = the sensor clock error the "
        "timebase measured (fifo modes). Spur = highest line away from the tone, dB "
        "relative to it (Blackman-Harris window, whole run at 800 Hz). Load avg = the machine's "
        "1-minute load average at the end of the run: this 2-CPU VM is shared with other work "
        "(test suites, other benches, test hosts), so 'idle' means only that no burners of ours "
        "ran.",
        "",
        "| mode | SCHED_FIFO | load | s | samples/s parent / child | lost ovf/miss/handoff "
        "| missed % | deviation µs p50/p99/max | CPU % | spur dB | clock ppm | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(r) for r in results),
        "",
        "Targets (SPEC §8): fifo 0 lost and ≤ 10 % CPU; polled with SCHED_FIFO p99 ≤ 50 µs and "
        "≤ 0.1 % missed under load; fifo spurs ≤ −60 dB (direct mode is the comparison).",
        "",
        f"Hand-off cost (one process, CPU time, mean of {HANDOFF_WRITES // (20 if quick else 1):,}"
        f" writes of a {HANDOFF_BATCH}-sample batch, as one 15 ms FIFO poll gives): write "
        f"{write_us:.1f} µs, of which the ordering lock (sem_trywait + sem_post) {lock_us:.2f} µs;"
        f" the parent's read {read_us:.1f} µs. At ~67 polls/s the lock costs the sampler "
        f"{lock_us * 67 / 1e4:.4f} % of a core.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
