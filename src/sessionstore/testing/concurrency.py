"""The concurrency rule of the conformance suite: a recorded history must be linearizable.

``check_concurrent_history``: threads (and, when the storage allows, processes) mix
``update``, plain ``save``, conditional ``save`` (``load_with_etag`` then
``save(if_match=)``), ``create``, ``delete``, ``append_messages``, ``append`` with a
key followed by its retry, and ``load`` on a few shared ids; the recorded history is
checked by ``sessionstore.testing.linearizable``. It returns a list of violations (empty: the
rule holds). An async store runs through a ``BlockingView`` there.

``check_concurrent_tasks``: the same workload and check, for an async store, from
many tasks on its event loop (and tasks in other processes, each on its own loop),
half the ``update`` calls with an async function.

Workers meet at barriers (tasks start together on their loop), never wait on a
timer; the only timeouts are hang guards, reported as violations when they expire.
The lock rules (fork, two store objects, nested writes) are in
``sessionstore.testing.locks``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
import os
import pickle
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sessionstore.appendlog import AppendResult
from sessionstore.errors import ConflictError, SessionNotFoundError
from sessionstore.models import StoredSession
from sessionstore.store import BackendSessionStore
from sessionstore.testing.adapt import BlockingOpener, sync_subject
from sessionstore.testing.blocking import BlockingView
from sessionstore.testing.linearizable import FINAL, Op, check_history
from sessionstore.testing.subject import StoreUnderTest

__all__ = [
    "SHARED_IDS",
    "Sizes",
    "check_concurrent_history",
    "check_concurrent_tasks",
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
    "append": 12,
    "keyed": 12,
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
    tasks: int = 6
    """Worker tasks on the async store's event loop (one on a second store object), in
    the tasks rule."""
    tasks_per_process: int = 3
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


def token_session(session_id: str, messages: tuple[str, ...]) -> StoredSession:
    """A session of ``messages`` (tokens) with ``input_tokens`` equal to their number."""
    return StoredSession(
        session_id=session_id,
        messages=messages,
        input_tokens=len(messages),
        output_tokens=0,
    )


def grown(session: StoredSession, token: str) -> StoredSession:
    """``session`` with ``token`` appended and ``input_tokens`` one higher."""
    return replace(
        session,
        messages=(*session.messages, token),
        input_tokens=session.input_tokens + 1,
    )


# -- the history rule -----------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """One call a worker makes: what it records, and how to make it.

    ``action`` returns the result (a sync store) or an awaitable of it (an async
    store: the same method names and arguments, as coroutines). ``pause``: give the
    other workers a turn first (the "LLM call" between a load and its conditional
    save). ``check``: raises when the result is inconsistent in itself."""

    kind: str
    token: str | None
    expected: tuple[str, ...] | None
    action: Callable[[], Any]
    pause: bool = False
    check: Callable[[Any], None] | None = None


def _plan(
    store: Any,
    session_id: str,
    kind: str,
    token: str,
    update_fn: Callable[[str], Callable[[StoredSession], Any]],
) -> Generator[_Step, Any, None]:
    """The calls of one operation of ``kind``; each is sent back its result (None when
    it failed). ``update_fn(token)`` is the function ``update`` is given."""
    if kind == "load":
        yield _Step("load", None, None, lambda: store.load(session_id))
    elif kind == "save":
        yield _Step("save", token, None, lambda: store.save(token_session(session_id, (token,))))
    elif kind == "create":
        yield _Step(
            "create", token, None, lambda: store.create(token_session(session_id, (token,)))
        )
    elif kind == "update":
        yield _Step("update", token, None, lambda: store.update(session_id, update_fn(token)))
    elif kind == "append":
        yield _Step(
            "append",
            token,
            None,
            lambda: store.append_messages(session_id, [token], input_tokens=1),
        )
    elif kind == "keyed":
        # The append, then its retry with the same key (as after a lost reply): the
        # retry must replay the first result, or append if a save or delete came
        # between them and forgot the key.
        for _ in range(2):
            yield _Step(
                "keyed",
                token,
                None,
                lambda: store.append(session_id, [token], input_tokens=1, key=token),
                check=_check_counts,
            )
    elif kind == "delete":
        yield _Step("delete", None, None, lambda: store.delete(session_id))
    else:  # cas: load_with_etag, then save(if_match=) of the version it read
        read = yield _Step("load", None, None, lambda: store.load_with_etag(session_id))
        if read is None:
            return
        current, etag = read
        yield _Step(
            "cas",
            token,
            current.messages,
            lambda: store.save(grown(current, token), if_match=etag),
            pause=True,
        )


def _check_counts(result: AppendResult) -> None:
    if result.input_tokens != result.message_count:
        msg = f"append returned {result.message_count} messages but {result.input_tokens} tokens"
        raise AssertionError(msg)


def _plain_update(token: str) -> Callable[[StoredSession], StoredSession]:
    return lambda current: _think(grown(current, token))


def _task_update(token: str) -> Callable[[StoredSession], Any]:
    """An async function for every other call (the lock is held across its await on
    the loop), a plain one (run in a worker) otherwise."""
    if int(token.rsplit(".", 1)[-1]) % 2:
        return lambda current: grown(current, token)

    async def grow(current: StoredSession) -> StoredSession:
        await asyncio.sleep(0)  # other tasks run while the update holds the session
        return grown(current, token)

    return grow


@dataclass
class _Worker:
    """One sequential client: draws calls at random and records each one. ``run``
    makes them from a thread (a sync store); ``run_async`` from a task (an async one)."""

    store: Any
    name: str
    session_ids: Sequence[str]
    ops: int
    seed: int
    history: list[Op] = field(default_factory=list)
    pending: Op | None = None

    def _operations(self) -> Iterator[tuple[str, str, str]]:
        rng = random.Random(f"{self.seed}/{self.name}")  # noqa: S311  # a reproducible workload
        kinds = list(_WEIGHTS)
        weights = list(_WEIGHTS.values())
        for number in range(self.ops):
            session_id = rng.choice(self.session_ids)
            kind = rng.choices(kinds, weights)[0]
            yield session_id, kind, f"{self.name}.{number}"

    def run(self) -> None:
        for session_id, kind, token in self._operations():
            plan = _plan(self.store, session_id, kind, token, _plain_update)
            result = None
            while (step := _next(plan, result)) is not None:
                if step.pause:
                    _think(None)
                result = self.call(session_id, step)

    async def run_async(self) -> None:
        for session_id, kind, token in self._operations():
            plan = _plan(self.store, session_id, kind, token, _task_update)
            result = None
            while (step := _next(plan, result)) is not None:
                if step.pause:
                    await asyncio.sleep(0)
                call = self._begin(session_id, step)
                try:
                    value = await step.action()
                    if step.check is not None:
                        step.check(value)
                except Exception as exc:  # classified (and reported) by _end
                    result = self._end(session_id, step, call, error=exc)
                else:
                    result = self._end(session_id, step, call, value=value)

    def call(self, session_id: str, step: _Step) -> Any:
        """Make ``step`` (a sync call) and record it; its result, or None if it failed."""
        call = self._begin(session_id, step)
        try:
            value = step.action()
            if step.check is not None:
                step.check(value)
        except Exception as exc:  # classified (and reported) by _end
            return self._end(session_id, step, call, error=exc)
        return self._end(session_id, step, call, value=value)

    def _begin(self, session_id: str, step: _Step) -> int:
        call = time.monotonic_ns()
        self.pending = Op(
            self.name, session_id, step.kind, step.token, call, call, "error", step.expected
        )
        return call

    def _end(
        self,
        session_id: str,
        step: _Step,
        call: int,
        *,
        value: Any = None,
        error: Exception | None = None,
    ) -> Any:
        """Record the call; return ``value`` when it succeeded, else None."""
        kind = step.kind
        messages: tuple[str, ...] | None = None
        count: int | None = None
        replayed: bool | None = None
        text: str | None = None
        if isinstance(error, ConflictError):
            outcome = "conflict" if kind in ("create", "cas") else "error"
            text = None if outcome == "conflict" else error_text(error)
        elif isinstance(error, SessionNotFoundError):
            outcome = "absent" if kind in ("load", "update") else "error"
            text = None if outcome == "absent" else error_text(error)
        elif error is not None:  # every other error is a finding to report
            outcome, text = "error", error_text(error)
        else:
            outcome = "ok"
            if kind == "delete":
                outcome = "deleted" if value is True else "absent"
            session = value[0] if isinstance(value, tuple) and value else value
            if isinstance(session, StoredSession):
                messages, count = session.messages, session.input_tokens
            if isinstance(value, AppendResult):
                count, replayed = value.message_count, value.replayed
        self.history.append(
            Op(
                self.name,
                session_id,
                kind,
                step.token,
                call,
                time.monotonic_ns(),
                outcome,
                step.expected,
                messages,
                count,
                text,
                replayed,
            )
        )
        self.pending = None
        return value if outcome == "ok" else None


def _next(plan: Generator[_Step, Any, None], result: Any) -> _Step | None:
    """The next step of ``plan``, sent the result of the one before; None at its end."""
    try:
        return plan.send(result)
    except StopIteration:
        return None


_T = TypeVar("_T")
# sched_yield releases the GIL (and the CPU); time.sleep(0) does too where it is missing.
_yield_processor: Callable[[], object] = getattr(os, "sched_yield", lambda: time.sleep(0))


def _think(value: _T) -> _T:
    """Give up the processor, as an update function or the "LLM call" between a load
    and a conditional save does in real use, so other threads run in that window."""
    _yield_processor()
    return value


def error_text(exc: BaseException) -> str:
    """``Type: message`` of an exception, for a report."""
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


def _run_tasks(
    view: Any,
    stores: Sequence[Any],
    *,
    prefix: str,
    session_ids: Sequence[str],
    ops: int,
    seed: int,
    deadline: float,
) -> tuple[list[Op], list[str], bool]:
    """Run one worker per async store as a task on ``view``'s event loop, all started
    together; the history, the failures, and False when the loop itself did not come
    back by ``deadline`` (then the history is incomplete).

    A task still running at ``deadline`` is reported, the call it is stuck in is
    recorded with an unknown outcome, and it is cancelled.
    """
    assert isinstance(view, BlockingView)
    workers = [
        _Worker(store, f"{prefix}/k{index}", session_ids, ops, seed)
        for index, store in enumerate(stores)
    ]
    failures: list[str] = []

    async def main() -> None:
        tasks = [
            asyncio.create_task(worker.run_async(), name=f"conformance {worker.name}")
            for worker in workers
        ]
        await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for worker, task in zip(workers, tasks, strict=True):
            if not task.done():
                task.cancel()
                pending = worker.pending
                if pending is not None:
                    worker.history.append(
                        replace(pending, ret=time.monotonic_ns(), error="did not return (hung)")
                    )
                failures.append(
                    f"task {worker.name} hung: its {getattr(pending, 'kind', 'call')} of "
                    f"{getattr(pending, 'session_id', '?')!r} had not returned when the rule's "
                    "time ran out (a deadlock, or a lock or turn never released)"
                )
            elif (crash := task.exception()) is not None:
                failures.append(f"task {worker.name} crashed: {error_text(crash)}")

    try:
        view.run(main(), timeout=max(0.0, deadline - time.monotonic()) + _LOOP_GRACE)
    except TimeoutError:
        failures.append(
            f"the event loop of {view.async_store!r} {_BLOCKED_LOOP} within "
            f"{_LOOP_GRACE} s of the rule's time: a call blocks the loop"
        )
        return [op for worker in workers for op in worker.history], failures, False
    return [op for worker in workers for op in worker.history], failures, True


_BLOCKED_LOOP = "did not come back"
_LOOP_GRACE = 10.0
"""Seconds the tasks rule waits, after its time ran out, for the loop to cancel them."""


@dataclass(frozen=True)
class _Job:
    """What a worker process needs: picklable, sent to it by ``spawn``."""

    opener: Callable[[], Any]
    """A sync store, or (``tasks``) a ``BlockingOpener``'s view of an async one."""
    prefix: str
    threads: int
    session_ids: tuple[str, ...]
    ops: int
    seed: int
    timeout: float
    tasks: bool = False
    """Tasks on the store's event loop (an async store) instead of threads."""


def _process_main(job: _Job, barrier: Any, results: Any) -> None:
    """A worker process: open the storage, meet the others, run its threads (or its
    tasks, on the loop of its own view of the async store), report."""
    history: list[Op] = []
    failures: list[str] = []
    try:
        store = job.opener()
        barrier.wait(job.timeout)
        deadline = time.monotonic() + job.timeout
        if job.tasks:
            history, failures, _ = _run_tasks(
                store,
                [store.async_store] * job.threads,
                prefix=job.prefix,
                session_ids=job.session_ids,
                ops=job.ops,
                seed=job.seed,
                deadline=deadline,
            )
        else:
            history, failures = _run_workers(
                [store] * job.threads,
                prefix=job.prefix,
                session_ids=job.session_ids,
                ops=job.ops,
                seed=job.seed,
                deadline=deadline,
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
    *,
    tasks: bool = False,
) -> tuple[list[Op], list[str], bool]:
    """Run the workload on ``subject``: its history, any hang or crash, and whether
    the history is complete.

    Threads in this process share ``subject.store`` (one uses ``subject.opener()``
    when there is one); with ``subject.multiprocess`` and an opener, ``sizes.processes``
    processes (``spawn``) each open the storage with the opener and run their own
    threads. The history ends with one load of each id after every worker finished.
    It is incomplete when a worker process never reported: its calls are unknown.
    An async store runs through a ``BlockingView``. Raises ``TypeError`` when the
    opener cannot be sent to another process.

    With ``tasks`` (an async store only, else ``TypeError``): ``sizes.tasks`` tasks
    on the store's event loop instead of the threads (one on a second store object
    from the opener, entered on the same loop), and in each process
    ``sizes.tasks_per_process`` tasks on an event loop of its own. The history is
    then also incomplete when the loop stayed blocked past the rule's time.
    """
    with sync_subject(subject) as adapted:
        return _record_history(adapted, sizes, session_ids, tasks=tasks)


def _record_history(
    subject: StoreUnderTest, sizes: Sizes, session_ids: Sequence[str], *, tasks: bool
) -> tuple[list[Op], list[str], bool]:
    if tasks and not isinstance(subject.store, BlockingView):
        msg = (
            f"the tasks rule needs an async store, not {type(subject.store).__name__}: its "
            "calls would block the event loop, and the tasks would not interleave"
        )
        raise TypeError(msg)
    timeout = sizes.timeout * max(1, math.ceil(sizes.ops / 100))
    deadline = time.monotonic() + timeout
    stores = [subject.store] * sizes.threads
    if subject.opener is not None and sizes.threads > 1 and not tasks:
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
                        threads=sizes.tasks_per_process if tasks else sizes.threads_per_process,
                        session_ids=tuple(session_ids),
                        ops=sizes.ops,
                        seed=sizes.seed,
                        timeout=timeout,
                        tasks=tasks,
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
        if not _start_together(barrier, processes, timeout):
            failures.append("the worker processes did not all start (see their reports below)")
    loop_came_back = True
    if tasks:
        history, local_failures, loop_came_back = _tasks_here(subject, sizes, session_ids, deadline)
    else:
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
    for prefix, child_history, child_failures in _reports(results, processes, deadline):
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
        final.call(
            session_id, _Step("load", None, None, functools.partial(subject.store.load, session_id))
        )
    complete = loop_came_back and len(reported) == len(processes)
    return history + final.history, failures, complete


def _tasks_here(
    subject: StoreUnderTest, sizes: Sizes, session_ids: Sequence[str], deadline: float
) -> tuple[list[Op], list[str], bool]:
    """The tasks of the test's own process, on the loop of ``subject.store`` (a view);
    the last on a second async store from the opener, when there is one."""
    view = subject.store
    assert isinstance(view, BlockingView)
    stores = [view.async_store] * sizes.tasks
    second: Any = None
    if isinstance(subject.opener, BlockingOpener) and sizes.tasks > 1:
        second = subject.opener.opener()
        second = view.run(second.__aenter__(), timeout=sizes.timeout) or second
        stores[-1] = second
    try:
        return _run_tasks(
            view,
            stores,
            prefix="main",
            session_ids=session_ids,
            ops=sizes.ops,
            seed=sizes.seed,
            deadline=deadline,
        )
    finally:
        if second is not None:
            view.run(second.__aexit__(None, None, None), timeout=sizes.timeout)


def _start_together(barrier: Any, processes: list[Any], timeout: float) -> bool:
    """Release the workers together once all wait at ``barrier``; False (and the barrier
    broken, so none starts) when one dies first or they are not all there in time."""
    deadline = time.monotonic() + timeout
    while barrier.n_waiting < len(processes):
        if any(process.exitcode is not None for process in processes):
            barrier.abort()
            return False
        if time.monotonic() > deadline:
            barrier.abort()
            return False
        time.sleep(0.01)  # polling a child's start-up: no event to wait on across processes
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        return False
    return True


def _reports(results: Any, processes: list[Any], deadline: float) -> Iterator[Any]:
    """The workers' reports as they come, until every worker reported, or the rest died
    without a report, or ``deadline`` passed (a hung worker)."""
    for _ in processes:
        while True:
            try:
                yield results.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
                break
            except Exception:  # queue.Empty: nothing yet
                if time.monotonic() > deadline:
                    return
                if all(process.exitcode is not None for process in processes):
                    # All gone: what they sent has arrived by now, or never will.
                    try:
                        yield results.get(timeout=1.0)
                    except Exception:
                        return
                    break


def check_concurrent_history(subject: StoreUnderTest, sizes: Sizes | None = None) -> list[str]:
    """Run the mixed workload from threads (and processes) and return every violation
    (empty: linearizable, no hang). An async store runs through a ``BlockingView``."""
    return _check(subject, sizes, tasks=False)


def check_concurrent_tasks(subject: StoreUnderTest, sizes: Sizes | None = None) -> list[str]:
    """Run the mixed workload from many tasks on the async store's event loop (and,
    with an opener and ``multiprocess``, from tasks in other processes, each on a loop
    of its own) and return every violation (empty: linearizable, no hang).

    Half the ``update`` calls take an async function, which holds the session across
    an ``await`` while the other tasks run. Raises ``TypeError`` for a sync store.
    """
    return _check(subject, sizes, tasks=True)


def _check(subject: StoreUnderTest, sizes: Sizes | None, *, tasks: bool) -> list[str]:
    sizes = sizes if sizes is not None else Sizes.from_environment()
    history, failures, complete = record_history(subject, sizes, tasks=tasks)
    if complete:
        violations = failures + check_history(history)
    else:
        violations = [
            *failures,
            "the history was not checked: the calls of "
            + (
                "tasks on a blocked loop"
                if _BLOCKED_LOOP in "".join(failures)
                else "a lost process"
            )
            + " are unknown",
        ]
    if violations:
        violations.insert(
            0,
            f"{len(violations)} violation(s) in a history of {len(history)} calls "
            f"(seed {sizes.seed}; rerun with SESSIONSTORE_CONFORMANCE_SEED={sizes.seed}):",
        )
    return violations
