"""The acquisition OS process: pinned, realtime when allowed, handing batches over shared memory."""

from __future__ import annotations

import logging
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wilo_backend.config import SamplerConfig, SensorConfig
from wilo_backend.model import OUTPUT_RATE_HZ, SampleBatch, SamplerStats
from wilo_backend.sampler.acquire import Acquisition
from wilo_backend.sampler.shm import (
    SEMAPHORE_BYTES,
    SharedSemaphoreLock,
    create_shared,
    map_shared,
)
from wilo_backend.sampler.transport import RingReader, RingWriter, SharedLock, ring_bytes
from wilo_backend.sensor.bus import Bus
from wilo_backend.sensor.clock import Clock, MonotonicClock
from wilo_backend.sensor.faults import FaultClock, FaultPlan
from wilo_backend.sensor.sim import SimMpu6050, SimSignal

log = logging.getLogger("wilo_backend.sampler")

ISOLATED_CPUS = Path("/sys/devices/system/cpu/isolated")
HEARTBEAT_TIMEOUT_S = 2.0  # a child that has not looped for this long counts as hung
STATS_INTERVAL_NS = 50_000_000
PARENT_CHECK_NS = 100_000_000
# the service's own log format (service.py), so the sampler's lines carry a time too
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CHILD_COMMAND = "from wilo_backend.sampler.process import child_main; child_main()"


def parse_cpu_list(text: str) -> list[int]:
    """'1,3-5' → [1, 3, 4, 5] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def choose_cpu(setting: int | str, isolated_path: Path = ISOLATED_CPUS) -> int | None:
    """sampler.cpu: a number, 'none', or 'auto' = the last isolated CPU (none if none isolated)."""
    if isinstance(setting, int):
        return setting
    if setting == "none":
        return None
    try:
        isolated = parse_cpu_list(isolated_path.read_text())
    except (OSError, ValueError):
        return None
    return isolated[-1] if isolated else None


def _pin_and_prioritise(config: SamplerConfig) -> tuple[int | None, bool]:
    cpu = choose_cpu(config.cpu)
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:
            log.warning("cannot pin the sampler to CPU %d (%s); running unpinned", cpu, exc)
            cpu = None
    realtime = False
    if config.rt_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(config.rt_priority))
            realtime = True
        except OSError as exc:
            log.warning(
                "SCHED_FIFO priority %d not permitted (%s); sampling at normal priority",
                config.rt_priority,
                exc,
            )
    return cpu, realtime


def _bus_opener(sensor: SensorConfig, faults: FaultPlan | None = None) -> Callable[[], Bus]:
    if sensor.driver == "sim":
        sim = SimMpu6050(
            MonotonicClock(),
            SimSignal(
                vibration_hz=sensor.sim.vibration_hz,
                vibration_ms2=sensor.sim.vibration_ms2,
                harmonics=sensor.sim.harmonics,
                noise_ms2=sensor.sim.noise_ms2,
            ),
            address=sensor.address,
            clock_error=sensor.sim.clock_error,
            i2c_error_rate=sensor.sim.i2c_error_rate,
            faults=faults,
        )
        return lambda: sim

    def open_smbus() -> Bus:
        import smbus2  # only the real driver needs it

        bus: Bus = smbus2.SMBus(sensor.i2c_bus)
        return bus

    return open_smbus


def child_main() -> None:
    """Entry of the acquisition process (`python -c`): its arguments come pickled on stdin."""
    args = pickle.load(sys.stdin.buffer)  # noqa: S301 (a pipe from our parent, as spawn uses)
    memory = map_shared(args["memory_fd"], args["memory_bytes"])
    lock = SharedSemaphoreLock(memory, create=False)
    _acquisition_main(
        args["sensor"],
        args["config"],
        memoryview(memory)[SEMAPHORE_BYTES:],
        args["capacity"],
        lock,
        args["notify_fd"],
        args["parent_pid"],
        args["log_level"],
    )


def _acquisition_main(
    sensor: SensorConfig,
    config: SamplerConfig,
    buffer: Any,
    capacity: int,
    lock: SharedLock,
    notify_fd: int,
    parent_pid: int,
    log_level: int,
) -> None:
    """Body of the child process. Runs until the parent asks it to stop or is gone.

    SIGTERM and SIGINT are ignored: systemd (and Ctrl-C) signal the whole process group at once,
    and the parent, which stops us through the ring, must still find us alive then; a child that
    exited on its own signal was taken for a crash. A parent killed outright is noticed through
    getppid() within PARENT_CHECK_NS, and the parent's stop() ends with SIGKILL if need be.
    """
    logging.basicConfig(stream=sys.stderr, level=log_level, format=LOG_FORMAT)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cpu, realtime = _pin_and_prioritise(config)
    writer = RingWriter(buffer, capacity, lock, notify_fd)
    # sensor.sim.fault_file (soak tests): scheduled faults and a shifted wall clock, sim only
    faults = None
    if sensor.driver == "sim" and sensor.sim.fault_file:
        faults = FaultPlan(Path(sensor.sim.fault_file))
    clock: Clock = MonotonicClock() if faults is None else FaultClock(faults)
    acquisition = Acquisition(sensor, _bus_opener(sensor, faults), clock)
    acquisition.stats.cpu, acquisition.stats.realtime = cpu, realtime
    log.info(
        "sampler process %d started: driver %s, cpu %s, realtime %s",
        os.getpid(),
        sensor.driver,
        "any" if cpu is None else cpu,
        realtime,
    )
    last_stats = last_parent_check = 0
    parent_gone = False
    while not writer.stop_requested:
        for batch in acquisition.step():
            writer.write(batch)
        writer.flush()  # batches that found the lock taken last time
        now = clock.now_ns()
        writer.heartbeat(now)
        if now - last_stats >= STATS_INTERVAL_NS and writer.publish_stats(acquisition.stats):
            last_stats = now
        if now - last_parent_check >= PARENT_CHECK_NS:
            last_parent_check = now
            if os.getppid() != parent_pid:
                log.warning("parent process %d is gone; sampler exits", parent_pid)
                parent_gone = True
                break
    if not parent_gone:
        # a clean stop: keep what the sensor's FIFO still holds, and hand everything over
        for batch in acquisition.drain():
            writer.write(batch)
        if not writer.flush(block=True):
            log.warning("could not hand over the last samples: the ring stayed locked")
    acquisition.stats.running = False
    writer.publish_stats(acquisition.stats, block=True)


class Sampler:
    """The acquisition process as seen from the service: start, read batches, counters, stop.

    The child is a plain `python` subprocess, not a multiprocessing one: multiprocessing's spawn
    brings its resource-tracker process along (issue 20), and the child imported the parent's
    main module too. The ring and its lock live in one anonymous shared mapping (shm.py).
    """

    def __init__(self, sensor: SensorConfig, sampler: SamplerConfig) -> None:
        self.sensor = sensor
        self.config = sampler
        self.capacity = max(1, round(sampler.buffer_seconds * OUTPUT_RATE_HZ))
        self._memory_bytes = SEMAPHORE_BYTES + ring_bytes(self.capacity)
        self._memory_fd, self._memory = create_shared(self._memory_bytes)
        self._lock = SharedSemaphoreLock(self._memory, create=True)  # orders the hand-off
        ring = memoryview(self._memory)[SEMAPHORE_BYTES:]
        self._reader = RingReader(ring, self.capacity, self._lock)
        self._process: subprocess.Popen[bytes] | None = None
        self._notify: int | None = None
        self._poller = select.poll()

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("sampler already started")
        receive, send = os.pipe()
        args = {
            "sensor": self.sensor,
            "config": self.config,
            "memory_fd": self._memory_fd,
            "memory_bytes": self._memory_bytes,
            "capacity": self.capacity,
            "notify_fd": send,
            "parent_pid": os.getpid(),
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        # the package's folder first: `python backend/main.py` finds it through sys.path only
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-c", CHILD_COMMAND],
            stdin=subprocess.PIPE,
            pass_fds=(self._memory_fd, send),
            env={**os.environ, "PYTHONPATH": path},
        )
        os.close(send)  # the child holds the write end; EOF here means it is gone
        assert self._process.stdin is not None
        with self._process.stdin:
            pickle.dump(args, self._process.stdin)
        self._notify = receive
        # one poll object for the process's life: Connection.poll built and tore down a
        # selector at every wake-up, ~67 times a second
        os.set_blocking(receive, False)
        self._poller = select.poll()
        self._poller.register(receive, select.POLLIN)

    def read(self, timeout_s: float) -> list[SampleBatch]:
        """Batches that arrived since the last call, in order; waits up to `timeout_s` for some."""
        if self._reader.pending == 0 and self._notify is not None and timeout_s > 0:
            deadline = time.monotonic() + timeout_s
            while self._reader.pending == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._wait(remaining):
                    break
        elif self._notify is not None:
            self._take_wakeups()  # a reader that does not wait still empties the pipe
        return self._reader.read()

    def _take_wakeups(self) -> bytes | None:
        """The wake-up bytes waiting in the pipe (b"" if none); None when the child's end is
        closed (it exited)."""
        assert self._notify is not None
        try:
            data = os.read(self._notify, 4096)
        except BlockingIOError:
            return b""
        except OSError:
            return None
        return data or None

    def _wait(self, timeout_s: float) -> bool:
        """Wait for a wake-up byte; False when the child's end is closed (it exited)."""
        assert self._notify is not None
        if not self._poller.poll(max(1, math.ceil(timeout_s * 1000))):
            return True
        data = self._take_wakeups()
        if data is None:
            time.sleep(min(timeout_s, 0.05))  # the child is gone; do not spin on EOF
            return False
        return True

    def stats(self) -> SamplerStats:
        stats = self._reader.stats()
        stats.mode = (
            f"fifo/{self.sensor.fifo_rate_mode}" if self.sensor.mode == "fifo" else "polled"
        )
        stats.alive = self.is_alive() and self._reader.heartbeat_age_s() < HEARTBEAT_TIMEOUT_S
        if not self.is_alive():
            stats.running = False
        return stats

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the child to stop, then terminate, then kill; safe if never started or dead."""
        process = self._process
        if process is None:
            return
        self._reader.request_stop()
        if not _wait(process, timeout_s):
            log.warning("sampler process did not stop in %.1f s; terminating", timeout_s)
            process.terminate()
            if not _wait(process, 1.0):
                process.kill()
                _wait(process, 1.0)
        if self._notify is not None:
            self._poller = select.poll()  # forget the descriptor before it can be reused
            os.close(self._notify)
            self._notify = None


def _wait(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once `process` has exited (reaped), False if it still runs after `timeout_s`."""
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True
