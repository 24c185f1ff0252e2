"""The per-session lock of the folder backend: what issue 9 found, and the lock's own rules.

Locks are one file per session, re-entrant per thread, keyed by the folder's
identity, fork-safe, and bounded by a validated ``lock_timeout`` (or unbounded
with ``None``). Nothing here sleeps to dodge a race: threads meet at barriers
and events, processes at pipes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sessionstore import (
    LockTimeoutError,
    MemorySessionStore,
    SessionStore,
    SessionWriteError,
    StoredSession,
)
from sessionstore.backends.filesystem import FileSystemBackend


def make(session_id: str, *messages: str) -> StoredSession:
    return StoredSession(
        session_id=session_id, messages=messages or ("hello",), input_tokens=0, output_tokens=0
    )


def lock_files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder / ".locks"))


def _old_stripe(session_id: str) -> int:
    """The stripe (of 64) an id had before locks were per session."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=2).digest()
    return int.from_bytes(digest, "big") % 64


def _ids_sharing_old_stripes() -> tuple[str, str, str, str]:
    """Four ids a, b, c, d with stripe(a) == stripe(d) and stripe(b) == stripe(c)."""
    by_stripe: dict[int, list[str]] = {}
    for i in range(2000):
        by_stripe.setdefault(_old_stripe(f"s{i}"), []).append(f"s{i}")
    pairs = [ids[:2] for ids in by_stripe.values() if len(ids) >= 2]
    (a, d), (b, c) = pairs[0], pairs[1]
    return a, b, c, d


# --- issue 9.11: no shared stripes, no self-deadlock ------------------------------


def _nest(outer: Callable[[str, Callable[[StoredSession], StoredSession]], object]) -> Any:
    """Two threads: update(a) then, inside, save(b); and update(c) then save(d). Both
    hold their outer lock before either takes its inner one (a barrier)."""
    a, b, c, d = _ids_sharing_old_stripes()
    both_inside = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def worker(first: str, second: str, save: Callable[[StoredSession], object]) -> None:
        def inside(session: StoredSession) -> StoredSession:
            both_inside.wait()
            save(make(second, "nested"))
            return replace(session, messages=("outer",))

        try:
            outer(first, inside)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    return a, b, c, d, worker, errors


@pytest.mark.parametrize("backend", ["folder", "memory"])
def test_nested_writes_on_four_unrelated_sessions_do_not_deadlock(
    tmp_path: Path, backend: str
) -> None:
    # Issue 9.11: with 64 shared stripes, these four ids (a and d on one stripe,
    # b and c on another) deadlocked until lock_timeout.
    store = SessionStore(tmp_path, lock_timeout=3) if backend == "folder" else MemorySessionStore()
    a, b, c, d, worker, errors = _nest(store.update)
    for session_id in (a, c):
        store.save(make(session_id))
    threads = [
        threading.Thread(target=worker, args=(a, b, store.save)),
        threading.Thread(target=worker, args=(c, d, store.save)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [store.load(i).messages for i in (a, b, c, d)] == [
        ("outer",),
        ("nested",),
        ("outer",),
        ("nested",),
    ]


def test_a_second_store_object_through_a_symlink_does_not_self_deadlock(tmp_path: Path) -> None:
    # Issue 9.11: the same folder spelled two ways had two thread locks and two
    # flock descriptors; the nested write waited for the outer one until timeout.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    first = SessionStore(real, lock_timeout=3)
    second = SessionStore(tmp_path / "link", lock_timeout=3)
    first.save(make("s"))

    def inside(session: StoredSession) -> StoredSession:
        second.save(make("s", "through the link"))
        second.append_messages("s", ["appended"])
        return second.load("s")

    assert first.update("s", inside).messages == ("through the link", "appended")
    assert lock_files(real) == ["s.lock"]


def test_each_session_has_its_own_lock_file(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    for session_id in ("a", "b", "stripe-01"):
        store.save(make(session_id))
    assert lock_files(tmp_path) == ["a.lock", "b.lock", "stripe-01.lock"]
    assert stat_mode(tmp_path / ".locks" / "a.lock") == 0o600


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_lock_files_go_with_their_sessions(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(make("kept"))
    store.save(make("gone"))
    assert store.delete("gone")
    with pytest.raises(KeyError):
        store.update("never-was", lambda s: s)
    assert lock_files(tmp_path) == ["kept.lock"]


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, lock_timeout=0)
    store.save(make("s"))
    held = threading.Event()
    release = threading.Event()
    outcome: list[object] = []

    def holder() -> None:
        def inside(session: StoredSession) -> StoredSession:
            store.save(make("s", "nested"))  # the same thread again: re-entrant
            held.set()
            release.wait()
            return store.load("s")

        outcome.append(store.update("s", inside))

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    try:
        with pytest.raises(LockTimeoutError, match="'s'"):
            store.save(make("s", "other thread"))
        store.save(make("t", "another session never waits"))
    finally:
        release.set()
        thread.join()
    assert store.load("s").messages == ("nested",)


# --- lock files removed under the lock: a waiter never keeps a removed file -------


def test_a_waiter_never_holds_a_lock_on_a_removed_lock_file(tmp_path: Path) -> None:
    """A process blocked in flock on ``s.lock`` while the holder deletes ``s`` (which
    removes ``s.lock``) locks the file at the name afterwards, not the removed one: a
    third locker must then be excluded."""
    store = SessionStore(tmp_path, lock_timeout=0)
    store.save(make("s"))
    waiting_r, waiting_w = os.pipe()
    locked_r, locked_w = os.pipe()
    done_r, done_w = os.pipe()
    with store.backend.lock("s"):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                for fd in (waiting_r, locked_r, done_w):
                    os.close(fd)
                real_flock = fcntl.flock

                def announce(fd: int, operation: int) -> None:
                    os.write(waiting_w, b"w")  # about to wait on the file it opened
                    real_flock(fd, operation)

                fcntl.flock = announce  # type: ignore[assignment]
                child = SessionStore(tmp_path, lock_timeout=None)
                with child.backend.lock("s"):
                    fcntl.flock = real_flock
                    os.write(locked_w, b"l")
                    os.read(done_r, 1)
                code = 0
            finally:
                os._exit(code)
        for fd in (waiting_w, locked_w, done_r):
            os.close(fd)  # so a dead child reads as EOF here, not as a hang
        assert os.read(waiting_r, 1) == b"w"
        assert store.delete("s")  # removes s.lock on release, still under the lock
    try:
        assert os.read(locked_r, 1) == b"l"
        # The child holds the lock of "s" now: it must hold the file at the name.
        with pytest.raises(LockTimeoutError):
            store.save(make("s", "must wait"))
    finally:
        with contextlib.suppress(BrokenPipeError):
            os.write(done_w, b"d")
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for fd in (waiting_r, locked_r, done_w):
        os.close(fd)


# --- issue 9.9: fork while a thread holds a lock ----------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
@pytest.mark.parametrize("kind", ["folder", "memory"])
def test_fork_while_another_thread_is_inside_update(tmp_path: Path, kind: str) -> None:
    """The child drops the lock state it inherited; the parent keeps its lock.

    Before: the child kept the flock'd descriptor and the held thread lock, so every
    write of that session (the parent's too) timed out while the child lived.
    """
    store: Any = SessionStore(tmp_path, lock_timeout=5) if kind == "folder" else None
    store = store or MemorySessionStore()
    store.save(make("s"))
    inside = threading.Event()
    leave = threading.Event()

    def slow(session: StoredSession) -> StoredSession:
        inside.set()
        leave.wait()
        return replace(session, messages=(*session.messages, "thread"))

    thread = threading.Thread(target=store.update, args=("s", slow))
    thread.start()
    inside.wait()
    go_r, go_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(go_w)
            os.close(result_r)
            os.read(go_r, 1)
            # The child's own writes work once the parent's thread let go. (In this
            # thread: a new thread of the child may reuse the dead thread's ident.)
            signal.alarm(20)  # a guard: the old hang kills the child, the parent sees EOF
            store.append_messages("s", ["child"])
            signal.alarm(0)
            code = 0 if "child" in store.load("s").messages else 2
        finally:
            os.write(result_w, bytes([code]))
            os._exit(code)
    os.close(go_r)
    os.close(result_w)  # a dead child reads as EOF, not as a hang
    try:
        leave.set()
        thread.join()
        # The child is alive, and must not hold the lock the thread just released.
        store.append_messages("s", ["parent"])
    finally:
        with contextlib.suppress(BrokenPipeError):
            os.write(go_w, b"g")
        child_result = os.read(result_r, 1)
        os.waitpid(pid, 0)
        os.close(go_w)
        os.close(result_r)
    assert child_result == b"\x00"
    # A folder is shared with the child; a memory store is copied into it.
    shared = ("child",) if kind == "folder" else ()
    assert store.load("s").messages == ("hello", "thread", "parent", *shared)


# --- issue 9.19: lock_timeout validated; None waits without bound -------------------


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, -1, -0.5, True, False, "1", [1], 10**30]
)
def test_lock_timeout_is_validated_when_the_store_is_built(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        SessionStore(tmp_path, lock_timeout=bad)  # type: ignore[arg-type]
    assert not tmp_path.joinpath(".locks").exists()


@pytest.mark.parametrize("good", [0, 0.0, 2, 2.5, None])
def test_lock_timeout_accepts_finite_seconds_and_none(tmp_path: Path, good: float | None) -> None:
    store = SessionStore(tmp_path, lock_timeout=good)
    store.save(make("s"))
    assert store.append_messages("s", ["m"]).messages == ("hello", "m")
    assert store.backend.lock_timeout == good  # type: ignore[attr-defined]


def test_lock_timeout_none_waits_until_the_holder_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``None`` a writer blocks in flock (no deadline) and proceeds when the
    holder, another process, releases the lock."""
    store = SessionStore(tmp_path, lock_timeout=None)
    store.save(make("s"))
    held_r, held_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds the lock until told
        code = 1
        try:
            os.close(held_r)
            os.close(release_w)
            with SessionStore(tmp_path).backend.lock("s"):
                os.write(held_w, b"h")
                os.read(release_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(held_w)
    os.close(release_r)  # a dead child reads as EOF here, not as a hang
    assert os.read(held_r, 1) == b"h"
    real_flock = fcntl.flock
    blocking_calls: list[int] = []

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX:  # the unbounded wait, not a poll
            blocking_calls.append(fd)
            os.write(release_w, b"r")  # the writer is waiting now: let the holder go
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    try:
        store.append_messages("s", ["after the wait"])
    finally:
        with contextlib.suppress(BrokenPipeError):  # the child may be gone already
            os.write(release_w, b"r")
        os.waitpid(pid, 0)
    assert len(blocking_calls) == 1
    assert store.load("s").messages == ("hello", "after the wait")
    os.close(held_r)
    os.close(release_w)


def test_lock_timeout_zero_fails_at_once_when_held(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, lock_timeout=0)
    store.save(make("s"))
    with store.backend.lock("s"):
        result: list[BaseException] = []
        thread = threading.Thread(target=lambda: _capture(result, store.save, make("s", "x")))
        thread.start()
        thread.join()
    assert isinstance(result[0], LockTimeoutError)
    assert str(tmp_path / ".locks" / "s.lock") in str(result[0].path)
    assert "'s'" in str(result[0])


def _capture(into: list[BaseException], fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except BaseException as exc:  # handed to the test
        into.append(exc)


# --- issue 9.7: the folder is made absolute once -----------------------------------


def test_a_relative_folder_survives_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 9.7: data paths followed the new cwd, lock paths did not; appends were lost.
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    store = SessionStore("rel")
    store.save(make("s"))
    monkeypatch.chdir(tmp_path / "second")
    store.append_messages("s", ["after chdir"])
    assert SessionStore(tmp_path / "first" / "rel").load("s").messages == ("hello", "after chdir")
    assert not (tmp_path / "second" / "rel").exists()
    assert store.backend.location("s") == tmp_path / "first" / "rel" / "s.json"


# --- issue 9.3: a link at .locks is refused, never followed -------------------------


@pytest.mark.parametrize("target_kind", ["folder", "file"])
def test_a_link_or_file_at_locks_is_refused_by_every_write(
    tmp_path: Path, target_kind: str
) -> None:
    store_dir = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    store = SessionStore(store_dir)
    store.save(make("s"))
    os.rename(store_dir / ".locks", tmp_path / "old-locks")
    if target_kind == "folder":
        (store_dir / ".locks").symlink_to(outside)
    else:
        (store_dir / ".locks").write_text("not a folder")
    writes: list[Callable[[], object]] = [
        lambda: store.save(make("s", "new")),
        lambda: store.create(make("t")),
        lambda: store.append_messages("s", ["x"]),
        lambda: store.update("s", lambda s: s),
    ]
    for write in writes:
        with pytest.raises(SessionWriteError, match=r"\.locks is (a symbolic link|not a folder)"):
            write()
    with pytest.raises(OSError, match=r"\.locks"):
        store.delete("s")
    assert list(outside.iterdir()) == []
    assert store.load("s") == make("s")


# --- the lock is a regular file in a real folder -------------------------------------


def test_a_link_at_a_lock_file_is_refused(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(make("s"))
    os.unlink(tmp_path / ".locks" / "s.lock")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".locks" / "s.lock").symlink_to(victim)
    with pytest.raises(SessionWriteError, match=r"s\.lock") as info:
        store.save(make("s", "x"))
    assert info.value.errno == errno.ELOOP
    assert victim.read_text() == "keep"


def test_backend_lock_is_shared_by_every_backend_object_on_the_folder(tmp_path: Path) -> None:
    first = FileSystemBackend(tmp_path, lock_timeout=0)
    second = FileSystemBackend(tmp_path / "." / "sub" / "..", lock_timeout=0)
    (tmp_path / "sub").mkdir()
    with first.lock("x"), second.lock("x"):  # one thread: re-entrant across objects
        pass
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with first.lock("x"):
            entered.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait()
    try:
        with pytest.raises(LockTimeoutError), second.lock("x"):
            pass
    finally:
        release.set()
        thread.join()


@pytest.fixture
def _no_leaks() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.usefixtures("_no_leaks")
def test_locks_leak_no_descriptor(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    for i in range(20):
        store.append_messages(f"s{i % 3}", ["m"])
        store.update(f"s{i % 3}", lambda s: s)
    store.delete("s0")
