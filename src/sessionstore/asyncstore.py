"""The async API over the folder and memory stores: the same rules, off the event loop.

``AsyncSessionStore`` and ``AsyncMemorySessionStore`` wrap the sync stores: every
rule (ids, validation, encoding, migration, the append log, locks) is the sync
code itself. The blocking part of a call (a lock wait, a read, a write and its
fsyncs) runs in a small worker pool of the store's own, never on the loop.

Why a worker pool: a folder store's work is file system calls, which have no
asynchronous form on Linux short of io_uring; a thread per call in flight, at most
``workers`` at once, is what asyncio itself does for files. Its lock is the sync
store's lock (``flock`` plus a per-process mutex), so sync and async callers, other
processes and other store objects all exclude one another, as the write contract
asks.

Lock waits. Calls of one async store on one session take turns on the loop first
(a per-session gate, an asyncio wait that holds no thread), then the one whose
turn it is takes the session's lock in a worker. So a thousand tasks writing one
busy session hold one worker, not the pool: only a wait for a lock held by
another process, another store object or sync code holds a worker, one per
session. A turn not had within ``lock_timeout`` raises ``LockTimeoutError``.

Lock ownership. The locks are re-entrant per owner (``sessionstore.locking``):
each public write call runs its worker functions in a copy of the caller's context
in which ``LOCK_OWNER`` is the token of its call chain. Calls made by an async
``update`` function (and by tasks it creates, which inherit its context) belong to
the update's chain: they may write the session being updated (and others), as a
sync ``update``'s function may, and the gate makes them take turns with one
another and with the update itself.

``update`` with an async function holds the session's lock across the function
without holding a worker while it runs: a worker takes the lock and loads; the
loop awaits the function; a worker writes the result and releases the lock. If
the function raises or the call is cancelled, nothing is written and the lock is
released (by a task of its own, so a second cancellation cannot skip it).

Cancellation (``task.cancel()``, ``asyncio.timeout``): the awaiting task is
released at once. A write that has not started never starts (the worker checks,
once it holds the session's lock, whether its caller is still waiting); a write
that has started completes, atomically, and its result is discarded. So a
cancelled call never leaves a torn file, a half-applied append or a held lock.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import contextvars
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sessionstore.appendlog import AppendResult
from sessionstore.backends.filesystem import FileSystemBackend
from sessionstore.backends.memory import MemoryBackend
from sessionstore.codec import DecodedSession
from sessionstore.errors import LockTimeoutError
from sessionstore.ids import is_valid_session_id
from sessionstore.locking import LOCK_OWNER
from sessionstore.models import StoredSession
from sessionstore.store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SESSION_DIR,
    BackendSessionStore,
    MemorySessionStore,
    SessionStore,
    delete_errors,
)

__all__ = [
    "DEFAULT_WORKERS",
    "AsyncBackendSessionStore",
    "AsyncMemorySessionStore",
    "AsyncSessionStore",
]

T = TypeVar("T")

DEFAULT_WORKERS = 16
"""Worker threads per async store: how many of its calls block at once."""

UpdateFunction = Callable[[StoredSession], StoredSession | Awaitable[StoredSession]]


class _Flag:
    """Set once on the loop, read in a worker: a plain attribute (a ``threading.Event``
    costs a lock and a condition to build, and nobody waits on this)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class _Abandoned(Exception):
    """Raised in a worker whose caller was cancelled before its write started."""


class _Suspended(Exception):
    """Raised by an update's function wrapper when the function returned an awaitable."""


class _Call:
    """One public write call of an async store, within the chain of calls it runs in.

    ``root`` is the chain's lock owner (``LOCK_OWNER`` in its workers). A call made
    while another call of the same store runs user code (an async update function)
    is its child; any other call starts a chain of its own.
    """

    __slots__ = ("parent", "root", "store")

    def __init__(self, store: object, parent: _Call | None) -> None:
        if parent is not None and parent.store is not store:
            parent = None
        self.store: object = store
        self.parent = parent
        self.root: object = parent.root if parent is not None else object()

    def within(self, other: _Call) -> bool:
        """True when this call is ``other`` or runs inside it (a descendant)."""
        call: _Call | None = self
        while call is not None:
            if call is other:
                return True
            call = call.parent
        return False


_CURRENT: ContextVar[_Call | None] = ContextVar("sessionstore_async_call", default=None)
"""The call whose user code (an async update function) runs in this context."""


class _Waiter:
    __slots__ = ("call", "granted", "resume")

    def __init__(self, call: _Call, resume: bool, granted: asyncio.Future[None]) -> None:
        self.call = call
        self.resume = resume
        self.granted = granted


class _Gate:
    """The turns of one session among one async store's calls, on the loop.

    ``holders`` is a stack: the call at the top may run; a call may join when the
    gate is free or the top is its ancestor (a call made by an update's function
    while the update holds the session). Waiters are served first come, first served.
    """

    __slots__ = ("holders", "waiters")

    def __init__(self) -> None:
        self.holders: list[_Call] = []
        self.waiters: list[_Waiter] = []

    def may_run(self, call: _Call, *, resume: bool) -> bool:
        if resume:
            return self.holders[-1] is call
        return not self.holders or call.within(self.holders[-1])


class AsyncBackendSessionStore:
    """The async face of a ``BackendSessionStore``: same methods, arguments, results
    and errors, as coroutines. ``workers`` bounds the threads its blocking work uses
    (a positive int). Use ``async with`` (or ``await close()``) to release them."""

    def __init__(self, sync: BackendSessionStore, *, workers: int = DEFAULT_WORKERS) -> None:
        if type(workers) is not int or workers < 1:
            msg = f"workers must be a positive int, not {workers!r}"
            raise ValueError(msg)
        self.sync = sync
        """The sync store this one runs: the same sessions, the same locks."""
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="sessionstore"
        )
        self._gates: dict[str, _Gate] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        # The lock of these backends follows LOCK_OWNER, so a hold may span workers.
        self._owned_locks = isinstance(sync.backend, FileSystemBackend | MemoryBackend)

    @property
    def max_bytes(self) -> int:
        return self.sync.max_bytes

    async def save(self, session: StoredSession, *, if_match: str | None = None) -> str:
        """As ``SessionStore.save``."""
        return await self._write(
            getattr(session, "session_id", None), lambda: self.sync.save(session, if_match=if_match)
        )

    async def create(self, session: StoredSession) -> str:
        """As ``SessionStore.create``."""
        return await self._write(
            getattr(session, "session_id", None), lambda: self.sync.create(session)
        )

    async def load(self, session_id: str) -> StoredSession:
        """As ``SessionStore.load``."""
        return await self._read(lambda: self.sync.load(session_id))

    async def load_with_etag(self, session_id: str) -> tuple[StoredSession, str]:
        """As ``SessionStore.load_with_etag``."""
        return await self._read(lambda: self.sync.load_with_etag(session_id))

    async def load_document(self, session_id: str) -> DecodedSession:
        """As ``SessionStore.load_document`` (for tools: the etag, version, records,
        torn tail and append keys with the session)."""
        return await self._read(lambda: self.sync.load_document(session_id))

    async def exists(self, session_id: str) -> bool:
        """As ``SessionStore.exists``."""
        return await self._read(lambda: self.sync.exists(session_id))

    async def list(self) -> list[str]:
        """As ``SessionStore.list``."""
        return await self._read(self.sync.list)

    async def delete(self, session_id: str) -> bool:
        """As ``SessionStore.delete``: the same errors (each a ``SessionDeleteError``),
        and a missing session is answered without locking (nothing is created)."""
        if not is_valid_session_id(session_id):
            return await self._read(lambda: self.sync.delete(session_id))
        backend = self.sync.backend

        def work(abandoned: _Flag) -> bool:
            with delete_errors(session_id):
                if not backend.exists(session_id):
                    return False
                with backend.lock(session_id):
                    if abandoned.is_set():
                        raise _Abandoned
                    return backend.delete(session_id)

        return await self._write_with(session_id, work, errors=delete_errors)

    async def append(  # the sync signature
        self,
        session_id: str,
        messages: Iterable[str],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        key: str | None = None,
        if_match: str | None = None,
    ) -> AppendResult:
        """As ``SessionStore.append``."""
        added = _materialized(messages)
        return await self._write(
            session_id,
            lambda: self.sync.append(
                session_id,
                added,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                key=key,
                if_match=if_match,
            ),
        )

    async def append_messages(
        self,
        session_id: str,
        messages: Iterable[str],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> StoredSession:
        """As ``SessionStore.append_messages``."""
        added = _materialized(messages)
        return await self._write(
            session_id,
            lambda: self.sync.append_messages(
                session_id, added, input_tokens=input_tokens, output_tokens=output_tokens
            ),
        )

    async def compact(self, session_id: str) -> str:
        """As ``SessionStore.compact``."""
        return await self._write(session_id, lambda: self.sync.compact(session_id))

    async def update(self, session_id: str, fn: UpdateFunction) -> StoredSession:
        """As ``SessionStore.update``; ``fn`` may be a plain or an async function.

        The session's lock is held from the load to the write. A plain ``fn`` runs in
        a worker. An async ``fn`` runs on the caller's loop with no worker held; it
        may await this store's calls, on this session too (they take turns with it,
        as the sync ``update``'s function may write sessions). If it raises, or the
        call is cancelled while it runs (``fn`` is cancelled too), nothing is written
        and the lock is released.
        """
        if not is_valid_session_id(session_id) or not self._owned_locks:
            return await self._update_in_one_worker(session_id, fn)
        call = _Call(self, _CURRENT.get())
        await self._take_turn(session_id, call)
        hold = contextlib.ExitStack()
        pending: list[Awaitable[StoredSession]] = []
        abandoned = _Flag()
        steps: list[asyncio.Future[Any]] = []

        def finish() -> asyncio.Task[None]:
            return self._start(self._finish_update(session_id, call, hold, steps, pending))

        try:
            steps.append(
                self._submit(
                    call, lambda: self._update_first(session_id, fn, hold, pending, abandoned)
                )
            )
            stored: StoredSession | None = await asyncio.shield(steps[-1])
            if stored is not None:  # a plain fn: done, and released, in the worker
                self._leave(session_id, call)
                return stored
            awaitable = pending.pop()
            token = _CURRENT.set(call)
            try:
                new = await awaitable
            finally:
                _CURRENT.reset(token)
            await self._take_turn(session_id, call, resume=True)  # fn's own calls are done
            steps.append(
                self._submit(call, lambda: self._update_second(session_id, new, abandoned))
            )
            stored = await asyncio.shield(steps[-1])
        except asyncio.CancelledError:
            abandoned.set()
            finish()  # a task of its own releases the lock; the caller goes now
            raise
        except BaseException:
            await asyncio.shield(finish())
            raise
        await asyncio.shield(finish())
        assert stored is not None  # the second step returns what it wrote
        return stored

    def _update_first(
        self,
        session_id: str,
        fn: UpdateFunction,
        hold: contextlib.ExitStack,
        pending: builtins.list[Awaitable[StoredSession]],
        abandoned: _Flag,
    ) -> StoredSession | None:
        """In a worker: take the lock into ``hold``, load and apply ``fn``. A plain
        ``fn``'s result is written (and the lock released) here; an awaitable goes to
        ``pending`` and None is returned, the lock still held."""
        hold.enter_context(self.sync.backend.lock(session_id))
        try:
            if abandoned.is_set():
                raise _Abandoned

            def apply(current: StoredSession) -> StoredSession:
                result = fn(current)
                if inspect.isawaitable(result):
                    pending.append(result)
                    raise _Suspended
                return result

            try:
                return self.sync.update(session_id, apply)
            except _Suspended:
                return None  # the lock stays held while the loop runs fn
        finally:
            if not pending:
                hold.close()

    def _update_second(
        self, session_id: str, new: StoredSession, abandoned: _Flag
    ) -> StoredSession:
        """In a worker, under the held lock: check and write ``new``, as the sync
        ``update`` does (its lock is re-entered: same owner)."""
        if abandoned.is_set():
            raise _Abandoned
        return self.sync.update(session_id, lambda _current: new)

    async def _update_in_one_worker(self, session_id: str, fn: UpdateFunction) -> StoredSession:
        """``update`` for ids the sync call refuses and backends whose lock is per
        thread: one worker holds the lock while an async ``fn`` runs on the loop."""
        loop = asyncio.get_running_loop()
        running: list[concurrent.futures.Future[StoredSession]] = []
        cancelled = _Flag()
        guard = threading.Lock()

        def run_fn(current: StoredSession) -> StoredSession:
            result = fn(current)
            if not inspect.isawaitable(result):
                return result
            future = asyncio.run_coroutine_threadsafe(_awaited(result), loop)
            with guard:  # a cancel either sees this future or is seen here
                running.append(future)
                if cancelled.is_set():
                    future.cancel()
            try:
                return future.result()
            except concurrent.futures.CancelledError:
                raise _Abandoned from None

        def cancel_fn() -> None:
            with guard:
                cancelled.set()
                for future in running:
                    future.cancel()

        return await self._write(
            session_id, lambda: self.sync.update(session_id, run_fn), on_cancel=cancel_fn
        )

    async def close(self) -> None:
        """Let the workers finish what they started, then stop them."""
        while self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _read(self, call: Callable[[], T]) -> T:
        """Run a read in a worker. Reads take no lock; a cancelled read is just dropped."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _write(
        self,
        session_id: object,
        call: Callable[[], T],
        *,
        on_cancel: Callable[[], None] | None = None,
    ) -> T:
        """Run a write in a worker under the session's lock, once it is this call's
        turn, unless cancelled before it started; a started write completes even if
        its caller is cancelled."""
        if not is_valid_session_id(session_id):
            return await self._read(call)  # refused by the sync call, before any lock or I/O
        backend = self.sync.backend
        valid_id = str(session_id)

        def work(abandoned: _Flag) -> T:
            # The sync call takes this (re-entrant) lock again: holding it here first
            # makes "has it started?" one question, asked once the lock is had.
            with backend.lock(valid_id):
                if abandoned.is_set():
                    raise _Abandoned
                return call()

        return await self._write_with(valid_id, work, on_cancel=on_cancel)

    async def _write_with(
        self,
        session_id: str,
        work: Callable[[_Flag], T],
        *,
        on_cancel: Callable[[], None] | None = None,
        errors: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    ) -> T:
        """Wait for the session's turn (``errors`` translates its timeout), then run
        ``work(abandoned)`` in a worker; ``abandoned`` is set when the caller is gone."""
        abandoned = _Flag()
        call = _Call(self, _CURRENT.get())
        if not self._turn_now(session_id, call):
            with errors(session_id) if errors is not None else contextlib.nullcontext():
                await self._take_turn(session_id, call)
        future = self._submit(call, lambda: work(abandoned))
        future.add_done_callback(lambda _: self._leave(session_id, call))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            abandoned.set()
            if on_cancel is not None:
                on_cancel()
            future.add_done_callback(_consume)
            raise

    def _submit(self, call: _Call, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` in a worker, in a copy of this context whose lock owner is the
        call's chain."""
        context = contextvars.copy_context()
        context.run(LOCK_OWNER.set, call.root)
        return asyncio.wrap_future(self._executor.submit(context.run, fn))

    def _turn_now(self, session_id: str, call: _Call) -> bool:
        """Give ``call`` its first turn on ``session_id`` if it may run at once (no
        waiting, no coroutine); False when it must ``_take_turn``."""
        gate = self._gates.get(session_id)
        if gate is None:
            gate = self._gates[session_id] = _Gate()
        if gate.may_run(call, resume=False):
            gate.holders.append(call)
            return True
        return False

    async def _take_turn(self, session_id: str, call: _Call, *, resume: bool = False) -> None:
        """Wait on the loop until ``call`` may run on ``session_id`` (``resume``: until
        it is on top again, its own calls done). Raises ``LockTimeoutError`` when a
        first turn is not had within the backend's ``lock_timeout``."""
        gate = self._gates.get(session_id)
        if gate is None:
            gate = self._gates[session_id] = _Gate()
        if gate.may_run(call, resume=resume):  # nested calls pass waiters: they must
            if not resume:
                gate.holders.append(call)
            return
        waiter = _Waiter(call, resume, asyncio.get_running_loop().create_future())
        gate.waiters.append(waiter)
        timeout = None if resume else getattr(self.sync.backend, "lock_timeout", None)
        try:
            await asyncio.wait((waiter.granted,), timeout=timeout)
        except BaseException:
            if waiter.granted.done() and not resume:
                self._leave(session_id, call)  # granted as it was cancelled: give it back
            raise
        finally:
            if not waiter.granted.done():
                gate.waiters.remove(waiter)
                self._serve(session_id, gate)
        if not waiter.granted.done():
            raise LockTimeoutError(
                f"session {session_id!r} in {self.sync.backend.description}: not locked within "
                f"{timeout} s; other calls of this store hold or wait for it (raise "
                "lock_timeout, or look for a slow update function)",
                session_id=session_id,
                path=self.sync.backend.location(session_id),
            )

    def _leave(self, session_id: str, call: _Call) -> None:
        """``call`` is done with ``session_id``: serve the next waiters."""
        gate = self._gates.get(session_id)
        if gate is None or call not in gate.holders:
            return
        gate.holders.remove(call)
        self._serve(session_id, gate)

    def _serve(self, session_id: str, gate: _Gate) -> None:
        for waiter in list(gate.waiters):
            if gate.may_run(waiter.call, resume=waiter.resume):
                gate.waiters.remove(waiter)
                if not waiter.resume:
                    gate.holders.append(waiter.call)
                waiter.granted.set_result(None)
        if not gate.holders and not gate.waiters and self._gates.get(session_id) is gate:
            del self._gates[session_id]

    async def _finish_update(
        self,
        session_id: str,
        call: _Call,
        hold: contextlib.ExitStack,
        steps: builtins.list[asyncio.Future[Any]],
        pending: builtins.list[Awaitable[StoredSession]],
    ) -> None:
        """Release an update's lock: after its worker steps, once its own calls are
        done, in a worker (releasing may remove the lock file)."""
        try:
            for step in steps:
                await asyncio.wait((step,))
                _consume(step)
            for awaitable in pending:  # fn's coroutine, never awaited: close it
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
            if call in self._gates.get(session_id, _Gate()).holders:
                await self._take_turn(session_id, call, resume=True)
            await self._submit(call, hold.close)
        finally:
            self._leave(session_id, call)

    def _start(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"


class AsyncSessionStore(AsyncBackendSessionStore):
    """``SessionStore``'s sessions (one file per session in ``directory``), async.

    The arguments are ``SessionStore``'s, plus ``workers`` (threads for the blocking
    work). The same folder may be used by sync and async stores at once.
    """

    sync: SessionStore

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_SESSION_DIR,
        *,
        durable: bool = True,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float | None = 30.0,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        super().__init__(
            SessionStore(
                directory, durable=durable, max_bytes=max_bytes, lock_timeout=lock_timeout
            ),
            workers=workers,
        )

    @property
    def directory(self) -> Path:
        return self.sync.directory

    def path_of(self, session_id: str) -> Path:
        """As ``SessionStore.path_of`` (no I/O)."""
        return self.sync.path_of(session_id)


class AsyncMemorySessionStore(AsyncBackendSessionStore):
    """``MemorySessionStore``, async: sessions in memory, for tests and caches."""

    sync: MemorySessionStore

    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_BYTES, workers: int = DEFAULT_WORKERS
    ) -> None:
        super().__init__(MemorySessionStore(max_bytes=max_bytes), workers=workers)


def _materialized(messages: Iterable[str]) -> Iterable[str]:
    # An iterator would be consumed in the worker; a str is refused there, as in sync.
    return messages if isinstance(messages, str | bytes | tuple | list) else tuple(messages)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _consume(future: asyncio.Future[Any]) -> None:
    # The caller is gone: take the outcome so asyncio does not log it as never retrieved.
    if not future.cancelled():
        future.exception()
