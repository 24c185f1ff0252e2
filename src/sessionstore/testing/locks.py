"""The lock rules of the conformance suite, as functions that return violations.

- ``check_fork_while_locked``: a process forks while another of its threads holds
  a session's lock; afterwards the child and the parent both write, and neither hangs.
- ``check_two_stores``: nested writes through a second store object on the same
  storage, inside ``update``'s function, do not deadlock, and each store object
  sees the other's writes.
- ``check_concurrent_nested_writes``: threads that each nest writes to their own
  sessions inside ``update`` do not deadlock one another.

Each returns a list of violations (empty: the rule holds). Threads and processes
meet at events and pipes, never wait on a timer; the only timeouts are hang guards,
reported as violations when they expire.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from sessionstore.errors import LockTimeoutError
from sessionstore.models import StoredSession
from sessionstore.store import BackendSessionStore
from sessionstore.testing.adapt import BlockingOpener, sync_subject
from sessionstore.testing.blocking import BlockingView
from sessionstore.testing.concurrency import error_text, grown, token_session
from sessionstore.testing.subject import StoreUnderTest

__all__ = ["check_concurrent_nested_writes", "check_fork_while_locked", "check_two_stores"]


# -- fork -----------------------------------------------------------------------------

_FORK_HELD = "fork-held"
_FORK_OTHER = "fork-other"


def check_fork_while_locked(subject: StoreUnderTest, timeout: float = 20.0) -> list[str]:
    """Fork while another thread holds a session's lock; then child and parent write.

    A thread of this process runs ``update`` on one session and waits inside its
    function; the process forks. The child appends to that session and to another
    one and loads them back; the parent releases the update, then appends to both.
    Neither may hang (each gets ``timeout`` seconds), and the child's load shows its
    own appends. With ``subject.multiprocess`` the storage is shared, so at the end
    every write, the child's too, is there exactly once. POSIX only.

    An async store's event loop and workers are threads of the parent, which a
    forked child does not have: the child writes through a store of its own,
    ``subject.opener()``, with a loop of its own (as an asyncio program that forks
    must); raises ``ValueError`` when an async subject has no opener. The update
    that holds the lock at the fork is the parent's async store's.
    """
    with sync_subject(subject) as adapted:
        return _check_fork_while_locked(adapted, timeout)


def _check_fork_while_locked(subject: StoreUnderTest, timeout: float) -> list[str]:
    store = subject.store
    child_store: Callable[[], BackendSessionStore] = lambda: store  # noqa: E731
    if isinstance(store, BlockingView):
        if subject.opener is None:
            msg = (
                "check_fork_while_locked needs StoreUnderTest.opener for an async store: a "
                "forked child cannot run the parent's event loop"
            )
            raise ValueError(msg)
        child_store = subject.opener
    store.save(token_session(_FORK_HELD, ("before",)))
    errors: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def hold(current: StoredSession) -> StoredSession:
        inside.set()
        release.wait(timeout)
        return grown(current, "held")

    holding = _background(
        "the update that held the lock at the fork",
        lambda: store.update(_FORK_HELD, hold),
        errors,
    )
    if not inside.wait(timeout):
        release.set()
        return [f"update({_FORK_HELD!r}) never called its function within {timeout} s"]
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking with threads: that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read_end)
        _fork_child(child_store, write_end)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    release.set()
    holding.join(timeout)
    writer = _background(
        "the parent's appends after the fork",
        lambda: [store.append_messages(sid, ["parent"]) for sid in (_FORK_HELD, _FORK_OTHER)],
        errors,
    )
    report, finished = _read_until(read_end, deadline)
    writer.join(max(0.0, deadline - time.monotonic()))
    violations: list[str] = []
    if holding.is_alive():
        violations.append(f"the update that held the lock did not finish within {timeout} s")
    if finished:
        os.waitpid(pid, 0)
        if report != "ok":
            violations.append(f"the child's writes failed: {report}")
    else:
        violations.append(
            f"the child did not finish its writes within {timeout} s of the fork (killed): it "
            "waits for a lock that another thread of its parent held at the fork"
        )
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if writer.is_alive():
        violations.append(
            f"the parent's writes did not finish within {timeout} s of the fork, while the "
            "child lived: the child kept the lock it inherited"
        )
        writer.join(timeout)
    violations += errors
    if violations or not subject.multiprocess:
        return violations
    return _every_write_once(store)


def _background(name: str, body: Callable[[], object], errors: list[str]) -> threading.Thread:
    """Start ``body`` in a daemon thread; an exception it raises goes to ``errors``."""

    def run() -> None:
        try:
            body()
        except Exception as exc:  # reported by the caller
            errors.append(f"{name} raised {error_text(exc)}")

    thread = threading.Thread(target=run, name=f"conformance: {name}", daemon=True)
    thread.start()
    return thread


def _every_write_once(store: BackendSessionStore) -> list[str]:
    expected = {_FORK_HELD: ["before", "held", "child", "parent"], _FORK_OTHER: ["child", "parent"]}
    violations = []
    for session_id, tokens in expected.items():
        messages = list(store.load(session_id).messages)
        first = tokens[:-2]
        if sorted(messages) != sorted(tokens) or messages[: len(first)] != first:
            violations.append(
                f"after the fork, session {session_id!r} holds {messages}; expected each of "
                f"{tokens} exactly once, {first} first"
            )
    return violations


def _fork_child(
    open_store: Callable[[], BackendSessionStore], write_end: int
) -> None:  # pragma: no cover
    """In the child: append to both sessions, load them back, report, exit at once."""
    report = "ok"
    try:
        store = open_store()
        for session_id in (_FORK_HELD, _FORK_OTHER):
            store.append_messages(session_id, ["child"])
            if "child" not in store.load(session_id).messages:
                report = f"the child's own load of {session_id!r} does not show its append"
    except BaseException as exc:  # sent to the parent
        report = error_text(exc)
    finally:
        os.write(write_end, report.encode("utf-8", "replace")[:4000])
        # No cleanup: the parent's handles, threads and test framework are not ours.
        os._exit(0 if report == "ok" else 1)


def _read_until(fd: int, deadline: float) -> tuple[str, bool]:
    """What the child wrote, and whether it closed the pipe (exited) by ``deadline``."""
    chunks = []
    closed = False
    try:
        while not closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            chunk = os.read(fd, 4096)
            chunks.append(chunk)
            closed = not chunk
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace"), closed


# -- nested writes ----------------------------------------------------------------------

_NESTED = 256
"""Nested writes per update: enough ids that, whatever hash picks a lock stripe, some
very likely share one with the outer session (with 64 stripes, all but 2%)."""


def _within(name: str, timeout: float, body: Callable[[], None], violations: list[str]) -> None:
    """Run ``body`` in a thread; record its exception, or a hang after ``timeout`` s."""
    errors: list[str] = []

    def run() -> None:
        try:
            body()
        except AssertionError as exc:
            errors.append(f"{name}: {exc}")
        except Exception as exc:  # reported as a violation
            errors.append(f"{name}: raised {error_text(exc)}")

    thread = threading.Thread(target=run, name=f"conformance {name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        violations.append(
            f"{name}: did not finish within {timeout} s (a self-deadlock: the nested write "
            "waits for a lock its own thread holds through the other store object)"
        )
    violations += errors


def _nested_writes(
    outer: BackendSessionStore,
    inner: BackendSessionStore,
    outer_id: str,
    prefix: str,
    count: int,
) -> None:
    """``outer.update(outer_id)`` whose function writes ``count`` sessions through
    ``inner`` (save, append, update, create after delete) and checks both stores see
    them; afterwards ``inner`` must see the update."""
    outer.save(token_session(outer_id, ("start",)))
    before = inner.load(outer_id)

    def fn(current: StoredSession) -> StoredSession:
        for number in range(count):
            session_id = f"{prefix}-{number}"
            inner.save(token_session(session_id, ("saved",)))
            step = number % 3
            if step == 0:
                inner.append_messages(session_id, ["appended"], input_tokens=1)
            elif step == 1:
                inner.update(session_id, lambda s: grown(s, "updated"))
            else:
                inner.delete(session_id)
                inner.create(token_session(session_id, ("saved", "created")))
            wanted = ("saved", ("appended", "updated", "created")[step])
            for reader in (outer, inner):
                seen = reader.load(session_id).messages
                assert seen == wanted, f"{session_id!r} reads {seen}, wanted {wanted}"
        seen_outer = inner.load(outer_id)
        assert seen_outer == before, (
            f"the other store reads {outer_id!r} as {seen_outer.messages} while the update "
            f"runs; it must still be {before.messages}"
        )
        return grown(current, "outer")

    result = outer.update(outer_id, fn)
    after = inner.load(outer_id)
    assert after == result, (
        f"after the update, the other store reads {outer_id!r} as {after.messages}, "
        f"not {result.messages}"
    )


def _same_session_nested(
    outer: BackendSessionStore, inner: BackendSessionStore, session_id: str
) -> None:
    """``inner.append_messages(session_id)`` inside ``outer.update(session_id)``.

    It may land (and the update then replaces it, as with one store object) or be
    refused at once with an error; it may not wait for the lock its own thread holds.
    """
    outer.save(token_session(session_id, ("start",)))

    def fn(current: StoredSession) -> StoredSession:
        try:
            inner.append_messages(session_id, ["nested"], input_tokens=1)
        except LockTimeoutError as exc:
            msg = f"the nested append waited for the lock its own thread holds: {exc}"
            raise AssertionError(msg) from exc
        except Exception:  # noqa: S110  # a prompt refusal is allowed
            pass
        return grown(current, "outer")

    result = outer.update(session_id, fn)
    after = inner.load(session_id)
    assert after == result, f"{session_id!r} reads {after.messages}, not {result.messages}"


def check_two_stores(
    subject: StoreUnderTest, timeout: float = 20.0, *, same_session: bool = True
) -> list[str]:
    """Nested writes through a second store object inside ``update``: no deadlock,
    and each store object sees the other's writes. Needs ``subject.opener``.

    Three parts, each with ``timeout`` seconds: writes to 256 other sessions through
    the second store inside the first store's ``update`` (they must be visible to both
    at once, and the update to both afterwards), the same the other way round, and an
    append to the session being updated, through the second store (it may land or be
    refused, but must not wait for the lock its own thread holds). ``same_session``
    false leaves the third part out.

    An async store runs the first two parts through a ``BlockingView`` (plain
    ``update`` functions, which run in the store's workers). In the third, the
    update's function is async and awaits the second store (opened on the same event
    loop), as an asyncio application would; the nested append must not wait for the
    update its own call chain runs (it gets ``timeout / 2`` seconds).
    """
    with sync_subject(subject) as adapted:
        return _check_two_stores(adapted, timeout, same_session)


def _check_two_stores(subject: StoreUnderTest, timeout: float, same_session: bool) -> list[str]:
    if subject.opener is None:
        msg = "check_two_stores needs StoreUnderTest.opener"
        raise ValueError(msg)
    first, second = subject.store, subject.opener()
    violations: list[str] = []
    _within(
        "writes through the second store inside the first store's update",
        timeout,
        lambda: _nested_writes(first, second, "two-outer-1", "two-a", _NESTED),
        violations,
    )
    _within(
        "writes through the first store inside the second store's update",
        timeout,
        lambda: _nested_writes(second, first, "two-outer-2", "two-b", _NESTED),
        violations,
    )
    if not same_session:
        return violations
    name = "a write to the updated session through the second store inside the update"
    if isinstance(first, BlockingView) and isinstance(subject.opener, BlockingOpener):
        raw_opener = subject.opener.opener
        view = first
        _within(
            name,
            timeout,
            lambda: view.run(_same_session_nested_async(view, raw_opener, "two-same", timeout)),
            violations,
        )
    else:
        _within(name, timeout, lambda: _same_session_nested(first, second, "two-same"), violations)
    return violations


async def _same_session_nested_async(
    view: BlockingView, opener: Callable[[], Any], session_id: str, timeout: float
) -> None:
    """``_same_session_nested`` for an async store: ``await inner.append_messages``
    inside an async function given to ``outer.update``; ``inner`` is a second store
    object from ``opener``, entered on the loop of ``view`` (whose store is ``outer``)."""
    outer = view.async_store
    inner = opener()
    inner = await inner.__aenter__() or inner
    try:
        await outer.save(token_session(session_id, ("start",)))

        async def fn(current: StoredSession) -> StoredSession:
            try:
                await asyncio.wait_for(
                    inner.append_messages(session_id, ["nested"], input_tokens=1), timeout / 2
                )
            # asyncio.TimeoutError is not the builtin TimeoutError before Python 3.11.
            except (LockTimeoutError, TimeoutError, asyncio.TimeoutError) as exc:
                msg = (
                    "the nested append waited for the update its own call chain runs: "
                    f"{error_text(exc) if str(exc) else f'not done within {timeout / 2} s'}"
                )
                raise AssertionError(msg) from exc
            except Exception:  # noqa: S110  # a prompt refusal is allowed
                pass
            return grown(current, "outer")

        result = await outer.update(session_id, fn)
        after = await inner.load(session_id)
        assert after == result, f"{session_id!r} reads {after.messages}, not {result.messages}"
    finally:
        await inner.__aexit__(None, None, None)


def check_concurrent_nested_writes(
    subject: StoreUnderTest, timeout: float = 20.0, *, threads: int = 4, rounds: int = 3
) -> list[str]:
    """Threads nest writes to their own sessions inside ``update``; none may deadlock.

    Thread ``i`` updates ``nest-i`` and, inside the function, writes ``nest-i-0`` ...
    ``nest-i-31`` (through ``subject.opener()`` for every other one, when there is an
    opener). No two threads share a session, so waiting for each other at all can only
    come from locks shared between sessions; a deadlock shows as a hang or a
    ``LockTimeoutError``. An async store runs through a ``BlockingView``.
    """
    with sync_subject(subject) as adapted:
        return _check_concurrent_nested_writes(adapted, timeout, threads=threads, rounds=rounds)


def _check_concurrent_nested_writes(
    subject: StoreUnderTest, timeout: float, *, threads: int, rounds: int
) -> list[str]:
    second = subject.opener() if subject.opener is not None else subject.store
    stores = (subject.store, second)
    violations: list[str] = []
    barrier = threading.Barrier(threads)

    def body(index: int) -> Callable[[], None]:
        def run() -> None:
            outer_id = f"nest-{index}"
            subject.store.save(token_session(outer_id, ()))
            barrier.wait(timeout)
            for _ in range(rounds):

                def fn(current: StoredSession) -> StoredSession:
                    for number in range(32):
                        session_id = f"{outer_id}-{number}"
                        stores[number % 2].append_messages(session_id, ["x"], input_tokens=1)
                    return grown(current, "outer")

                subject.store.update(outer_id, fn)

        return run

    workers = [
        threading.Thread(target=_within, args=(f"thread {i}", timeout, body(i), violations))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if violations:
        return violations
    for index in range(threads):
        for number in range(32):
            session = subject.store.load(f"nest-{index}-{number}")
            if session.messages != ("x",) * rounds:
                violations.append(
                    f"{session.session_id!r} holds {session.messages}, expected {rounds} x 'x'"
                )
    return violations
