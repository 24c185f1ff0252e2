"""2. Fault injection, SQLite style: every I/O call of a save fails in turn.

A save is recorded once to learn its sequence of ``os`` calls; then, for each
call in that sequence, each errno and each mode (the call fails once, or it and
every later call of the same function fail), the save runs again with that fault.

- Before the rename: ``SessionWriteError`` with the errno kept, the old file
  byte-identical, no temp file left, no file descriptor leaked.
- A failed fsync is never retried: the save raises, the temp file is gone.
- At or after the rename (the folder fsync): reported as ``SessionWriteError``
  saying the new version may not survive a crash, never hidden.
- After any fault the store still works: the next save and load succeed.
"""

from __future__ import annotations

import errno
import gc
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from sessionstore import SessionStore, SessionWriteError
from tests.reliability.checks import CRASH_ID, recording, temp_files, version_session
from tests.reliability.figures import record

# Every os function a save may call; ``unlink`` only runs to clean up after a
# failure, so it is never a fault target (a cleanup that cannot run is a
# different experiment: the temp file would be left for ``doctor``).
SAVE_CALLS = (
    "open",
    "write",
    "fsync",
    "close",
    "replace",
    "rename",
    "fstat",
    "stat",
    "lstat",
    "mkdir",
    "lseek",
)
ERRNOS = (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EACCES, errno.EMFILE)


def _open_fds() -> set[str]:
    # Collect first: a descriptor an earlier test dropped (a process sentinel, a
    # pipe) must not close during this one and look like a change.
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


@dataclass
class Fault:
    """Make the ``index``-th call of the save fail with ``code`` (and, when
    ``persistent``, every later call of the same function)."""

    index: int
    name: str
    code: int
    persistent: bool


@contextmanager
def injected(
    fault: Fault, names: tuple[str, ...] = SAVE_CALLS
) -> Iterator[list[tuple[str, tuple[Any, ...], bool]]]:
    """Patch the os functions ``names``; yield the log of (name, args, failed)."""
    log: list[tuple[str, tuple[Any, ...], bool]] = []
    patches = []
    for name in names:
        original = getattr(os, name)

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            position = len(log)
            fail = position == fault.index or (
                fault.persistent and _name == fault.name and position > fault.index
            )
            log.append((_name, args, fail))
            if not fail:
                return _original(*args, **kw)
            if _name == "close":
                # Linux frees the descriptor even when close() reports an error.
                _original(*args, **kw)
            raise OSError(fault.code, f"injected {errno.errorcode[fault.code]}")

        patches.append(mock.patch.object(os, name, wrapper))
    with ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield log


def _save_sequence(folder: Path) -> list[str]:
    store = SessionStore(folder)
    store.save(version_session(1))
    with recording(*SAVE_CALLS) as calls:
        store.save(version_session(2))
    return [call.name for call in calls]


def _fault_cases() -> Iterator[tuple[int, str]]:
    import tempfile  # noqa: PLC0415  # only to learn the sequence at collection time

    with tempfile.TemporaryDirectory() as tmp:
        yield from enumerate(_save_sequence(Path(tmp)))


CASES = list(_fault_cases())


def test_the_recorded_save_has_the_calls_we_inject_into() -> None:
    names = [name for _, name in CASES]
    for needed in ("open", "write", "fsync", "close", "replace"):
        assert needed in names
    assert names.count("fsync") >= 2, "file fsync and folder fsync"


@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
@pytest.mark.parametrize("code", ERRNOS, ids=[errno.errorcode[c] for c in ERRNOS])
@pytest.mark.parametrize(("index", "name"), CASES, ids=[f"{i}-{n}" for i, n in CASES])
def test_a_failing_call_never_loses_or_hides_anything(
    tmp_path: Path, index: int, name: str, code: int, persistent: bool
) -> None:
    store = SessionStore(tmp_path)
    old, new = version_session(1), version_session(2)
    store.save(old)
    target = tmp_path / f"{CRASH_ID}.json"
    old_bytes = target.read_bytes()
    fds = _open_fds()

    fault = Fault(index, name, code, persistent)
    caught = None
    with injected(fault) as log:
        try:
            store.save(new)
        except SessionWriteError as exc:
            caught = exc
    record("fault injections", 1)
    assert [n for n, _, failed in log if failed], "the fault was never hit"

    first_open = next((args for n, args, _ in log if n == "open"), None)
    assert first_open is None or ".locks" in str(first_open[0]), "the lock comes first"
    if caught is None:
        # Only a call after the folder fsync (the save is durable by then) may fail
        # without failing the save: releasing the lock (closing its descriptors,
        # nothing written through them, freed anyway; checking whether the lock
        # file may go). The save must have landed all the same.
        last_fsync = max(i for i, (n, _, _) in enumerate(log) if n == "fsync")
        assert index > last_fsync, f"a failing {name} before the save was durable went unseen"
        assert name in ("close", "lstat")
        assert store.load(CRASH_ID) == new
        assert temp_files(tmp_path) == []
        assert not _open_fds() - fds, "a file descriptor leaked"
        record("fault injections while releasing the lock, save durable and reported done", 1)
        return

    assert caught.errno == code
    assert caught.session_id == CRASH_ID
    assert str(target) in str(caught)
    assert temp_files(tmp_path) == []
    assert not _open_fds() - fds, "a file descriptor leaked"
    renamed = any(n in ("replace", "rename") and not failed for n, _, failed in log)
    if renamed:
        # Only the folder fsync (or its open/close) can fail after the rename.
        assert "may not survive a crash" in str(caught)
        assert store.load(CRASH_ID) == new
        record("fault injections after the rename, reported", 1)
    else:
        assert "previous version is intact" in str(caught) or "nothing was changed" in str(caught)
        assert target.read_bytes() == old_bytes
        record("fault injections before the rename, old file intact", 1)
    for position, (n, args, failed) in enumerate(log):
        if n == "fsync" and failed:
            # Until that descriptor is closed, no other fsync of it may follow.
            for later, later_args, _ in log[position + 1 :]:
                if later == "close" and later_args == args:
                    break
                assert (later, later_args) != ("fsync", args), "a failed fsync was retried"

    # The store is not wedged: the next save lands and loads back.
    store.save(new)
    assert store.load(CRASH_ID) == new


def test_fsync_failure_is_reported_even_if_the_write_looked_fine(tmp_path: Path) -> None:
    # The classic fsyncgate bug: fsync fails, the writer retries, the retry
    # "succeeds" on pages the kernel already dropped, and the save reports success.
    store = SessionStore(tmp_path)
    store.save(version_session(1))
    calls = []
    real = os.fsync

    def fsync_fails_first_time(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "injected EIO")
        real(fd)

    with (
        mock.patch.object(os, "fsync", fsync_fails_first_time),
        pytest.raises(SessionWriteError),
    ):
        store.save(version_session(2))
    assert len(calls) == 1, "fsync must not be called again after it failed"
    assert store.load(CRASH_ID) == version_session(1)
