"""Exclusive per-session locks that hold across threads, processes and store objects.

One lock file per session, ``<folder>/.locks/<id>.lock``, locked with a kernel
``flock``, plus one thread-level lock per session for the whole process. Why
these choices:

- ``flock`` dies with its process: a crashed writer never leaves a held lock,
  so there are no "stale lock" heuristics. (A lock *file* may stay behind after
  a crash; it holds no lock, and ``sessionstore doctor --fix`` removes it.)
- not ``lockf``/``fcntl`` record locks: closing *any* descriptor of the file in
  the process would silently release them.
- not the data file itself: ``os.replace`` swaps the inode, so a second locker
  would lock the new file while the first still holds the old one.
- one file per session, not a fixed set of shared stripes: with stripes, two
  threads nesting writes on four unrelated sessions deadlocked whenever their ids
  shared stripes. Two sessions never share a lock here.
- keyed by the folder's identity (``st_dev``, ``st_ino``) and the id, process-wide:
  two store objects on one folder (one reached through a symlink, say) share the
  same thread lock and the same descriptor, so nesting one inside the other is
  re-entrant instead of a self-deadlock on a second ``flock`` descriptor.
- the ``.locks`` folder is opened with ``O_NOFOLLOW | O_DIRECTORY`` and the lock
  file relative to it with ``O_NOFOLLOW``: a link planted at ``.locks`` is refused,
  never followed out of the store.
- a lock file may be removed (when its session is gone) only by the holder of its
  lock; whoever gets a lock checks, after ``flock``, that the name still points at
  the file it locked, and starts again if not. So nobody ever holds a lock on an
  unlinked file.
- fork-safe: a child process starts with no lock state. It closes the lock
  descriptors it inherited (the parent keeps its locks: ``flock`` belongs to the
  open file, which the parent still has) and gets fresh thread locks, so a fork
  while another thread is inside ``update`` no longer wedges that session.

Locks are re-entrant per *owner*, so ``update``'s function may write the same
session (or others) without deadlocking. The owner is the thread
(``threading.get_ident()``), unless ``LOCK_OWNER`` is set in the current context:
then it is that token. The async stores set it in the workers that run one call
chain's work, so a lock taken in one worker on behalf of a call can be re-entered by
another worker running for the same chain, and released by it (see asyncstore). Sync
code never sets it and gets exactly the per-thread behaviour.

A timed wait for another process's ``flock`` polls (``flock`` has no timeout):
with a back-off from 0.1 ms to 2 ms, with jitter, so a waiter tries often enough
to catch the short gaps of a busy holder (a 50 ms cap let a holder that writes in
a loop starve other processes for seconds) while still sleeping between tries. A
wait without bound is a plain blocking ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from sessionstore.atomic import make_directory, open_folder

__all__ = [
    "LOCK_DIR_NAME",
    "LOCK_OWNER",
    "LOCK_SUFFIX",
    "SessionLocks",
    "check_lock_timeout",
    "lock_owner",
]

LOCK_DIR_NAME = ".locks"
"""Subfolder of the store that holds the lock files."""

LOCK_SUFFIX = ".lock"
"""A session's lock file is ``<id>.lock`` in ``LOCK_DIR_NAME``."""

LOCK_OWNER: ContextVar[object | None] = ContextVar("sessionstore_lock_owner", default=None)
"""Who holds the locks taken in this context, when not the thread: a token object
(set by the async stores in the contexts their workers run). Unset: the thread."""


def lock_owner() -> object:
    """The owner of the locks taken now: the context's ``LOCK_OWNER`` token when
    set, else this thread's ident. Re-entrancy and release go by this owner."""
    token = LOCK_OWNER.get()
    return threading.get_ident() if token is None else token


_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def check_lock_timeout(value: object) -> float | None:
    """Return ``value`` as a lock timeout: a finite number of seconds >= 0, or ``None``
    (wait without bound). Raises ``ValueError`` for anything else (bools, NaN,
    infinities, negative numbers, strings)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = (
            f"lock_timeout must be a number of seconds >= 0, or None to wait without "
            f"bound; got {value!r}"
        )
        raise ValueError(msg)  # noqa: TRY004  # one error type for every bad lock_timeout
    if not math.isfinite(value) or value < 0 or value > threading.TIMEOUT_MAX:
        msg = (
            f"lock_timeout must be a finite number of seconds from 0 to "
            f"{threading.TIMEOUT_MAX:.0f}, or None to wait without bound; got {value!r}"
        )
        raise ValueError(msg)
    return float(value)


class _Entry:
    """The lock state of one (folder, id) in this process."""

    __slots__ = ("depth", "dir_fd", "fd", "mutex", "owner", "users")

    def __init__(self) -> None:
        # Held by the owner while it holds the flock. A plain Lock, not an RLock: a
        # token owner may release it from another thread than the one that took it.
        self.mutex = threading.Lock()
        self.owner: object = None  # lock_owner() of the holder
        self.depth = 0  # re-entrant holds of the owner
        self.fd = -1  # the flock'd lock file, while held
        self.dir_fd = -1  # the .locks folder it lives in, while held
        self.users = 0  # holders and waiters; the entry is dropped at 0


# Process-wide state. ``_guard`` protects the registry and every change of an
# entry's descriptors, so a fork never happens between opening a lock file and
# recording it (the child could not close what it does not know of).
_guard = threading.Lock()
_entries: dict[tuple[int, int, str], _Entry] = {}


def _before_fork() -> None:
    _guard.acquire()


def _after_fork_in_parent() -> None:
    _guard.release()


def _after_fork_in_child() -> None:
    global _guard, _entries  # noqa: PLW0603  # the child gets fresh state, by design
    for entry in _entries.values():
        # Close, never unlock: LOCK_UN would release the parent's lock too (the
        # descriptor shares the parent's open file); closing our copy does not.
        for fd in (entry.fd, entry.dir_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        entry.fd = entry.dir_fd = -1
    _entries = {}
    _guard = threading.Lock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class SessionLocks:
    """The lock files of one store folder (``directory`` must be absolute)."""

    def __init__(self, directory: Path, *, timeout: float | None, durable: bool = True) -> None:
        self.directory = directory
        self.folder = directory / LOCK_DIR_NAME
        self.timeout = timeout
        self.durable = durable
        self._identity: tuple[int, int] | None = None
        # Run as root (sudo), lock files take the store folder's owner, so the
        # application's own user can still open them afterwards.
        self._owner: tuple[int, int] | None = None
        self._folder_path = os.fspath(self.folder)  # a str: no pathlib work per lock

    def path_for(self, key: str) -> Path:
        """The lock file that guards ``key``."""
        return self.folder / f"{key}{LOCK_SUFFIX}"

    @contextmanager
    def hold(self, key: str, *, discard_if: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold the exclusive lock of ``key`` for the ``with`` block; re-entrant per owner
        (``lock_owner()``: the thread, or the context's ``LOCK_OWNER`` token).

        Creates the store folder and ``.locks`` when missing. When the outermost
        hold of this thread ends and ``discard_if()`` (of that outermost call) is
        true, the lock file is removed, still under the lock. Raises
        ``TimeoutError`` after ``timeout`` seconds and ``OSError`` when the lock
        file cannot be opened (a link at ``.locks`` is refused this way).
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        device, inode = self._folder_identity()
        slot = (device, inode, key)
        name = f"{key}{LOCK_SUFFIX}"
        me = lock_owner()
        with _guard:
            registry = _entries
            entry = registry.get(slot)
            if entry is None:
                entry = registry[slot] = _Entry()
            entry.users += 1
        try:
            if entry.owner == me:
                entry.depth += 1
                try:
                    yield
                finally:
                    entry.depth -= 1
                return
            if not _acquire(entry.mutex, deadline):
                raise self._timeout(name)
            try:
                self._lock_file(entry, name, deadline)
                entry.owner, entry.depth = me, 1
                try:
                    yield
                finally:
                    entry.owner, entry.depth = None, 0
                    self._release_file(entry, name, discard_if)
            finally:
                entry.mutex.release()
        finally:
            with _guard:
                entry.users -= 1
                if entry.users == 0 and registry.get(slot) is entry:
                    del registry[slot]

    def _folder_identity(self) -> tuple[int, int]:
        # Looked up once per object: the identity only picks the process-wide thread
        # lock (re-entrancy across store objects). Exclusion itself is the flock, so
        # even a folder removed and made again under a live object stays exclusive.
        if self._identity is None:
            try:
                info = os.stat(self.directory)
            except FileNotFoundError:
                make_directory(self.directory, durable=self.durable)
                info = os.stat(self.directory)
            self._identity = (info.st_dev, info.st_ino)
            if os.geteuid() == 0:
                self._owner = (info.st_uid, info.st_gid)
        return self._identity

    def _lock_file(self, entry: _Entry, name: str, deadline: float | None) -> None:
        """Open and flock ``name`` in ``.locks`` until it is the file at that name."""
        while True:
            dir_fd = open_folder(self._folder_path, create=True, durable=self.durable)
            with _guard:
                entry.dir_fd = dir_fd
            try:
                locked = self._open_lock_file(entry, name)
                _flock(entry.fd, deadline, lambda: self._timeout(name))
                try:
                    current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    current = None
                if current is not None and (current.st_dev, current.st_ino) == (
                    locked.st_dev,
                    locked.st_ino,
                ):
                    return
                # The holder before us removed this file (its session was deleted):
                # our lock is on a file nobody else will open. Start again.
            except BaseException:
                self._close(entry)
                raise
            self._close(entry)

    def _open_lock_file(self, entry: _Entry, name: str) -> os.stat_result:
        with _guard:
            entry.fd = os.open(name, _LOCK_FLAGS, 0o600, dir_fd=entry.dir_fd)
        locked = os.fstat(entry.fd)
        if not stat.S_ISREG(locked.st_mode):
            raise OSError(errno.EINVAL, f"{self.folder / name} is not a regular file")
        if self._owner is not None and (locked.st_uid, locked.st_gid) != self._owner:
            os.fchown(entry.fd, *self._owner)
        return locked

    def _release_file(
        self, entry: _Entry, name: str, discard_if: Callable[[], bool] | None
    ) -> None:
        try:
            if entry.fd >= 0 and discard_if is not None and discard_if():
                # Still under the flock: a waiter that opened this file will see, once
                # it gets the lock, that the name is gone, and start again.
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=entry.dir_fd)
        finally:
            self._close(entry)

    @staticmethod
    def _close(entry: _Entry) -> None:
        # Closing the descriptor releases the flock. The descriptor is freed even
        # when close() reports an error, and nothing was written through it: such
        # an error must not mask the result. Under the guard, so a fork never
        # copies a descriptor the child would not know to close.
        with _guard:
            for fd in (entry.fd, entry.dir_fd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            entry.fd = entry.dir_fd = -1

    def _timeout(self, name: str) -> TimeoutError:
        return TimeoutError(
            errno.ETIMEDOUT, f"lock {self.folder / name} not acquired within {self.timeout} s"
        )


def _acquire(mutex: threading.Lock, deadline: float | None) -> bool:
    if deadline is None:
        return mutex.acquire()
    return mutex.acquire(timeout=max(deadline - time.monotonic(), 0.0))


def _flock(fd: int, deadline: float | None, timeout: Callable[[], TimeoutError]) -> None:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits without bound (Ctrl-C still interrupts)
        return
    # flock has no timeout of its own: poll with a short, growing back-off, capped
    # low (a busy holder frees the lock for short gaps only) and jittered (waiters
    # of several processes do not poll in step).
    pause = _FIRST_PAUSE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timeout() from None
            time.sleep(min(pause * random.uniform(0.5, 1.0), remaining))  # noqa: S311
            pause = min(pause * 2, _MAX_PAUSE)


_FIRST_PAUSE = 0.0001
"""First sleep of a timed flock wait, in seconds."""

_MAX_PAUSE = 0.002
"""Longest sleep between two tries of a timed flock wait, in seconds (at most ~1000
tries a second, each one non-blocking flock system call)."""
