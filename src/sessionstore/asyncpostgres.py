"""``AsyncPostgresSessionStore``: ``PostgresSessionStore``'s sessions, native async.

Needs the ``postgres`` extra (psycopg 3, psycopg_pool and greenlet). Not imported by
``import sessionstore``; ``sessionstore.AsyncPostgresSessionStore`` and
``sessionstore.postgres.AsyncPostgresSessionStore`` load it on first use.

One implementation of the rules. Each call runs the sync store's own code
(``BackendSessionStore`` over ``PostgresBackend``: validation, ids, encoding,
migration, the append log, the write transactions and their advisory locks) in a
greenlet; every wait for the server is awaited on the loop through psycopg's async
connections and ``AsyncConnectionPool`` (``backends.greenbridge``,
``backends.postgres_async``). No thread per call, nothing blocks the loop: a lock wait
is a ``pg_advisory_xact_lock`` wait on the server, bounded by ``lock_timeout`` there,
as in the sync store. Sync and async stores on one table exclude each other.

Async ``update`` functions. A plain ``fn`` runs in a worker thread (the loop goes
on meanwhile); an async ``fn`` is awaited on the loop (in a copy of the caller's
context) while the call holds the session's lock transaction. The store's calls it
makes (and those of tasks it starts) join that transaction, as calls made by a sync
``update``'s function join its thread's, and take turns on it; the update waits for
them before it writes.

Cancellation (``task.cancel()``, ``asyncio.timeout``): the caller is released at
once; what its call had started goes on in the background (``close`` waits for it),
and ends so:

- not started (waiting for a connection, or before its transaction or statement was
  sent): it never starts;
- inside a transaction (a lock held by ``update``, ``append``, ...; an async ``fn``
  running, which is cancelled): the transaction is rolled back, so nothing is
  written, and the lock is released;
- its statements sent (BEGIN, lock, write, COMMIT travel together): the server is
  asked to cancel them, so a wait for the lock ends and nothing is written; if the
  COMMIT was already under way, the write completes and its result is discarded.
  That connection is then closed, not pooled.

So a cancelled call never leaves a half-applied write or a held lock, and an
acknowledged one is never undone.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from sessionstore.appendlog import AppendResult
from sessionstore.backends.greenbridge import Abandoned, Driven, await_, current_call, drive
from sessionstore.backends.postgres_async import AsyncPostgresBackend, CallState
from sessionstore.codec import DecodedSession
from sessionstore.models import StoredSession
from sessionstore.store import DEFAULT_MAX_BYTES, BackendSessionStore

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["AsyncPostgresSessionStore"]

T = TypeVar("T")

UpdateFunction = Callable[[StoredSession], StoredSession | Awaitable[StoredSession]]


class _Scope:
    """Where an async ``update`` function runs: the update's lock transactions (its
    calls join them) and the turns its calls take on them."""

    __slots__ = ("open", "stack", "turn")

    def __init__(self, stack: builtins.list[Any]) -> None:
        self.stack = stack
        self.turn = asyncio.Lock()
        self.open = True  # False once the function returned: later calls are on their own


_SCOPE: ContextVar[_Scope | None] = ContextVar("sessionstore_async_pg_scope", default=None)


class AsyncPostgresSessionStore:
    """Sessions as rows of one PostgreSQL table, with ``PostgresSessionStore``'s methods,
    arguments, results and errors, as coroutines (see the module docstring).

    ``dsn_or_pool`` is a connection string (the store opens an ``AsyncConnectionPool``
    of at most ``max_size`` connections; ``close`` closes it) or a
    ``psycopg_pool.AsyncConnectionPool`` (lent: opened by the lender, never closed
    here). The other arguments are ``PostgresSessionStore``'s. Call ``await setup()``
    once to create the table. Use ``async with`` (or ``await close()``). Raises
    ``ValueError`` for a bad argument, ``TypeError`` for a pool of another kind.
    """

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        *,
        table: str = "sessions",
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float | None = 30.0,
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        max_size: int = 10,
    ) -> None:
        backend = AsyncPostgresBackend(
            dsn_or_pool,  # type: ignore[arg-type]  # an async pool: see postgres_async
            table=table,
            lock_timeout=lock_timeout,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_size=max_size,
        )
        self.sync = BackendSessionStore(backend, max_bytes=max_bytes)
        """The sync store whose code every call runs (on the loop, through the bridge:
        its methods cannot be called from sync code)."""
        self._running: set[asyncio.Future[Any]] = set()

    @property
    def backend(self) -> AsyncPostgresBackend:
        return self.sync.backend  # type: ignore[return-value]  # built in __init__

    @property
    def table(self) -> str:
        """The table name, as given."""
        return self.backend.table

    @property
    def max_bytes(self) -> int:
        return self.sync.max_bytes

    async def setup(self) -> None:
        """As ``PostgresSessionStore.setup``: create the tables if they do not exist."""
        await self._call(self.backend.setup)

    async def save(self, session: StoredSession, *, if_match: str | None = None) -> str:
        """As ``PostgresSessionStore.save``."""
        return await self._call(lambda: self.sync.save(session, if_match=if_match))

    async def create(self, session: StoredSession) -> str:
        """As ``PostgresSessionStore.create``."""
        return await self._call(lambda: self.sync.create(session))

    async def load(self, session_id: str) -> StoredSession:
        """As ``PostgresSessionStore.load``."""
        return await self._call(lambda: self.sync.load(session_id))

    async def load_with_etag(self, session_id: str) -> tuple[StoredSession, str]:
        """As ``PostgresSessionStore.load_with_etag``."""
        return await self._call(lambda: self.sync.load_with_etag(session_id))

    async def load_document(self, session_id: str) -> DecodedSession:
        """As ``PostgresSessionStore.load_document`` (for tools: the etag, version,
        records and append keys with the session)."""
        return await self._call(lambda: self.sync.load_document(session_id))

    async def exists(self, session_id: str) -> bool:
        """As ``PostgresSessionStore.exists``."""
        return await self._call(lambda: self.sync.exists(session_id))

    async def list(self) -> builtins.list[str]:
        """As ``PostgresSessionStore.list``."""
        return await self._call(self.sync.list)

    async def delete(self, session_id: str) -> bool:
        """As ``PostgresSessionStore.delete`` (every failure a ``SessionDeleteError``)."""
        return await self._call(lambda: self.sync.delete(session_id))

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
        """As ``PostgresSessionStore.append``."""
        return await self._call(
            lambda: self.sync.append(
                session_id,
                messages,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                key=key,
                if_match=if_match,
            )
        )

    async def append_messages(
        self,
        session_id: str,
        messages: Iterable[str],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> StoredSession:
        """As ``PostgresSessionStore.append_messages``."""
        return await self._call(
            lambda: self.sync.append_messages(
                session_id, messages, input_tokens=input_tokens, output_tokens=output_tokens
            )
        )

    async def compact(self, session_id: str) -> str:
        """As ``PostgresSessionStore.compact``."""
        return await self._call(lambda: self.sync.compact(session_id))

    async def update(self, session_id: str, fn: UpdateFunction) -> StoredSession:
        """As ``PostgresSessionStore.update``; ``fn`` may be a plain or an async function.

        The session's lock is held from the load to the write. An async ``fn`` runs
        on the loop, and the store's calls it makes join the update's transaction
        (see the module docstring); a plain ``fn`` runs in a worker thread (as with
        the folder store: it may block, and call other stores, without stalling the
        loop). If ``fn`` raises, or the call is cancelled while it runs (an async
        ``fn`` is cancelled too), nothing is written and the lock is released.
        """

        def apply(current: StoredSession) -> StoredSession:
            result: StoredSession | Awaitable[StoredSession]
            if inspect.iscoroutinefunction(fn):
                result = fn(current)
            else:
                done: Awaitable[StoredSession | Awaitable[StoredSession]]
                done = asyncio.get_running_loop().run_in_executor(None, fn, current)
                result = await_(done, own=True)
            if not inspect.isawaitable(result):
                return result
            call = current_call()
            try:
                awaited: StoredSession = await_(
                    _run_function(result, builtins.list(call.state.stack)), own=True
                )
            except BaseException:
                if inspect.iscoroutine(result):
                    result.close()  # cancelled before it started: it never will
                raise
            return awaited

        return await self._call(lambda: self.sync.update(session_id, apply))

    async def close(self) -> None:
        """Let the calls under way (those of cancelled callers too) end, then close the
        connections the store opened (a lent pool stays open)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        await self._call(self.backend.close)

    async def __aenter__(self) -> AsyncPostgresSessionStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (the sync code) as a driven call, in a task of its own so that a
        cancelled caller leaves it to end as the module docstring says."""
        scope = _SCOPE.get()
        if scope is not None and not scope.open:
            scope = None  # a task the function left behind, after the update: not joined
        call: Driven[T] = Driven(fn, CallState(builtins.list(scope.stack) if scope else []))
        driver = asyncio.ensure_future(_driven(call, scope))
        self._running.add(driver)
        driver.add_done_callback(self._running.discard)
        try:
            return await asyncio.shield(driver)
        except asyncio.CancelledError:
            if not driver.done():
                call.abandon()
                driver.add_done_callback(_consume)
            raise

    def __repr__(self) -> str:
        return f"AsyncPostgresSessionStore({self.backend._where!r}, table={self.table!r})"


async def _driven(call: Driven[T], scope: _Scope | None) -> T:
    """Drive ``call``; a call made by an async ``update`` function first takes its turn."""
    try:
        if scope is None:
            return await drive(call)
        async with scope.turn:
            return await drive(call)
    except Abandoned:
        raise asyncio.CancelledError from None  # its caller is gone: nobody reads this


async def _run_function(awaitable: Awaitable[T], stack: builtins.list[Any]) -> T:
    """Await an ``update`` function where its store calls join the update's
    transactions; return once they (and those of tasks it started) are done."""
    scope = _Scope(stack)
    _SCOPE.set(scope)  # this task's own context: fn and the tasks it starts see it
    try:
        return await awaitable
    finally:
        async with scope.turn:  # the calls fn left running have ended
            scope.open = False


def _consume(future: asyncio.Future[Any]) -> None:
    # The caller is gone: take the outcome so asyncio does not log it as never retrieved.
    if not future.cancelled():
        future.exception()
