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
asks. A call that waits for a session's lock holds one worker while it waits, and
no more: calls on other sessions go on in the other workers.

Cancellation (``task.cancel()``, ``asyncio.timeout``): the awaiting task is
released at once. A write that has not started never starts (the worker checks,
once it holds the session's lock, whether its caller is still waiting); a write
that has started completes, atomically, and its result is discarded. So a
cancelled call never leaves a torn file, a half-applied append or a held lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sessionstore.appendlog import AppendResult
from sessionstore.ids import is_valid_session_id
from sessionstore.models import StoredSession
from sessionstore.store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SESSION_DIR,
    BackendSessionStore,
    MemorySessionStore,
    SessionStore,
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


class _Abandoned(Exception):
    """Raised in a worker whose caller was cancelled before its write started."""


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

    async def exists(self, session_id: str) -> bool:
        """As ``SessionStore.exists``."""
        return await self._read(lambda: self.sync.exists(session_id))

    async def list(self) -> list[str]:
        """As ``SessionStore.list``."""
        return await self._read(self.sync.list)

    async def delete(self, session_id: str) -> bool:
        """As ``SessionStore.delete``."""
        return await self._write(session_id, lambda: self.sync.delete(session_id))

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

        An async ``fn`` runs on the caller's loop while a worker holds the session's
        lock; if the call is cancelled while ``fn`` runs, ``fn`` is cancelled too and
        nothing is written.
        """
        loop = asyncio.get_running_loop()
        running: list[concurrent.futures.Future[StoredSession]] = []
        cancelled = threading.Event()
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
        """Run a write in a worker under the session's lock, unless cancelled before it
        started; a started write completes even if its caller is cancelled."""
        abandoned = threading.Event()
        backend = self.sync.backend

        def work() -> T:
            if not is_valid_session_id(session_id):
                return call()  # refused by the sync call, before any lock or I/O
            # The sync call takes this (re-entrant) lock again: holding it here first
            # makes "has it started?" one question, asked once the lock is had.
            with backend.lock(str(session_id)):
                if abandoned.is_set():
                    raise _Abandoned
                return call()

        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            abandoned.set()
            if on_cancel is not None:
                on_cancel()
            future.add_done_callback(_consume)
            raise

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
