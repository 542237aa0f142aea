"""The acquisition process for real: spawn, hand-off under a stopped parent, no sensor, exit."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from waiting import wait_for
from wilo_backend.config import SamplerConfig, SensorConfig
from wilo_backend.model import SampleBatch
from wilo_backend.sampler.process import Sampler, choose_cpu, parse_cpu_list

SCRIPT = Path(__file__).with_name("parent_script.py")


def test_sim_sampler_delivers_continuous_batches_and_stops() -> None:
    sampler = Sampler(SensorConfig(driver="sim"), SamplerConfig(cpu="none", rt_priority=0))
    sampler.start()
    try:
        batches: list[SampleBatch] = []
        wait_for(lambda: batches.extend(sampler.read(0.2)) or sum(map(len, batches)) >= 1600)
        expected = batches[0].first_index
        assert expected == 0
        for batch in batches:
            assert batch.first_index == expected
            assert batch.xyz.shape == (len(batch), 3)
            expected += len(batch)
        stats = sampler.stats()
        assert stats.alive and stats.connected and stats.running
        assert stats.mode == "fifo/resample" and stats.lost == 0
        z = [float(b.xyz[:, 2].mean()) for b in batches[5:]]
        assert all(8.5 < v < 11.0 for v in z)  # gravity on Z, in m/s²
        t_first = batches[0].t_ns[0] / 1e9
        assert abs(t_first - time.time()) < 10  # UTC epoch
    finally:
        sampler.stop()
    assert not sampler.is_alive()
    assert not sampler.stats().alive
    sampler.stop()  # twice is fine


def test_stop_without_start_and_read_without_start() -> None:
    sampler = Sampler(SensorConfig(driver="sim"), SamplerConfig())
    assert sampler.read(0.01) == []
    assert not sampler.is_alive() and not sampler.stats().alive
    sampler.stop()


def test_real_driver_without_device_reports_not_connected_and_retries(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the child inherits the effective level
    sensor = SensorConfig(driver="mpu6050", i2c_bus=250, retry_seconds=0.5)
    sampler = Sampler(sensor, SamplerConfig(cpu="none", rt_priority=0))
    sampler.start()
    errors: list[str] = []

    def retries() -> int:
        errors.append(capfd.readouterr().err)
        return "".join(errors).count("retrying")

    try:
        wait_for(lambda: "/dev/i2c-250" in sampler.stats().last_error)
        wait_for(lambda: retries() >= 3)  # one warning, then a line per retry
        stats = sampler.stats()
        assert stats.alive and not stats.connected and stats.samples == 0
        assert sampler.read(0.1) == []
    finally:
        sampler.stop()
    log_text = "".join(errors)
    assert log_text.count("WARNING") == 1 and "retrying every 0.5 s" in log_text
    assert "driver mpu6050" in log_text  # never silently the simulator


def _run_parent_and_stop_it(
    seconds: float, buffer_seconds: float, stop_s: float
) -> dict[str, float]:
    parent = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(seconds), str(buffer_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.startswith("pid "), line
        child = psutil.Process(int(line.split()[1]))
        time.sleep(0.3)
        os.kill(parent.pid, signal.SIGSTOP)
        samples_before = _child_cpu(child)
        time.sleep(stop_s)
        child_ran = _child_cpu(child) > samples_before
        os.kill(parent.pid, signal.SIGCONT)
        report = json.loads(parent.stdout.readline())
        assert parent.wait(timeout=20) == 0
    finally:
        parent.kill()
        parent.wait()
    report["child_ran_while_parent_stopped"] = child_ran
    return report


def _child_cpu(child: psutil.Process) -> float:
    times = child.cpu_times()
    return float(times.user + times.system)


def test_parent_stopped_for_2_s_loses_nothing() -> None:
    report = _run_parent_and_stop_it(seconds=4.0, buffer_seconds=30.0, stop_s=2.0)
    assert report["child_ran_while_parent_stopped"]
    assert report["gaps"] == 0 and report["lost"] == 0 and report["lost_handoff"] == 0
    assert report["max_dt_ms"] < 5.0  # sampling went on through the stop, no hole in time
    assert report["delivered"] >= 800 * 3


def test_parent_stopped_longer_than_the_buffer_loses_the_oldest_counted() -> None:
    report = _run_parent_and_stop_it(seconds=4.0, buffer_seconds=1.0, stop_s=2.5)
    assert report["lost_handoff"] >= 800 * 1.0  # 2.5 s stopped, 1 s of room
    assert report["gaps"] == report["lost_handoff"] == report["lost"]


def test_child_exits_when_the_parent_dies() -> None:
    parent = subprocess.Popen(
        [sys.executable, str(SCRIPT), "30", "5"], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline().split()[1]))
    parent.kill()
    parent.wait()

    def gone() -> bool:
        try:
            return child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, timeout_s=5.0)


def test_cpu_choice(tmp_path: Path) -> None:
    assert parse_cpu_list("1,3-5\n") == [1, 3, 4, 5]
    assert parse_cpu_list("\n") == []
    isolated = tmp_path / "isolated"
    isolated.write_text("2-3\n")
    assert choose_cpu("auto", isolated) == 3
    isolated.write_text("\n")
    assert choose_cpu("auto", isolated) is None
    assert choose_cpu("auto", tmp_path / "missing") is None
    assert choose_cpu("none", isolated) is None
    assert choose_cpu(1, isolated) == 1


def test_realtime_and_pinning_are_applied_when_allowed() -> None:
    sampler = Sampler(SensorConfig(driver="sim"), SamplerConfig(cpu=0, rt_priority=10))
    sampler.start()
    try:
        wait_for(lambda: sampler.stats().connected)
        child = psutil.Process(sampler.pid)
        assert child.cpu_affinity() == [0]
        stats = sampler.stats()
        assert stats.cpu == 0
        allowed = os.geteuid() == 0
        assert stats.realtime == (os.sched_getscheduler(child.pid) == os.SCHED_FIFO)
        if allowed:
            assert stats.realtime
    finally:
        sampler.stop()


def test_a_reader_that_does_not_wait_keeps_the_wakeup_pipe_empty() -> None:
    """The service's pump reads with no wait while nobody subscribes live (issue 20); the
    child's wake-up bytes must not pile up in the pipe meanwhile."""
    import fcntl
    import termios

    sampler = Sampler(SensorConfig(driver="sim"), SamplerConfig(cpu="none", rt_priority=0))
    sampler.start()
    try:
        wait_for(lambda: sampler.read(0.2) != [], 30)  # the child is up and sampling
        delivered = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            delivered += sum(map(len, sampler.read(0)))
            time.sleep(0.1)
        delivered += sum(map(len, sampler.read(0)))
        assert sampler._notify is not None
        waiting = bytearray(4)
        fcntl.ioctl(sampler._notify, termios.FIONREAD, waiting)
        # ~130 wake-ups were written in 2 s; at most the last few since the read remain
        assert int.from_bytes(waiting, sys.byteorder) <= 3
        assert delivered >= 800
    finally:
        sampler.stop()
