"""``PostgresSessionStore``: validated, versioned sessions in a PostgreSQL table.

Needs the ``postgres`` extra (from a checkout: ``pip install '.[postgres]'``). Not
imported by ``import sessionstore``; import it from here. ``AsyncPostgresSessionStore``
(the async API, ``sessionstore.asyncpostgres``) is importable from here too, loaded on
first use.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from sessionstore.backends.postgres import PostgresBackend
from sessionstore.store import DEFAULT_MAX_BYTES, BackendSessionStore

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from sessionstore.asyncpostgres import AsyncPostgresSessionStore

__all__ = ["AsyncPostgresSessionStore", "PostgresBackend", "PostgresSessionStore"]


def __getattr__(name: str) -> Any:
    # The async store (and greenlet, which it needs) loads only when asked for.
    if name != "AsyncPostgresSessionStore":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    from sessionstore.asyncpostgres import AsyncPostgresSessionStore  # noqa: PLC0415

    return AsyncPostgresSessionStore


class PostgresSessionStore(BackendSessionStore):
    """Sessions as rows of one PostgreSQL table, shared by every process and machine.

    ``dsn_or_pool`` is a connection string (``postgresql://user@host:5432/db``; the
    store opens a pool of at most ``max_size`` connections and ``close`` closes it)
    or a ``psycopg_pool.ConnectionPool`` (borrowed, never closed). Same methods and
    errors as ``SessionStore``. Every write of a session (``save``, ``create``,
    ``delete``, ``update``, ``append_messages``) holds the session's lock, a
    transaction-scoped advisory lock keyed by the table and the id, so no
    acknowledged write is lost across processes and machines.

    ``lock_timeout`` bounds the wait for that lock (``LockTimeoutError``);
    ``timeout`` bounds every other wait for the server (``SessionReadError``,
    ``SessionWriteError``, or ``CommitUnknownError`` when the answer to a COMMIT
    was lost); None waits without bound. Call ``setup()`` once to create the
    table; nothing is created on import or construction. Raises ``ValueError``
    for a bad argument, including a connection string libpq cannot parse.
    """

    backend: PostgresBackend

    def __init__(
        self,
        dsn_or_pool: str | ConnectionPool[Any],
        *,
        table: str = "sessions",
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float | None = 30.0,
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        max_size: int = 10,
    ) -> None:
        super().__init__(
            PostgresBackend(
                dsn_or_pool,
                table=table,
                lock_timeout=lock_timeout,
                timeout=timeout,
                connect_timeout=connect_timeout,
                max_size=max_size,
            ),
            max_bytes=max_bytes,
        )

    @property
    def table(self) -> str:
        """The table name, as given."""
        return self.backend.table

    def setup(self) -> None:
        """Create the table if it does not exist; idempotent. Raises ``SessionWriteError``."""
        self.backend.setup()

    def close(self) -> None:
        """Close the connections the store opened; a borrowed pool stays open."""
        self.backend.close()

    def __enter__(self) -> PostgresSessionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
