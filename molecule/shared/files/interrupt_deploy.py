"""Run a deploy and kill it (the whole process group, like a CD timeout) at a chosen point.

--root is the test host's root filesystem as this machine sees it (testhost.sh's overlay), so
the switch of `current` is seen within milliseconds, without a connection to the host.
  --at switch   kill right after `current` points somewhere new (before the restart)
  --at down     kill once, after the switch, the service stopped answering --healthz (restarted)
Exit 0 when the deploy was killed there; 1 (with its output) when it ended before that point.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

POLL_SECONDS = 0.01


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5):  # noqa: S310 (an http URL of a test host)
            return True
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--at", choices=["switch", "down"], required=True)
    parser.add_argument("--healthz", default="")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    current = args.root / "opt/wilo-backend/current"
    before = current.readlink()
    # a file, not a pipe: a pipe nobody reads would block the play once full
    with tempfile.TemporaryFile() as log:
        play = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        switched = False
        while play.poll() is None:
            switched = switched or current.readlink() != before
            if switched and (args.at == "switch" or not answers(args.healthz)):
                os.killpg(play.pid, signal.SIGKILL)
                play.wait()
                print(f"killed the deploy at {args.at}: current {before} -> {current.readlink()}")
                return 0
            time.sleep(POLL_SECONDS)
        log.seek(0)
        print(log.read().decode(errors="replace"))
    print(f"the deploy ended (rc {play.returncode}) before the {args.at} point", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
