"""The concurrency rules of the conformance suite, as functions that return violations.

- ``check_concurrent_history``: threads (and, when the storage allows, processes)
  mix ``update``, plain ``save``, conditional ``save`` (``load_with_etag`` then
  ``save(if_match=)``), ``create``, ``delete``, ``append_messages`` and ``load`` on
  a few shared ids; the recorded history must be linearizable
  (``sessionstore.testing.linearizable``).
- ``check_fork_while_locked``: a process forks while another of its threads holds
  a session's lock; afterwards the child and the parent both write, and neither hangs.
- ``check_two_stores``: nested writes through a second store object on the same
  storage, inside ``update``'s function, do not deadlock, and each store object
  sees the other's writes.
- ``check_concurrent_nested_writes``: threads that each nest writes to their own
  sessions inside ``update`` do not deadlock one another.

Each returns a list of violations (empty: the rule holds). None of them waits on a
timer to order events: threads and processes meet at barriers, events and pipes;
the only timeouts are hang guards, reported as violations when they expire.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import pickle
import random
import select
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

from sessionstore.errors import ConflictError, LockTimeoutError, SessionNotFoundError
from sessionstore.models import StoredSession
from sessionstore.store import BackendSessionStore
from sessionstore.testing.linearizable import FINAL, Op, check_history
from sessionstore.testing.subject import StoreUnderTest

__all__ = [
    "SHARED_IDS",
    "Sizes",
    "check_concurrent_history",
    "check_concurrent_nested_writes",
    "check_fork_while_locked",
    "check_two_stores",
    "record_history",
]

SHARED_IDS = ("shared-1", "shared-2", "shared-3")
"""The sessions every worker of the history rule writes to."""

_WEIGHTS = {
    "load": 10,
    "save": 10,
    "create": 8,
    "cas": 20,
    "update": 20,
    "append": 22,
    "delete": 10,
}


def _knob(name: str, default: float, kind: type[float] | type[int], minimum: float) -> Any:
    """The environment variable ``name`` as a ``kind`` of at least ``minimum``, or
    ``default`` when unset. Raises ``ValueError`` naming the variable."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        what = "an integer" if kind is int else "a number"
        msg = f"{name} must be {what} of at least {minimum}, not {value!r}"
        raise ValueError(msg)
    return number


@dataclass(frozen=True)
class Sizes:
    """How much concurrency the rules use, and how long before a wait counts as a hang.

    ``from_environment`` reads the knobs ``SESSIONSTORE_CONFORMANCE_OPS`` (calls per
    worker, default 100), ``SESSIONSTORE_CONFORMANCE_TIMEOUT`` (seconds, default 20)
    and ``SESSIONSTORE_CONFORMANCE_SEED`` (default: a new random seed each run; a
    failure report names the seed it used).
    """

    threads: int = 3
    """Worker threads in the test's own process (one uses a second store object)."""
    processes: int = 2
    """Worker processes, when the storage can be reached from another process."""
    threads_per_process: int = 2
    ops: int = 100
    """Calls per worker."""
    timeout: float = 20.0
    """A rule that has not finished after this many seconds (per 100 calls) has hung."""
    seed: int = 0

    @classmethod
    def from_environment(cls) -> Sizes:
        """The default sizes, changed by the ``SESSIONSTORE_CONFORMANCE_*`` knobs."""
        # Not cryptography: a reproducible workload, a new one each run by default.
        seed = random.randrange(2**32)  # noqa: S311
        return cls(
            ops=_knob("SESSIONSTORE_CONFORMANCE_OPS", cls.ops, int, 1),
            timeout=_knob("SESSIONSTORE_CONFORMANCE_TIMEOUT", cls.timeout, float, 0.1),
            seed=_knob("SESSIONSTORE_CONFORMANCE_SEED", seed, int, 0),
        )


# -- sessions made of tokens ------------------------------------------------------------


def _session(session_id: str, messages: tuple[str, ...]) -> StoredSession:
    return StoredSession(
        session_id=session_id,
        messages=messages,
        input_tokens=len(messages),
        output_tokens=0,
    )


def _grown(session: StoredSession, token: str) -> StoredSession:
    return replace(
        session,
        messages=(*session.messages, token),
        input_tokens=session.input_tokens + 1,
    )


# -- the history rule -----------------------------------------------------------------


@dataclass
class _Worker:
    """One sequential client: draws calls at random and records each one."""

    store: BackendSessionStore
    name: str
    session_ids: Sequence[str]
    ops: int
    seed: int
    history: list[Op] = field(default_factory=list)
    pending: Op | None = None

    def run(self) -> None:
        rng = random.Random(f"{self.seed}/{self.name}")  # noqa: S311  # a reproducible workload
        kinds = list(_WEIGHTS)
        weights = list(_WEIGHTS.values())
        for number in range(self.ops):
            session_id = rng.choice(self.session_ids)
            kind = rng.choices(kinds, weights)[0]
            self._one(session_id, kind, f"{self.name}.{number}")

    def _one(self, session_id: str, kind: str, token: str) -> None:
        store = self.store
        if kind == "load":
            self._call(session_id, "load", None, None, lambda: store.load(session_id))
        elif kind == "save":
            self._call(
                session_id, "save", token, None, lambda: store.save(_session(session_id, (token,)))
            )
        elif kind == "create":
            self._call(
                session_id,
                "create",
                token,
                None,
                lambda: store.create(_session(session_id, (token,))),
            )
        elif kind == "update":
            self._call(
                session_id,
                "update",
                token,
                None,
                lambda: store.update(session_id, lambda current: _think(_grown(current, token))),
            )
        elif kind == "append":
            self._call(
                session_id,
                "append",
                token,
                None,
                lambda: store.append_messages(session_id, [token], input_tokens=1),
            )
        elif kind == "delete":
            self._call(session_id, "delete", None, None, lambda: store.delete(session_id))
        else:
            self._cas(session_id, token)

    def _cas(self, session_id: str, token: str) -> None:
        read: list[tuple[StoredSession, str]] = []

        def load() -> StoredSession:
            read.append(store.load_with_etag(session_id))
            return read[0][0]

        store = self.store
        self._call(session_id, "load", None, None, load)
        if not read:
            return
        current, etag = read[0]
        _think(None)
        self._call(
            session_id,
            "cas",
            token,
            current.messages,
            lambda: store.save(_grown(current, token), if_match=etag),
        )

    def _call(
        self,
        session_id: str,
        kind: str,
        token: str | None,
        expected: tuple[str, ...] | None,
        action: Callable[[], object],
    ) -> None:
        call = time.monotonic_ns()
        self.pending = Op(self.name, session_id, kind, token, call, call, "error", expected)
        value: tuple[str, ...] | None = None
        count: int | None = None
        error: str | None = None
        try:
            result = action()
        except ConflictError as exc:
            outcome = "conflict" if kind in ("create", "cas") else "error"
            error = None if outcome == "conflict" else _error_text(exc)
        except SessionNotFoundError as exc:
            outcome = "absent" if kind in ("load", "update") else "error"
            error = None if outcome == "absent" else _error_text(exc)
        except Exception as exc:  # every other error is a finding to report
            outcome, error = "error", _error_text(exc)
        else:
            outcome = "ok"
            if kind == "delete":
                outcome = "deleted" if result is True else "absent"
            if isinstance(result, StoredSession):
                value, count = result.messages, result.input_tokens
        self.history.append(
            Op(
                self.name,
                session_id,
                kind,
                token,
                call,
                time.monotonic_ns(),
                outcome,
                expected,
                value,
                count,
                error,
            )
        )
        self.pending = None


_T = TypeVar("_T")
# sched_yield releases the GIL (and the CPU); time.sleep(0) does too where it is missing.
_yield_processor: Callable[[], object] = getattr(os, "sched_yield", lambda: time.sleep(0))


def _think(value: _T) -> _T:
    """Give up the processor, as an update function or the "LLM call" between a load
    and a conditional save does in real use, so other threads run in that window."""
    _yield_processor()
    return value


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_SWITCH_INTERVAL = 1e-5
"""Seconds between forced switches of the running Python thread during the workload.

The default (5 ms) is longer than a whole in-memory workload: threads would run one
after the other and interleave nowhere. At 10 us they are preempted inside calls."""


@contextmanager
def _frequent_thread_switches() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _run_workers(
    stores: Sequence[BackendSessionStore],
    *,
    prefix: str,
    session_ids: Sequence[str],
    ops: int,
    seed: int,
    deadline: float,
) -> tuple[list[Op], list[str]]:
    """Run one worker per store in its own thread, all released at once by a barrier.

    A worker still running at ``deadline`` (``time.monotonic()``) is reported, and
    the call it is stuck in is recorded with an unknown outcome.
    """
    workers = [
        _Worker(store, f"{prefix}/t{index}", session_ids, ops, seed)
        for index, store in enumerate(stores)
    ]
    barrier = threading.Barrier(len(workers))
    failures: list[str] = []

    def body(worker: _Worker) -> None:
        try:
            barrier.wait()
            worker.run()
        except BaseException:  # reported, not lost with the thread
            failures.append(f"worker {worker.name} crashed:\n{traceback.format_exc()}")

    threads = [
        threading.Thread(
            target=body, args=(worker,), name=f"conformance {worker.name}", daemon=True
        )
        for worker in workers
    ]
    with _frequent_thread_switches():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    history: list[Op] = []
    for worker, thread in zip(workers, threads, strict=True):
        history += worker.history
        pending = worker.pending
        if thread.is_alive() and pending is not None:
            stuck = replace(pending, ret=time.monotonic_ns(), error="did not return (hung)")
            history.append(stuck)
            failures.append(
                f"worker {worker.name} hung: its {pending.kind} of {pending.session_id!r} had "
                "not returned when the rule's time ran out (a deadlock, or a lock never released)"
            )
    return history, failures


@dataclass(frozen=True)
class _Job:
    """What a worker process needs: picklable, sent to it by ``spawn``."""

    opener: Callable[[], BackendSessionStore]
    prefix: str
    threads: int
    session_ids: tuple[str, ...]
    ops: int
    seed: int
    timeout: float


def _process_main(job: _Job, barrier: Any, results: Any) -> None:
    """A worker process: open the storage, meet the others, run its threads, report."""
    history: list[Op] = []
    failures: list[str] = []
    try:
        store = job.opener()
        barrier.wait(job.timeout)
        history, failures = _run_workers(
            [store] * job.threads,
            prefix=job.prefix,
            session_ids=job.session_ids,
            ops=job.ops,
            seed=job.seed,
            deadline=time.monotonic() + job.timeout,
        )
        close = getattr(store, "close", None)
        if callable(close):
            close()
    except BaseException:  # the parent reports it
        failures.append(f"worker process {job.prefix} failed:\n{traceback.format_exc()}")
        barrier.abort()  # nobody waits for this process any longer
    results.put((job.prefix, history, failures))


def record_history(
    subject: StoreUnderTest,
    sizes: Sizes,
    session_ids: Sequence[str] = SHARED_IDS,
) -> tuple[list[Op], list[str], bool]:
    """Run the workload on ``subject``: its history, any hang or crash, and whether
    the history is complete.

    Threads in this process share ``subject.store`` (one uses ``subject.opener()``
    when there is one); with ``subject.multiprocess`` and an opener, ``sizes.processes``
    processes (``spawn``) each open the storage with the opener and run their own
    threads. The history ends with one load of each id after every worker finished.
    It is incomplete when a worker process never reported: its calls are unknown.
    Raises ``TypeError`` when the opener cannot be sent to another process.
    """
    timeout = sizes.timeout * max(1, math.ceil(sizes.ops / 100))
    deadline = time.monotonic() + timeout
    stores = [subject.store] * sizes.threads
    if subject.opener is not None and sizes.threads > 1:
        stores[-1] = subject.opener()
    failures: list[str] = []
    processes: list[Any] = []
    results: Any = None
    if subject.opener is not None and subject.multiprocess and sizes.processes > 0:
        try:
            pickle.dumps(subject.opener)
        except Exception as exc:
            msg = (
                f"StoreUnderTest.opener {subject.opener!r} cannot be sent to another process "
                f"({exc}); make it a module-level function or a functools.partial of one, or "
                "set multiprocess=False if the storage lives in this process only"
            )
            raise TypeError(msg) from exc
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(sizes.processes + 1)
        results = context.Queue()
        processes = [
            context.Process(
                target=_process_main,
                args=(
                    _Job(
                        subject.opener,
                        prefix=f"p{index}",
                        threads=sizes.threads_per_process,
                        session_ids=tuple(session_ids),
                        ops=sizes.ops,
                        seed=sizes.seed,
                        timeout=timeout,
                    ),
                    barrier,
                    results,
                ),
                name=f"conformance worker p{index}",
                daemon=True,
            )
            for index in range(sizes.processes)
        ]
        for process in processes:
            process.start()
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            failures.append("the worker processes did not all start (see their reports below)")
    history, local_failures = _run_workers(
        stores,
        prefix="main",
        session_ids=session_ids,
        ops=sizes.ops,
        seed=sizes.seed,
        deadline=deadline,
    )
    failures += local_failures
    reported = set()
    # A child reports its own hung threads at its own deadline, which started after
    # it was spawned: give it that long again before counting it as lost.
    deadline += timeout
    for _ in processes:
        try:
            prefix, child_history, child_failures = results.get(
                timeout=max(0.1, deadline - time.monotonic())
            )
        except Exception:  # queue.Empty: a child hung or died
            break
        reported.add(prefix)
        history += child_history
        failures += child_failures
    for index, process in enumerate(processes):
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
        if f"p{index}" not in reported:
            failures.append(
                f"worker process p{index} did not report within {timeout:.0f} s "
                f"(exit code {process.exitcode}): it hung or crashed"
            )
    final = _Worker(subject.store, FINAL, session_ids, 0, 0)
    for session_id in session_ids:
        final._call(
            session_id, "load", None, None, functools.partial(subject.store.load, session_id)
        )
    return history + final.history, failures, len(reported) == len(processes)


def check_concurrent_history(subject: StoreUnderTest, sizes: Sizes | None = None) -> list[str]:
    """Run the mixed workload and return every violation (empty: linearizable, no hang)."""
    sizes = sizes if sizes is not None else Sizes.from_environment()
    history, failures, complete = record_history(subject, sizes)
    if complete:
        violations = failures + check_history(history)
    else:
        violations = [
            *failures,
            "the history was not checked: the calls of a lost process are unknown",
        ]
    if violations:
        violations.insert(
            0,
            f"{len(violations)} violation(s) in a history of {len(history)} calls "
            f"(seed {sizes.seed}; rerun with SESSIONSTORE_CONFORMANCE_SEED={sizes.seed}):",
        )
    return violations


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
    """
    store = subject.store
    store.save(_session(_FORK_HELD, ("before",)))
    errors: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def hold(current: StoredSession) -> StoredSession:
        inside.set()
        release.wait(timeout)
        return _grown(current, "held")

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
        _fork_child(store, write_end)
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
            errors.append(f"{name} raised {_error_text(exc)}")

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


def _fork_child(store: BackendSessionStore, write_end: int) -> None:  # pragma: no cover
    """In the child: append to both sessions, load them back, report, exit at once."""
    report = "ok"
    try:
        for session_id in (_FORK_HELD, _FORK_OTHER):
            store.append_messages(session_id, ["child"])
            if "child" not in store.load(session_id).messages:
                report = f"the child's own load of {session_id!r} does not show its append"
    except BaseException as exc:  # sent to the parent
        report = _error_text(exc)
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

_NESTED_FIXED = datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def _within(name: str, timeout: float, body: Callable[[], None], violations: list[str]) -> None:
    """Run ``body`` in a thread; record its exception, or a hang after ``timeout`` s."""
    errors: list[str] = []

    def run() -> None:
        try:
            body()
        except AssertionError as exc:
            errors.append(f"{name}: {exc}")
        except Exception as exc:  # reported as a violation
            errors.append(f"{name}: raised {_error_text(exc)}")

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
    outer.save(_session(outer_id, ("start",)))
    before = inner.load(outer_id)

    def fn(current: StoredSession) -> StoredSession:
        for number in range(count):
            session_id = f"{prefix}-{number}"
            inner.save(_session(session_id, ("saved",)))
            step = number % 3
            if step == 0:
                inner.append_messages(session_id, ["appended"], input_tokens=1)
            elif step == 1:
                inner.update(session_id, lambda s: _grown(s, "updated"))
            else:
                inner.delete(session_id)
                inner.create(_session(session_id, ("saved", "created")))
            wanted = ("saved", ("appended", "updated", "created")[step])
            for reader in (outer, inner):
                seen = reader.load(session_id).messages
                assert seen == wanted, f"{session_id!r} reads {seen}, wanted {wanted}"
        seen_outer = inner.load(outer_id)
        assert seen_outer == before, (
            f"the other store reads {outer_id!r} as {seen_outer.messages} while the update "
            f"runs; it must still be {before.messages}"
        )
        return _grown(current, "outer")

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
    outer.save(_session(session_id, ("start",)))

    def fn(current: StoredSession) -> StoredSession:
        try:
            inner.append_messages(session_id, ["nested"], input_tokens=1)
        except LockTimeoutError as exc:
            msg = f"the nested append waited for the lock its own thread holds: {exc}"
            raise AssertionError(msg) from exc
        except Exception:  # noqa: S110  # a prompt refusal is allowed
            pass
        return _grown(current, "outer")

    result = outer.update(session_id, fn)
    after = inner.load(session_id)
    assert after == result, f"{session_id!r} reads {after.messages}, not {result.messages}"


def check_two_stores(subject: StoreUnderTest, timeout: float = 20.0) -> list[str]:
    """Nested writes through a second store object inside ``update``: no deadlock,
    and each store object sees the other's writes. Needs ``subject.opener``.

    Three parts, each with ``timeout`` seconds: writes to 256 other sessions through
    the second store inside the first store's ``update`` (they must be visible to both
    at once, and the update to both afterwards), the same the other way round, and an
    append to the session being updated, through the second store (it may land or be
    refused, but must not wait for the lock its own thread holds).
    """
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
    _within(
        "a write to the updated session through the second store inside the update",
        timeout,
        lambda: _same_session_nested(first, second, "two-same"),
        violations,
    )
    return violations


def check_concurrent_nested_writes(
    subject: StoreUnderTest, timeout: float = 20.0, *, threads: int = 4, rounds: int = 3
) -> list[str]:
    """Threads nest writes to their own sessions inside ``update``; none may deadlock.

    Thread ``i`` updates ``nest-i`` and, inside the function, writes ``nest-i-0`` ...
    ``nest-i-31`` (through ``subject.opener()`` for every other one, when there is an
    opener). No two threads share a session, so waiting for each other at all can only
    come from locks shared between sessions; a deadlock shows as a hang or a
    ``LockTimeoutError``.
    """
    second = subject.opener() if subject.opener is not None else subject.store
    stores = (subject.store, second)
    violations: list[str] = []
    barrier = threading.Barrier(threads)

    def body(index: int) -> Callable[[], None]:
        def run() -> None:
            outer_id = f"nest-{index}"
            subject.store.save(_session(outer_id, ()))
            barrier.wait(timeout)
            for _ in range(rounds):

                def fn(current: StoredSession) -> StoredSession:
                    for number in range(32):
                        session_id = f"{outer_id}-{number}"
                        stores[number % 2].append_messages(session_id, ["x"], input_tokens=1)
                    return _grown(current, "outer")

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
