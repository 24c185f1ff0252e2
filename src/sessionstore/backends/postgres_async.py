"""The PostgreSQL backend on psycopg's async connections and async pool, through the bridge.

``AsyncPostgresBackend`` is ``PostgresBackend`` itself (every statement, lock,
transaction, error and message), with two seams filled differently:

- its connections come from an ``AsyncConnectionPool``, seen as sync ones
  (``postgres_async_connections``): so it only works inside a call driven by
  ``greenbridge.drive`` (what ``AsyncPostgresSessionStore`` does);
- its open lock transactions are those of the current call (and of the ``update``
  whose function made it), not of the thread: every call on the loop shares the thread.
"""

from __future__ import annotations

from typing import Any

from sessionstore.backends import postgres as _postgres
from sessionstore.backends.greenbridge import current_call
from sessionstore.backends.postgres import PostgresBackend
from sessionstore.backends.postgres_async_connections import AsyncConnectionSource
from sessionstore.backends.postgres_connections import ConnectionSource

__all__ = ["AsyncPostgresBackend", "CallState"]


class CallState:
    """What one driven call keeps: the lock transactions open in it (``_Held``), the
    ones of the ``update`` whose function made it first."""

    __slots__ = ("stack",)

    def __init__(self, stack: list[Any]) -> None:
        self.stack = stack


class AsyncPostgresBackend(PostgresBackend):
    """``PostgresBackend`` on async connections: usable only inside a driven call
    (``AsyncPostgresSessionStore`` drives every call). ``conninfo_or_pool`` is a
    connection string or a ``psycopg_pool.AsyncConnectionPool`` (lent: never closed
    here, and the lender opens it)."""

    def _connection_source(self, conninfo_or_pool: Any, **options: Any) -> ConnectionSource:
        return AsyncConnectionSource(conninfo_or_pool, **options)

    def _held_stack(self) -> list[_postgres._Held]:
        stack: list[_postgres._Held] = current_call().state.stack
        return stack

    def __repr__(self) -> str:
        return f"AsyncPostgresBackend({self._where!r}, table={self.table!r})"
