"""The hand-off's shared mapping and process-shared semaphore (issue 20: no resource tracker)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from wilo_backend.sampler.shm import SEMAPHORE_BYTES, SharedSemaphoreLock, create_shared, map_shared


def test_the_lock_excludes_times_out_and_is_seen_through_a_second_mapping() -> None:
    fd, memory = create_shared(SEMAPHORE_BYTES + 8)
    lock = SharedSemaphoreLock(memory, create=True)
    other = SharedSemaphoreLock(map_shared(fd, SEMAPHORE_BYTES + 8), create=False)
    assert lock.acquire(block=False)
    assert not other.acquire(block=False)  # the same semaphore through another mapping
    started = time.monotonic()
    assert not other.acquire(True, 0.2)
    assert 0.15 <= time.monotonic() - started < 2.0
    lock.release()
    assert other.acquire(True, 0.2)
    other.release()
    memory[SEMAPHORE_BYTES] = 7
    assert map_shared(fd, SEMAPHORE_BYTES + 8)[SEMAPHORE_BYTES] == 7


CHILDREN = """
import json, time, psutil
from wilo_backend.config import SamplerConfig, SensorConfig
from wilo_backend.sampler.process import Sampler
sampler = Sampler(SensorConfig(driver="sim"), SamplerConfig(cpu="none", rt_priority=0))
sampler.start()
deadline = time.monotonic() + 30
samples = 0
while samples < 800 and time.monotonic() < deadline:
    samples += sum(len(b) for b in sampler.read(0.2))
children = [" ".join(c.cmdline()) for c in psutil.Process().children(recursive=True)]
sampler.stop()
print(json.dumps({"children": children, "samples": samples}))
"""


def test_the_sampler_is_the_only_process_the_service_starts() -> None:
    """multiprocessing's spawn started a resource tracker beside it (a third process)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILDREN], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["samples"] >= 800
    assert len(report["children"]) == 1, report["children"]
    assert "child_main" in report["children"][0]
