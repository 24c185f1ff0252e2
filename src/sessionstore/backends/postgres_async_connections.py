"""Connections of the async PostgreSQL backend: psycopg's async ones, seen as sync ones.

``BridgedConnection`` and ``BridgedPool`` have the sync methods ``PostgresBackend`` and
``ConnectionSource`` call (``execute``, ``pipeline``, ``rollback``, ``getconn``, ...)
and await psycopg's async ones through ``greenbridge.await_``: so they work only inside
a call driven by ``greenbridge.drive``, hold no thread, and never block the loop.
``AsyncConnectionSource`` is ``ConnectionSource`` over an ``AsyncConnectionPool``.

Which waits may be abandoned (see ``greenbridge``): taking a connection from the pool,
starting a pipeline (BEGIN, the lock, a statement and COMMIT go together) and a
statement outside a pipeline (a read, a statement inside a lock transaction, its
COMMIT). Once a pipeline is sent it is waited for; if the caller went meanwhile, the
server is asked to cancel what it runs (a lock wait, a statement), so the transaction
rolls back, unless its COMMIT was already being done; that connection is then closed
rather than pooled, so a late cancel never hits its next user. The same goes for a
statement sent alone inside a transaction (a lock wait where libpq has no pipelines);
a read outside a transaction, a COMMIT sent alone, a rollback and giving a connection
back are always waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sessionstore.backends.greenbridge import await_
from sessionstore.backends.postgres_connections import (
    Connection,
    ConnectionSource,
    deadline,
)

__all__ = ["AsyncConnectionSource", "BridgedConnection", "BridgedPool"]

AsyncConnection = psycopg.AsyncConnection[Any]

_CANCEL_SECONDS = 5.0
"""Bound of a cancel request's own exchange with the server."""

_COMMIT = sql.SQL("COMMIT")

_CANCELS: set[asyncio.Future[None]] = set()
"""Cancel requests under way (kept referenced until they end)."""


class _BridgedCursor:
    """A cursor of an async connection, with the sync cursor's reading methods."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._cursor = cursor

    @property
    def statusmessage(self) -> str | None:
        return self._cursor.statusmessage

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return await_(self._cursor.fetchone())

    def fetchall(self) -> list[Any]:
        return await_(self._cursor.fetchall())


class BridgedConnection:
    """An ``AsyncConnection`` with the sync methods ``PostgresBackend`` and
    ``ConnectionSource`` call; one per async connection (``of``)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.async_connection = connection
        self.poisoned = False  # a cancel request was sent: never pool it again
        self._pipelines = 0

    @classmethod
    def of(cls, connection: AsyncConnection) -> BridgedConnection:
        """The bridged face of ``connection`` (the same object every time)."""
        bridged: BridgedConnection | None = getattr(connection, "_sessionstore_bridged", None)
        if bridged is None:
            bridged = cls(connection)
            connection._sessionstore_bridged = bridged  # type: ignore[attr-defined]
        return bridged

    @property
    def info(self) -> Any:
        return self.async_connection.info

    @property
    def pgconn(self) -> Any:
        return self.async_connection.pgconn

    @property
    def broken(self) -> bool:
        return self.async_connection.broken

    @property
    def closed(self) -> bool:
        return self.async_connection.closed

    @property
    def autocommit(self) -> bool:
        return self.async_connection.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        await_(self.async_connection.set_autocommit(value))

    def execute(self, query: Any, params: Any = None, **options: Any) -> _BridgedCursor:
        """As ``Connection.execute``. Outside a pipeline, a call whose caller is gone
        stops before sending it; if it goes while a statement of a transaction other
        than COMMIT runs (a lock wait, without pipelines), the server is asked to
        cancel it. A read outside a transaction, or a COMMIT, completes."""
        outside = self._pipelines == 0  # inside, the statement only joins the batch
        interruptible = (
            outside
            and self.async_connection.info.transaction_status != TransactionStatus.IDLE
            and query != _COMMIT
        )
        cursor = await_(
            self.async_connection.execute(query, params, **options),
            abortable=outside,
            interrupt=self._interrupt if interruptible else None,
        )
        return _BridgedCursor(cursor)

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """As ``Connection.pipeline``: a call whose caller is gone stops before it starts;
        once started, it is waited for to its end."""
        manager = self.async_connection.pipeline()
        await_(manager.__aenter__(), abortable=True)
        self._pipelines += 1
        try:
            yield
        except BaseException:
            self._pipelines -= 1
            if not await_(manager.__aexit__(*sys.exc_info()), interrupt=self._interrupt):
                raise
        else:
            self._pipelines -= 1
            await_(manager.__aexit__(None, None, None), interrupt=self._interrupt)

    def rollback(self) -> None:
        await_(self.async_connection.rollback())

    def close(self) -> None:
        await_(self.async_connection.close())

    def _interrupt(self) -> None:
        """The caller went during a wait: ask the server to cancel what it runs (the
        lock wait, a statement; a COMMIT under way completes)."""
        if self.poisoned or self.closed:
            return
        self.poisoned = True
        task = asyncio.ensure_future(self._cancel())
        _CANCELS.add(task)
        task.add_done_callback(_CANCELS.discard)

    async def _cancel(self) -> None:
        # A failed request changes nothing: the connection's own error says the rest.
        with contextlib.suppress(psycopg.Error, OSError):
            connection = self.async_connection
            if hasattr(connection, "cancel_safe"):  # psycopg >= 3.2
                await connection.cancel_safe(timeout=_CANCEL_SECONDS)
            else:  # pragma: no cover - older psycopg: its blocking cancel, off the loop
                await asyncio.get_running_loop().run_in_executor(None, connection.cancel)


class BridgedPool:
    """An ``AsyncConnectionPool`` with the sync pool methods ``ConnectionSource`` calls."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, opened: bool) -> None:
        self.async_pool = pool
        self._opening: asyncio.Future[None] | None = None
        self._opened = opened
        self._failures = asyncio.Event()  # set (and replaced) when an attempt to connect fails

    def connect_failed(self) -> None:
        """Wake the waiters: ``getconn`` raises ``PoolTimeout`` (the source says why)."""
        failures, self._failures = self._failures, asyncio.Event()
        failures.set()

    @property
    def conninfo(self) -> object:
        return self.async_pool.conninfo

    def getconn(self, timeout: float | None = None) -> BridgedConnection:
        """A connection of the pool, first come first served; a call whose caller is
        gone stops before asking. Raises ``PoolTimeout`` after ``timeout`` or as soon
        as an attempt to connect fails."""
        connection = await_(self._getconn(timeout), abortable=True)
        return BridgedConnection.of(connection)

    async def _getconn(self, timeout: float | None) -> AsyncConnection:
        if not self._opened:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self.async_pool.open())
            await asyncio.shield(self._opening)
            self._opened = True
        getting = asyncio.ensure_future(self.async_pool.getconn(timeout=timeout))
        failing = asyncio.ensure_future(self._failures.wait())
        try:
            await asyncio.wait((getting, failing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            failing.cancel()
        if not getting.done():
            getting.cancel()  # the pool keeps (or takes back) what it was about to give
            raise PoolTimeout("an attempt to connect failed")
        connection: AsyncConnection = getting.result()
        return connection

    def putconn(self, connection: BridgedConnection) -> None:
        """Give ``connection`` back; one a cancel request was sent on is closed first
        (the pool then replaces it)."""
        if connection.poisoned and not connection.closed:
            await_(connection.async_connection.close())
        await_(self.async_pool.putconn(connection.async_connection))

    def close(self) -> None:
        await_(self.async_pool.close())

    def get_stats(self) -> dict[str, int]:
        return self.async_pool.get_stats()


class AsyncConnectionSource(ConnectionSource):
    """``ConnectionSource`` over an ``AsyncConnectionPool`` (opened here, or lent).

    A caller waits for a connection in one piece, in the pool's queue (first come,
    first served: a thousand tasks never starve one another), and is woken at once
    when an attempt to connect fails.
    """

    slice = None

    def __init__(self, conninfo_or_pool: str | AsyncConnectionPool[Any], **options: Any) -> None:
        if isinstance(conninfo_or_pool, AsyncConnectionPool):
            lent: Any = BridgedPool(conninfo_or_pool, opened=True)
            super().__init__(lent, **options)
        elif isinstance(conninfo_or_pool, str):
            super().__init__(conninfo_or_pool, **options)
        else:
            msg = (
                "dsn_or_pool must be a connection string or a psycopg_pool.AsyncConnectionPool,"
                f" not {type(conninfo_or_pool).__name__}"
            )
            raise TypeError(msg)

    def _open_pool(self) -> Any:
        assert self._conninfo is not None  # a lent pool is never reopened
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self._conninfo,
            open=False,
            check=self._check_async,
            **self._pool_options(_recording_class(self)),
        )
        return BridgedPool(pool, opened=False)

    def _connect_failed(self, exc: BaseException) -> None:
        super()._connect_failed(exc)
        pool = cast(Any, self._pool)
        if isinstance(pool, BridgedPool):
            pool.connect_failed()

    async def _check_async(self, connection: AsyncConnection) -> None:
        """The pool's check of a connection before handing it out, within a deadline;
        a failed one drains the idle connections (see ``ConnectionSource._check``)."""
        try:
            with deadline(cast(Connection, connection), self._check_seconds):
                await AsyncConnectionPool.check_connection(connection)
        except Exception:
            pool = cast(Any, self._pool)
            drain = (
                getattr(pool.async_pool, "drain", None) if isinstance(pool, BridgedPool) else None
            )
            if drain is not None:  # psycopg_pool >= 3.3
                await drain()
            raise


def _recording_class(source: ConnectionSource) -> type[AsyncConnection]:
    """An async connection class that tells ``source`` how its last connection attempt
    went (the pool connects in a task of its own, out of the caller's sight)."""
    ref = weakref.ref(source)

    class RecordingAsyncConnection(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> RecordingAsyncConnection:
            try:
                conn = await super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                if (owner := ref()) is not None:
                    owner._connect_failed(exc)
                raise
            if (owner := ref()) is not None:
                owner._connect_succeeded()
            return conn

    return RecordingAsyncConnection
