"""Shared memory and a process-shared semaphore for the hand-off, with no helper process.

multiprocessing's spawned children and named semaphores come with its resource tracker, a third
Python process of its own (6.5 MiB PSS, issue 20) that is there only to unlink the semaphore's
name if we crash. An anonymous memfd mapping holds the ring, and an unnamed POSIX semaphore
(`sem_init` with pshared = 1) lives inside it, so nothing has a name to leak and the kernel frees
all of it with the last process that maps it.

POSIX (XBD 4.12) requires sem_wait/sem_trywait/sem_post to synchronise memory; glibc implements
them with acquire/release atomics on every architecture, aarch64 included: the same ordering the
multiprocessing Lock (a named sem_t) gave transport.py.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time
from typing import Any

# sizeof(sem_t) is 32 bytes on 64-bit glibc (16 on 32-bit); the ring starts after this
SEMAPHORE_BYTES = 64
_CLOCK_MONOTONIC = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
    for name in ("sem_trywait", "sem_wait", "sem_post"):
        getattr(libc, name).argtypes = [ctypes.c_void_p]
    libc.sem_clockwait.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Timespec)]
    return libc


_LIBC = _libc()


def create_shared(size: int) -> tuple[int, mmap.mmap]:
    """A new anonymous shared mapping of `size` bytes: (its descriptor, to pass to a child; the
    mapping). The descriptor is inheritable only where passed explicitly (pass_fds)."""
    fd = os.memfd_create("wilo-sampler-ring", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


def map_shared(fd: int, size: int) -> mmap.mmap:
    """The child's view of the mapping `create_shared` made (the descriptor passed to it)."""
    return mmap.mmap(fd, size)


class SharedSemaphoreLock:
    """A lock on an unnamed process-shared POSIX semaphore at the start of `memory`.

    `create=True` initialises it (the parent, before starting the child); the child attaches to
    the same bytes. Same interface as multiprocessing's Lock: `acquire(block, timeout)`,
    `release()`. ctypes releases the GIL during the calls, so a blocked acquire holds up only
    its own thread.
    """

    def __init__(self, memory: mmap.mmap, *, create: bool) -> None:
        self._cell = ctypes.c_char.from_buffer(memory)  # keeps the mapping alive as long as us
        self._address = ctypes.addressof(self._cell)
        if create and _LIBC.sem_init(self._address, 1, 1) != 0:
            raise OSError(ctypes.get_errno(), "sem_init failed for the hand-off lock")

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        if not block:
            return self._call(_LIBC.sem_trywait, errno.EAGAIN)
        if timeout is None:
            return self._call(_LIBC.sem_wait, None)
        deadline_ns = time.monotonic_ns() + max(0, int(timeout * 1e9))
        spec = _Timespec(deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
        while True:
            if _LIBC.sem_clockwait(self._address, _CLOCK_MONOTONIC, ctypes.byref(spec)) == 0:
                return True
            code = ctypes.get_errno()
            if code == errno.ETIMEDOUT:
                return False
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))

    def _call(self, function: Any, busy: int | None) -> bool:
        while True:
            if function(self._address) == 0:
                return True
            code = ctypes.get_errno()
            if code == busy:
                return False
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))

    def release(self) -> None:
        if _LIBC.sem_post(self._address) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
