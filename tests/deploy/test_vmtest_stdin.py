"""image/vmtest.py's SSH probes leave the stdin they were started with as they found it.

ssh makes its stdin non-blocking; killed by a probe's timeout (a VM still booting), it cannot
set it back. That flag belongs to the open file, which CI's later stages share: in a fresh-clone
`.ci/run` on 2026-12-03, `make molecule-arm64` after `make image-test` then stopped at once with
"Ansible requires blocking IO on stdin/stdout/stderr. Non-blocking file handles detected:
<stdin>". Here a stand-in for ssh does what ssh does to its stdin and is killed by the timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from image.vmtest import probe

# what ssh does on a connection that hangs: stdin made non-blocking, then no answer
HANGING_SSH = [
    sys.executable,
    "-c",
    "import os, time; os.set_blocking(0, False); time.sleep(60)",
]


@pytest.fixture
def shared_stdin() -> Iterator[int]:
    """fd 0 of this process, for the test: a fresh pipe's read end, blocking, restored after."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        yield 0
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)


def test_a_probe_killed_by_its_timeout_leaves_stdin_blocking(shared_stdin: int) -> None:
    assert os.get_blocking(shared_stdin)
    with pytest.raises(subprocess.TimeoutExpired):
        probe(HANGING_SSH, timeout=3.0)
    assert os.get_blocking(shared_stdin), "a probe left the shared stdin non-blocking"


def test_a_probe_keeps_the_exit_status_and_output() -> None:
    done = probe([sys.executable, "-c", "import sys; print('out'); sys.exit(255)"], timeout=30)
    assert (done.returncode, done.stdout) == (255, "out\n")
