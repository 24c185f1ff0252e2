"""Sessions as rows of one PostgreSQL table: for applications on many machines.

Needs the ``postgres`` extra (``pip install 'sessionstore[postgres]'``); importing
this module without psycopg raises an ``ImportError`` that says so.

One row per session: ``id`` (primary key), ``schema_version``, ``document`` (the
exact encoded bytes), ``etag`` (``content_etag`` of those bytes, so etags agree
with every other backend) and ``updated_at``. Conditional writes are single
statements; ``lock`` is a transaction holding ``pg_advisory_xact_lock``, and the
reads and writes made inside it (in the same thread) run in that transaction.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import orjson

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - exercised by a sys.modules test
    raise ImportError(
        "the PostgreSQL backend of sessionstore needs psycopg 3: "
        "pip install 'sessionstore[postgres]'",
        name=exc.name,
    ) from exc

from sessionstore.backends.base import content_etag
from sessionstore.errors import (
    ConflictError,
    LockTimeoutError,
    SessionDeleteError,
    SessionReadError,
    SessionStoreError,
    SessionTooLargeError,
    SessionWriteError,
)
from sessionstore.ids import is_valid_session_id

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["PostgresBackend", "validate_table_name"]

Connection = psycopg.Connection[Any]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MAX_IDLE = 8


def validate_table_name(table: str) -> tuple[str, ...]:
    """Split ``table`` (``name`` or ``schema.name``) into identifiers.

    Raises ``ValueError`` unless every part is a plain SQL identifier (letters,
    digits and ``_``, not starting with a digit, at most 63 characters).
    """
    parts = tuple(table.split(".")) if isinstance(table, str) else ()
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        msg = (
            f"table must be an identifier like 'sessions' or 'myschema.sessions' "
            f"(letters, digits, _; at most 63 characters), not {table!r}"
        )
        raise ValueError(msg)
    return parts


_LEADING_VERSION = re.compile(rb'\{\s*"schema_version":\s*([1-9][0-9]{0,8})\s*,')


def schema_version_of(data: bytes) -> int | None:
    """The ``schema_version`` of an encoded document (absent means 1), or None if unreadable.

    The codec writes ``schema_version`` as the first key, so the column is filled from
    that prefix without parsing a large document; anything else is parsed whole.
    The column is for operators' queries; loading always reads the document itself.
    """
    leading = _LEADING_VERSION.match(data)
    if leading is not None:
        return int(leading[1])
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    version = doc.get("schema_version", 1)
    if type(version) is not int or not 1 <= version < 2**31:
        return None
    return version


class _Source(Protocol):
    def connection(self) -> Any: ...


class _OwnConnections:
    """A small pool of autocommit connections opened from a conninfo string."""

    def __init__(self, conninfo: str, connect_timeout: float) -> None:
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self._idle: list[Connection] = []
        self._orphans: list[Connection] = []  # inherited through fork: never touched
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _take(self) -> Connection:
        with self._mutex:
            if self._closed:
                raise psycopg.InterfaceError("the store was closed")
            self._check_pid()
            if self._idle:
                return self._idle.pop()
        timeout = max(1, round(self.connect_timeout))
        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=timeout)

    def _give_back(self, conn: Connection) -> None:
        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )
        with self._mutex:
            self._check_pid()
            if reusable and not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            # A forked child must not use (or close) its parent's sockets.
            self._orphans.extend(self._idle)
            self._idle = []
            self._pid = os.getpid()

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            self._check_pid()
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Held(threading.local):
    """The lock transaction of the current thread: its connection and the ids it holds."""

    conn: Connection | None = None
    counts: dict[str, int]

    def __init__(self) -> None:
        self.counts = {}


class PostgresBackend:
    """Documents as rows of ``table`` in PostgreSQL. Thread-safe; safe across processes.

    ``conninfo_or_pool`` is a libpq connection string / URL (the backend opens and
    reuses its own connections; ``close`` closes them) or a
    ``psycopg_pool.ConnectionPool`` (borrowed, never closed here). ``lock_timeout``
    bounds the wait for a session's lock; ``connect_timeout`` the wait for a new
    connection. Call ``setup`` once to create the table.
    """

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any],
        *,
        table: str = "sessions",
        lock_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        parts = validate_table_name(table)
        if lock_timeout <= 0:
            msg = f"lock_timeout must be positive, not {lock_timeout}"
            raise ValueError(msg)
        self.table = table
        self.lock_timeout = lock_timeout
        self._ident = sql.Identifier(*parts)
        self._lock_namespace = hashlib.blake2b(table.encode(), digest_size=8).digest()
        self._source: _Source
        if isinstance(conninfo_or_pool, str):
            self._owned: _OwnConnections | None = _OwnConnections(conninfo_or_pool, connect_timeout)
            self._source = self._owned
            conninfo = conninfo_or_pool
        else:
            self._owned = None
            self._source = conninfo_or_pool
            conninfo = str(getattr(conninfo_or_pool, "conninfo", ""))
        self._where = _describe(conninfo)
        self._held = _Held()
        self._sql = self._statements()

    # -- messages ---------------------------------------------------------------

    @property
    def description(self) -> str:
        return f"PostgreSQL table {self.table!r} at {self._where}"

    def location(self, session_id: str) -> str:
        return f"{self.description}, id {session_id!r}"

    # -- schema -----------------------------------------------------------------

    def setup(self) -> None:
        """Create the table if it does not exist (idempotent; safe to run concurrently).

        Raises ``SessionWriteError`` when the server cannot be reached or refuses.
        """
        create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " id text PRIMARY KEY,"
            " schema_version integer,"
            " document bytea NOT NULL,"
            " etag text NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(t=self._ident)
        # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog;
        # an advisory lock on the table name serialises the setups.
        with (
            self._errors(SessionWriteError, "create the table", None),
            self._conn() as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._key("")])
            conn.execute(create)

    def drop(self) -> None:
        """Drop the table and every session in it (for tests). Raises ``SessionWriteError``."""
        statement = sql.SQL("DROP TABLE IF EXISTS {t}").format(t=self._ident)
        with self._errors(SessionWriteError, "drop the table", None), self._conn() as conn:
            conn.execute(statement)

    def close(self) -> None:
        """Close the connections this backend opened (a borrowed pool is left open)."""
        if self._owned is not None:
            self._owned.close()

    # -- the Backend protocol -----------------------------------------------------

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        held = self._held
        if held.conn is not None:
            # Re-entrant: the thread's transaction already runs; add this id to it.
            if session_id not in held.counts:
                with self._errors(LockTimeoutError, "lock", session_id):
                    held.conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._key(session_id)])
            # Counts may drop to 0: the advisory lock itself stays until the transaction ends.
            held.counts[session_id] = held.counts.get(session_id, 0) + 1
            try:
                yield
            finally:
                held.counts[session_id] -= 1
            return

        with self._lock_transaction(session_id):
            yield

    @contextmanager
    def _lock_transaction(self, session_id: str) -> Iterator[None]:
        held = self._held
        body_failed = False
        try:
            with self._conn() as conn, conn.transaction():
                millis = max(1, round(self.lock_timeout * 1000))
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(millis)))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._key(session_id)])
                held.conn = conn
                held.counts = {session_id: 1}
                try:
                    yield
                except BaseException:
                    body_failed = True
                    raise
                finally:
                    held.conn = None
                    held.counts = {}
        except pg_errors.LockNotAvailable as exc:
            raise self._lock_timeout(session_id) from exc
        except psycopg.Error as exc:
            if body_failed:
                raise
            raise self._error(
                SessionWriteError, "lock or commit", session_id, exc, may_have_landed=True
            ) from exc

    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        with self._errors(SessionReadError, "read", session_id), self._conn() as conn:
            # binary: the document arrives as its bytes, not as hex text to decode.
            row = conn.execute(self._sql["read"], [max_bytes, session_id], binary=True).fetchone()
        if row is None:
            return None
        size, data = row
        if data is None:
            raise self._too_large(session_id, size, max_bytes)
        return bytes(data)

    def read_many(
        self, session_ids: Sequence[str], *, max_bytes: int
    ) -> dict[str, bytes | SessionTooLargeError]:
        """The documents of ``session_ids`` in one statement: bytes, or the error a
        ``read`` would raise for a document over ``max_bytes``; absent ids are left out.

        For batch jobs (``sessionstore validate/migrate --dsn``). Raises
        ``SessionReadError`` when the statement fails.
        """
        with self._errors(SessionReadError, "read a batch", None), self._conn() as conn:
            rows = conn.execute(self._sql["read_many"], [max_bytes, list(session_ids)]).fetchall()
        return {
            session_id: (
                bytes(data) if data is not None else self._too_large(session_id, size, max_bytes)
            )
            for session_id, size, data in rows
        }

    def _too_large(self, session_id: str, size: int, max_bytes: int) -> SessionTooLargeError:
        return SessionTooLargeError(
            f"session {session_id!r} in {self.location(session_id)}: is {size} bytes, "
            f"over the store's max_bytes of {max_bytes}; it was not read",
            session_id=session_id,
            path=self.location(session_id),
            size=size,
            max_bytes=max_bytes,
        )

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        etag = content_etag(data)
        params = [session_id, schema_version_of(data), data, etag]
        with self._errors(SessionWriteError, "write", session_id), self._conn() as conn:
            if if_match is None:
                conn.execute(self._sql["upsert"], params)
                return etag
            cursor = conn.execute(self._sql["update_if"], [*params[1:], session_id, if_match])
            if cursor.rowcount == 1:
                return etag
            row = conn.execute(self._sql["etag"], [session_id]).fetchone()
        found = None if row is None else row[0]
        raise ConflictError(
            f"session {session_id!r} in {self.location(session_id)} changed since it was read "
            f"(expected etag {if_match}, found {found or 'no session'}); nothing written",
            session_id=session_id,
            path=self.location(session_id),
        )

    def create(self, session_id: str, data: bytes) -> str:
        etag = content_etag(data)
        params = [session_id, schema_version_of(data), data, etag]
        with self._errors(SessionWriteError, "create", session_id), self._conn() as conn:
            cursor = conn.execute(self._sql["insert"], params)
        if cursor.rowcount != 1:
            raise ConflictError(
                f"session {session_id!r} already exists in {self.description}; nothing written",
                session_id=session_id,
                path=self.location(session_id),
            )
        return etag

    def delete(self, session_id: str) -> bool:
        with self._errors(SessionDeleteError, "delete", session_id), self._conn() as conn:
            cursor = conn.execute(self._sql["delete"], [session_id])
        return cursor.rowcount == 1

    def exists(self, session_id: str) -> bool:
        with self._errors(SessionReadError, "check", session_id), self._conn() as conn:
            row = conn.execute(self._sql["exists"], [session_id]).fetchone()
        return row is not None

    def list_ids(self) -> list[str]:
        with self._errors(SessionReadError, "list", None), self._conn() as conn:
            rows = conn.execute(self._sql["list"]).fetchall()
        return [row[0] for row in rows if is_valid_session_id(row[0])]

    # -- plumbing -----------------------------------------------------------------

    def _statements(self) -> dict[str, sql.Composed]:
        t = self._ident
        columns = "(id, schema_version, document, etag, updated_at)"
        values = "VALUES (%s, %s, %s, %s, now())"
        statements = {
            "read": "SELECT octet_length(document),"
            " CASE WHEN octet_length(document) <= %s THEN document END FROM {t} WHERE id = %s",
            "read_many": "SELECT id, octet_length(document),"
            " CASE WHEN octet_length(document) <= %s THEN document END FROM {t}"
            " WHERE id = ANY(%s)",
            "etag": "SELECT etag FROM {t} WHERE id = %s",
            "exists": "SELECT 1 FROM {t} WHERE id = %s",
            # Byte order ("C"), not the database's locale: the same order as sorted().
            "list": 'SELECT id FROM {t} ORDER BY id COLLATE "C"',
            "delete": "DELETE FROM {t} WHERE id = %s",
            "insert": f"INSERT INTO {{t}} {columns} {values} ON CONFLICT (id) DO NOTHING",
            "upsert": f"INSERT INTO {{t}} {columns} {values} ON CONFLICT (id) DO UPDATE SET"
            " schema_version = EXCLUDED.schema_version, document = EXCLUDED.document,"
            " etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at",
            "update_if": "UPDATE {t} SET schema_version = %s, document = %s, etag = %s,"
            " updated_at = now() WHERE id = %s AND etag = %s",
        }
        return {name: sql.SQL(text).format(t=t) for name, text in statements.items()}

    def _key(self, session_id: str) -> int:
        digest = hashlib.blake2b(
            session_id.encode(), digest_size=8, key=self._lock_namespace
        ).digest()
        return int.from_bytes(digest, "big", signed=True)

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        """The thread's lock transaction when it holds one, else a pooled connection."""
        if self._held.conn is not None:
            yield self._held.conn
            return
        with self._source.connection() as conn:
            yield conn

    @contextmanager
    def _errors(
        self, cls: type[SessionStoreError], action: str, session_id: str | None
    ) -> Iterator[None]:
        try:
            yield
        except pg_errors.LockNotAvailable as exc:
            raise self._lock_timeout(session_id) from exc
        except psycopg.Error as exc:
            raise self._error(cls, action, session_id, exc) from exc

    def _lock_timeout(self, session_id: str | None) -> LockTimeoutError:
        return LockTimeoutError(
            f"session {session_id!r} in {self.description}: lock not acquired within "
            f"{self.lock_timeout} s; another writer holds it (raise lock_timeout, or find "
            "the stuck client)",
            session_id=session_id,
            path=self.location(session_id) if session_id else self.description,
        )

    def _error(
        self,
        cls: type[SessionStoreError],
        action: str,
        session_id: str | None,
        exc: psycopg.Error,
        *,
        may_have_landed: bool = False,
    ) -> SessionStoreError:
        what = f"session {session_id!r}: " if session_id is not None else ""
        reason = str(exc).strip() or type(exc).__name__
        if isinstance(exc, pg_errors.UndefinedTable):
            reason = f"table {self.table!r} does not exist; call setup() first"
        elif isinstance(exc, pg_errors.QueryCanceled):
            reason = f"the statement timed out ({reason})"
        message = f"{what}cannot {action} in {self.description}: {reason}"
        if cls is SessionWriteError:
            message += (
                "; the commit may or may not have landed, but no document is half-written"
                if may_have_landed
                else "; nothing was written"
            )
        path = self.location(session_id) if session_id is not None else self.description
        return cls(message, session_id=session_id, path=path)

    def __repr__(self) -> str:
        return f"PostgresBackend({self._where!r}, table={self.table!r})"


def _describe(conninfo: str) -> str:
    """host:port/dbname of a conninfo, never its password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "<invalid conninfo>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or ""
    return f"{host}:{port}/{dbname}"
