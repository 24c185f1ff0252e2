"""Exclusive per-session locks that hold across threads and processes.

A kernel ``flock`` on a lock file that is never renamed or replaced, plus a
thread lock inside the process. Why these choices:

- ``flock`` dies with its process: no stale locks, so no "stale lock" heuristics.
- not ``lockf``/``fcntl`` record locks: closing *any* descriptor of the file in
  the process would silently release them.
- not the data file itself: ``os.replace`` swaps the inode, so a second locker
  would lock the new file while the first still holds the old one.
- a fixed set of striped lock files (the id's hash picks one) in the hidden
  subfolder ``.locks`` keeps the store's folder from doubling its entries. Two ids
  on one stripe merely wait for each other.

Locks are re-entrant within a thread, so ``update``'s function may save other
sessions of the same store without deadlocking on a shared stripe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sessionstore.atomic import make_directory

__all__ = ["LOCK_DIR_NAME", "STRIPES", "StripedLocks"]

LOCK_DIR_NAME = ".locks"
"""Subfolder of the store that holds the lock files."""

STRIPES = 64
"""How many lock files a store uses."""

_registry_guard = threading.Lock()
_thread_locks: dict[Path, threading.RLock] = {}
_held = threading.local()


def _thread_lock(path: Path) -> threading.RLock:
    # One RLock per lock file for the whole process, shared by every store object
    # that points at the same folder.
    with _registry_guard:
        lock = _thread_locks.get(path)
        if lock is None:
            lock = _thread_locks[path] = threading.RLock()
        return lock


class StripedLocks:
    """The lock files of one store folder."""

    def __init__(self, directory: Path, *, timeout: float, durable: bool = True) -> None:
        self.folder = Path(os.path.abspath(directory / LOCK_DIR_NAME))
        self.timeout = timeout
        self.durable = durable
        # Each stripe's lock file and thread lock, looked up once (a save takes a lock).
        self._stripes: list[tuple[Path, threading.RLock] | None] = [None] * STRIPES

    def path_for(self, key: str) -> Path:
        """The lock file that guards ``key``."""
        return self._stripe(key)[0]

    def _stripe(self, key: str) -> tuple[Path, threading.RLock]:
        index = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=2).digest(), "big")
        index %= STRIPES
        stripe = self._stripes[index]
        if stripe is None:
            path = self.folder / f"stripe-{index:02d}.lock"
            stripe = self._stripes[index] = (path, _thread_lock(path))
        return stripe

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock of ``key`` for the ``with`` block.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``OSError`` when the
        lock file cannot be opened.
        """
        path, thread_lock = self._stripe(key)
        deadline = time.monotonic() + self.timeout
        if not thread_lock.acquire(timeout=max(self.timeout, 0.0)):
            msg = f"lock {path} not acquired within {self.timeout} s"
            raise TimeoutError(errno.ETIMEDOUT, msg)
        try:
            depth: dict[Path, int] = getattr(_held, "depth", None) or {}
            _held.depth = depth
            if depth.get(path, 0):
                # This thread already holds the flock of this stripe.
                depth[path] += 1
                try:
                    yield
                finally:
                    depth[path] -= 1
                return
            fd = self._open(path)
            try:
                _flock_until(fd, path, deadline, self.timeout)
                depth[path] = 1
                try:
                    yield
                finally:
                    depth[path] = 0
            finally:
                # Closing the descriptor releases the flock. The descriptor is
                # freed even when close() reports an error, and nothing was
                # written through it: such an error must not mask the result.
                with contextlib.suppress(OSError):
                    os.close(fd)
        finally:
            thread_lock.release()

    def _open(self, path: Path) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            make_directory(self.folder, durable=self.durable)
            return os.open(path, flags, 0o600)


def _flock_until(fd: int, path: Path, deadline: float, timeout: float) -> None:
    # flock has no timeout of its own: poll with a short, growing back-off.
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"lock {path} not acquired within {timeout} s"
                raise TimeoutError(errno.ETIMEDOUT, msg) from None
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)
