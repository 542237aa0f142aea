"""One process per data folder: an exclusive flock on `<data_dir>/.lock`, held while it runs.

Start-up repair rewrites the live segment's tail and the aggregate; a second `wilo-backend run`
on the same folder would "repair" what the first is writing (merged rows, a short aggregate).
So the lock is taken before anything in the folder is touched, and a process that cannot get it
changes no byte: it only reads the holder's PID to name it. flock is released by the kernel when
the holder exits, however it exits (SIGKILL and power loss included), so a stale file never
blocks a restart; the file itself is never deleted (deleting it would let two processes hold
locks on two different files).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".lock"


class DataDirError(Exception):
    """The data folder cannot be used; the message names it and says what to do."""


class DataDirBusyError(DataDirError):
    """Another process holds the data folder's lock."""


class DataDirLock:
    """`with DataDirLock(path):` holds the folder for this process (and raises if it cannot)."""

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self.create = create
        self._fd: int | None = None

    def acquire(self) -> None:
        if not self.data_dir.is_dir():
            if not self.create:
                raise DataDirError(f"data folder {self.data_dir} does not exist")
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataDirError(f"cannot create data folder {self.data_dir}: {exc}") from exc
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise DataDirError(f"cannot open {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirBusyError(
                f"data folder {self.data_dir} is in use by another wilo-backend "
                f"(pid {holder}); stop it first or choose another data folder"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise DataDirError(f"cannot lock {self.path}: {exc.strerror}") from exc
        # ours now: say who holds it, for the message a second process prints
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    """The holder's PID as it wrote it ('unknown' while it has not yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
