"""Sessions as rows of one PostgreSQL table: for applications on many machines.

Needs the ``postgres`` extra (from a checkout: ``pip install '.[postgres]'``); importing
this module without psycopg raises an ``ImportError`` that says so.

One row per session: ``id`` (primary key), ``schema_version``, ``document`` (the
exact encoded bytes of its snapshot), ``etag`` (``content_etag`` of those bytes, so
etags agree with every other backend) and ``updated_at``; and the session's appended
record lines as rows of ``<table>_journal`` (see ``postgres_journal``): ``read``
returns the document followed by those lines, the bytes a session file would hold.
An append adds one row (one round trip, whatever the session's size); a save,
create, delete or fold replaces the document and clears the rows in the same
transaction.

The write contract. Every mutation of a session (save, conditional save, create,
delete, and the writes of ``update`` and ``append_messages``) runs in a
transaction that first takes ``pg_advisory_xact_lock(table oid, hashtext(id))``,
so it is serialized with every other mutation of that session, across threads,
processes, machines and store objects. Why this lock:

- advisory, not row locks: it exists for ids that have no row yet (a create, an
  append that creates, a save racing a delete), which ``SELECT ... FOR UPDATE``
  cannot lock without writing a placeholder row first;
- keyed by the table's oid, which the server resolves (``'"public"."t"'::regclass``):
  every spelling of one table (``t``, ``public.t``) takes the same lock, and two
  tables never share one. ``hashtext(id)`` is 32 bits: a collision only makes two
  sessions of a table share a lock, it never lets two writers of one session in;
- transaction-scoped: the write and the lock's release commit together, and the
  server drops the lock when a client dies, so it never goes stale.

``_write`` is the one place that runs a statement "in a write transaction holding
the session's lock". Alone, it is one round trip (pipeline mode: BEGIN, the
timeouts, the lock, the statement and COMMIT are sent together). Inside ``lock``
(what ``update`` and ``append_messages`` hold while they read and compute) it
joins the open transaction, and so does every PostgreSQL backend on the same
database in the same thread: a second store used inside ``update``'s function
does not wait for a lock its own thread holds. Such nested writes commit (or roll
back) with the outer transaction.

Timeouts. ``lock_timeout`` bounds the wait for a session's lock (server-side
``lock_timeout``); ``timeout`` bounds every other wait for the server: statements
are cancelled by the server after it (``statement_timeout``), and a connection
whose server does not answer within 1.5 x ``timeout`` (plus ``lock_timeout`` when
a lock is awaited) is broken by a watchdog (see ``postgres_connections``). When
the connection is lost after COMMIT was sent, the outcome is unknown and the
error is ``CommitUnknownError``, whose ``etag`` is what the session's etag is
if the write landed (a blind retry could apply it twice, or fail as a conflict).
"""

from __future__ import annotations

import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.pq import TransactionStatus

    from sessionstore.backends.postgres_connections import (
        Connection,
        ConnectionSource,
        NoConnectionError,
        deadline,
        scrub,
    )
    from sessionstore.backends.postgres_journal import (
        TAIL_WINDOW,
        JournalRows,
        TailCache,
        journal_name,
        line_link,
        split_rows,
        tail_is_enough,
    )
except ImportError as exc:  # pragma: no cover - exercised by a sys.modules test
    raise ImportError(
        "the PostgreSQL backend of sessionstore needs psycopg 3: install the postgres "
        "extra, from a checkout of sessionstore with python -m pip install '.[postgres]' "
        "(once sessionstore is published: pip install 'sessionstore[postgres]')",
        name=exc.name,
    ) from exc

from sessionstore.backends.base import content_etag
from sessionstore.errors import (
    CommitUnknownError,
    ConflictError,
    LockTimeoutError,
    SessionReadError,
    SessionStoreError,
    SessionTooLargeError,
    SessionWriteError,
)
from sessionstore.ids import is_valid_session_id
from sessionstore.records import CURRENT_PREFIX, FileTail

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["PostgresBackend", "check_seconds", "validate_table_name"]

T = TypeVar("T")
Cursor = psycopg.Cursor[Any]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_SETUP_KEY = int.from_bytes(b"sstsetup", "big", signed=True)
"""The advisory lock that serializes ``setup`` calls on a database (a table that does
not exist yet has no oid to key a lock on)."""


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


def check_seconds(name: str, value: object, *, zero: bool) -> float | None:
    """``value`` as a number of seconds: finite, >= 0 (> 0 unless ``zero``), or None
    for "no bound". Raises ``ValueError`` for anything else (bools, nan, inf, text)."""
    if value is None:
        return None
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero else value > 0)
    )
    if not ok:
        least = "0 or more" if zero else "more than 0"
        msg = (
            f"{name} must be a finite number of seconds, {least}, or None for no bound; "
            f"not {value!r}"
        )
        raise ValueError(msg)
    assert isinstance(value, int | float)  # narrowed above
    return float(value)


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


# -- the lock transactions of this thread ---------------------------------------------


class _Held:
    """A lock transaction open in this thread: its connection, where that came from,
    the database it is on, and the locks taken in it."""

    __slots__ = ("conn", "identity", "keys", "members", "pid", "source")

    def __init__(self, conn: Connection, source: object, identity: tuple[object, ...]) -> None:
        self.conn = conn
        self.source = source  # ConnectionSource.key
        self.identity = identity
        self.keys: set[tuple[str, str]] = set()  # (table as given, id)
        self.members: set[int] = set()  # id() of the backends that joined it
        self.pid = os.getpid()


class _Transactions(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Held] = []


_transactions = _Transactions()


def _forget_after_fork() -> None:
    # The forking thread's transactions belong to the parent's connections.
    _transactions.stack = []


os.register_at_fork(after_in_child=_forget_after_fork)

_identities: weakref.WeakKeyDictionary[Connection, tuple[object, ...]] = weakref.WeakKeyDictionary()
"""What makes two connections share a lock transaction: the same server instance
(start time, port), database, role and search_path."""

_IDENTITY = sql.SQL(
    "SELECT pg_postmaster_start_time(), current_setting('port'), current_database(),"
    " current_user, current_setting('search_path')"
)


_BEGIN = sql.SQL("BEGIN")
_COMMIT = sql.SQL("COMMIT")
_SET_TIMEOUTS = sql.SQL(
    "(SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)"
    " OFFSET 0) AS timeouts"
)
_SETUP_LOCK = sql.SQL("SELECT pg_advisory_xact_lock(%s) FROM {}").format(_SET_TIMEOUTS)


def _batch(conn: Connection) -> AbstractContextManager[object]:
    """Pipeline mode (the statements of the block travel together, one round trip),
    where libpq has it (14 and later; the binary package ships a recent one);
    else the same statements one round trip each."""
    return conn.pipeline() if _PIPELINES else nullcontext()


_PIPELINES = psycopg.Pipeline.is_supported()


def _milliseconds(seconds: float | None) -> str:
    """A PostgreSQL timeout setting: "0" (none) for None, else at least 1 ms."""
    return "0" if seconds is None else str(max(1, round(seconds * 1000)))


class PostgresBackend:
    """Documents as rows of ``table`` in PostgreSQL. Thread-safe; safe across processes.

    ``conninfo_or_pool`` is a libpq connection string / URL (the backend opens a pool
    of at most ``max_size`` connections; ``close`` closes it) or a
    ``psycopg_pool.ConnectionPool`` (borrowed, never closed here). ``lock_timeout``
    bounds the wait for a session's lock and ``timeout`` every other wait for the
    server (None: no bound); ``connect_timeout`` bounds opening a connection. Call
    ``setup`` once to create the table. Raises ``ValueError`` for a bad argument,
    including a connection string libpq cannot parse (never quoting it).
    """

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any],
        *,
        table: str = "sessions",
        lock_timeout: float | None = 30.0,
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        max_size: int = 10,
    ) -> None:
        parts = validate_table_name(table)
        self.lock_timeout = check_seconds("lock_timeout", lock_timeout, zero=True)
        self.timeout = check_seconds("timeout", timeout, zero=False)
        if check_seconds("connect_timeout", connect_timeout, zero=False) is None:
            msg = "connect_timeout must be a finite number of seconds, more than 0; not None"
            raise ValueError(msg)
        if type(max_size) is not int or max_size < 1:
            msg = f"max_size must be an int of at least 1, not {max_size!r}"
            raise ValueError(msg)
        self.table = table
        self.max_size = max_size
        self._ident = sql.Identifier(*parts)
        self._journal = sql.Identifier(*journal_name(parts))
        self._tails = TailCache()
        # The server resolves this to the table's oid, by the search_path for a bare name.
        regclass = sql.Literal(".".join(f'"{part}"' for part in parts))
        # Client-side bounds: after the server's own timeouts would have fired.
        self._answer = None if self.timeout is None else 1.5 * self.timeout
        self._lock_answer = (
            None
            if self._answer is None or self.lock_timeout is None
            else self.lock_timeout + self._answer
        )
        self._timeouts = [_milliseconds(self.lock_timeout), _milliseconds(self.timeout)]
        # One statement sets the transaction's timeouts, then waits for the lock: the
        # subquery (kept apart by OFFSET 0) runs before the lock is asked for.
        self._take_lock = sql.SQL(
            "SELECT pg_advisory_xact_lock({}::regclass::oid::int4, hashtext(%s)) FROM {}"
        ).format(regclass, _SET_TIMEOUTS)
        self._source = self._connection_source(
            conninfo_or_pool,
            max_size=max_size,
            connect_timeout=connect_timeout,
            timeout=self.timeout,
            check_seconds=self._answer,
        )
        self._where = self._source.description
        self._sql = self._statements()

    # -- messages ---------------------------------------------------------------

    @property
    def description(self) -> str:
        return f"PostgreSQL table {self.table!r} at {self._where}"

    def location(self, session_id: str) -> str:
        return f"{self.description}, id {session_id!r}"

    # -- seams of the async backend (``postgres_async``) ------------------------------

    def _connection_source(self, conninfo_or_pool: Any, **options: Any) -> ConnectionSource:
        """Where this backend's connections come from (the async backend's are bridged)."""
        return ConnectionSource(conninfo_or_pool, **options)

    def _held_stack(self) -> list[_Held]:
        """The lock transactions open in this flow of control: this thread's (the async
        backend's: this call's, and those of the ``update`` it runs inside)."""
        return _transactions.stack

    # -- schema -----------------------------------------------------------------

    def setup(self) -> None:
        """Create the table and its journal table if they do not exist (idempotent; safe to
        run concurrently). Run it again after upgrading from a version without appends:
        it adds the journal table to an existing table.

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
        # The journal of appended records (tables made by older versions get it here).
        create_journal = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {j} ("
            " id text NOT NULL,"
            " seq integer NOT NULL,"
            " hash text NOT NULL,"
            " line bytea NOT NULL,"
            " PRIMARY KEY (id, seq))"
        ).format(j=self._journal)
        action = "create the table"
        conn = self._get(SessionWriteError, action, None)
        try:
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog;
            # an advisory lock serializes the setups.
            with (
                self._exchange(conn, self._lock_answer, SessionWriteError, action, None),
                _batch(conn),
            ):
                conn.execute(_BEGIN)
                conn.execute(_SETUP_LOCK, [_SETUP_KEY, *self._timeouts])
                conn.execute(create)
                conn.execute(create_journal)
                commit = conn.execute(_COMMIT)
            self._check_committed(commit, action, None)
        finally:
            self._source.put(conn)

    def drop(self) -> None:
        """Drop the table and every session in it (for tests). Raises ``SessionWriteError``."""
        statement = sql.SQL("DROP TABLE IF EXISTS {t}, {j}").format(t=self._ident, j=self._journal)
        action = "drop the table"
        conn = self._get(SessionWriteError, action, None)
        try:
            with self._exchange(conn, self._lock_answer, SessionWriteError, action, None):
                conn.execute(statement)
        finally:
            self._source.put(conn)

    def close(self) -> None:
        """Close the connections this backend opened (a borrowed pool is left open)."""
        self._tails.clear()
        self._source.close()

    # -- the Backend protocol -----------------------------------------------------

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        """Hold the session's lock in a transaction; the reads and writes made inside
        (in this thread, by any backend on the same database) run in it and commit
        when the block ends, or roll back if it raises.

        Raises ``LockTimeoutError`` when the lock is not had within ``lock_timeout``,
        ``SessionWriteError`` when the server cannot be reached or the transaction
        fails (nothing written), and ``CommitUnknownError`` when the connection was
        lost after COMMIT was sent.
        """
        held, conn = self._join_or_connect(SessionWriteError, "lock", session_id)
        if held is not None:
            self._lock_in(held, session_id, "lock")
            yield
            return
        assert conn is not None  # either a transaction to join or a connection
        try:
            with (
                self._exchange(conn, self._lock_answer, SessionWriteError, "lock", session_id),
                _batch(conn),
            ):
                conn.execute(_BEGIN)
                self._queue_lock(conn, session_id)
                identity = _identities.get(conn)
                asked = None if identity is not None else conn.execute(_IDENTITY)
            if asked is not None:
                identity = _identities[conn] = _identity_row(asked)
            assert identity is not None  # known, or just asked
        except BaseException:
            self._source.put(conn)
            raise
        held = _Held(conn, self._source.key, identity)
        held.keys.add((self.table, session_id))
        held.members.add(id(self))
        self._held_stack().append(held)
        try:
            try:
                yield
            finally:
                stack = self._held_stack()
                if held in stack:
                    stack.remove(held)
        except BaseException:
            if held.pid == os.getpid():
                self._source.put(conn)  # rolls the transaction back
            raise
        if held.pid != os.getpid():
            msg = (
                f"session {session_id!r} in {self.description}: the process forked inside "
                "the lock; only the parent can finish the transaction (nothing was written here)"
            )
            raise SessionWriteError(msg, session_id=session_id, path=self.location(session_id))
        try:
            if conn.info.transaction_status == TransactionStatus.INERROR:
                msg = (
                    f"session {session_id!r}: cannot commit in {self.description}: a statement "
                    "inside the lock failed, so the transaction was rolled back; "
                    "nothing was written"
                )
                raise SessionWriteError(msg, session_id=session_id, path=self.location(session_id))
            with self._exchange(
                conn, self._answer, SessionWriteError, "commit", session_id, commit_sent=True
            ):
                commit = conn.execute(_COMMIT)
            self._check_committed(commit, "commit", session_id)
        finally:
            self._source.put(conn)

    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        with (
            self._reading(SessionReadError, "read", session_id) as conn,
            self._exchange(conn, self._answer, SessionReadError, "read", session_id),
        ):
            # binary: the document arrives as its bytes, not as hex text to decode.
            cursor = conn.execute(
                self._sql["read"], [max_bytes, max_bytes, session_id], binary=True
            )
            row = cursor.fetchone()
        if row is None:
            return None
        size, data, lines = row
        if data is None:
            raise self._too_large(session_id, size, max_bytes)
        return bytes(data) + bytes(lines) if lines else bytes(data)

    def read_many(
        self, session_ids: Sequence[str], *, max_bytes: int
    ) -> dict[str, bytes | SessionTooLargeError]:
        """The documents of ``session_ids`` in one statement: bytes, or the error a
        ``read`` would raise for a document over ``max_bytes``; absent ids are left out.

        For batch jobs (``sessionstore validate/migrate --dsn``). Raises
        ``SessionReadError`` when the statement fails.
        """
        action = "read a batch"
        with (
            self._reading(SessionReadError, action, None) as conn,
            self._exchange(conn, self._answer, SessionReadError, action, None),
        ):
            rows = conn.execute(
                self._sql["read_many"], {"max": max_bytes, "ids": list(session_ids)}
            )
            found = rows.fetchall()
        return {
            session_id: (
                (bytes(data) + bytes(lines) if lines else bytes(data))
                if data is not None
                else self._too_large(session_id, size, max_bytes)
            )
            for session_id, size, data, lines in found
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
        rows = split_rows(data)
        params = {
            "id": session_id,
            "version": schema_version_of(data),
            "document": rows.document,
            "etag": content_etag(rows.document) if rows.lines else etag,
            "whole": etag,
            "if_match": if_match,
        }
        self._tails.drop(session_id)
        if if_match is None:
            return self._write_rows(
                session_id, "write", self._sql["upsert"], params, lambda _: etag, rows=rows
            )

        def outcome(cursor: Cursor) -> str:
            updated, found, _ = _one(cursor)
            if updated:
                return etag
            raise ConflictError(
                f"session {session_id!r} in {self.location(session_id)} changed since it was "
                f"read (expected etag {if_match}, found {found or 'no session'}); nothing written",
                session_id=session_id,
                path=self.location(session_id),
            )

        return self._write_rows(
            session_id, "write", self._sql["update_if"], params, outcome, rows=rows
        )

    def create(self, session_id: str, data: bytes) -> str:
        etag = content_etag(data)
        rows = split_rows(data)
        params = {
            "id": session_id,
            "version": schema_version_of(data),
            "document": rows.document,
            "etag": content_etag(rows.document) if rows.lines else etag,
            "whole": etag,
        }
        self._tails.drop(session_id)

        def outcome(cursor: Cursor) -> str:
            inserted, _, _ = _one(cursor)
            if inserted:
                return etag
            raise ConflictError(
                f"session {session_id!r} already exists in {self.description}; nothing written",
                session_id=session_id,
                path=self.location(session_id),
            )

        return self._write_rows(
            session_id, "create", self._sql["insert"], params, outcome, rows=rows
        )

    def _write_rows(
        self,
        session_id: str,
        action: str,
        statement: sql.Composed,
        params: dict[str, Any],
        outcome: Callable[[Cursor], str],
        *,
        rows: JournalRows,
    ) -> str:
        """``_write`` of the document; then, for bytes that carry lines after their
        snapshot (rare: a session file copied in), those lines as journal rows, in the
        same transaction."""
        if not rows.lines:
            return self._write(session_id, action, statement, params, outcome)
        with self.lock(session_id):
            etag = self._write(session_id, action, statement, params, outcome)
            self._write(
                session_id,
                action,
                self._sql["add_rows"],
                {"id": session_id, "hashes": rows.hashes, "lines": rows.lines},
                _none,
            )
        return etag

    def delete(self, session_id: str) -> bool:
        """Remove the row; True if this call removed it. Failures raise the
        ``TransientError`` family (``store.delete`` makes them ``SessionDeleteError``)."""
        params = {"id": session_id}
        self._tails.drop(session_id)
        return self._write(
            session_id, "delete", self._sql["delete"], params, lambda cursor: cursor.rowcount == 1
        )

    # -- appends (the optional methods ``appendlog`` uses) ------------------------------

    def read_tail(self, session_id: str, *, max_bytes: int) -> FileTail | None:
        """The session's first bytes and its end (the document's last lines, then the
        journal's lines), for an append; None when there is no session. Raises what
        ``read`` raises. Remembers the tail for the next append (``known_tail``)."""
        window = TAIL_WINDOW
        while True:
            with (
                self._reading(SessionReadError, "read", session_id) as conn,
                self._exchange(conn, self._answer, SessionReadError, "read", session_id),
            ):
                cursor = conn.execute(
                    self._sql["tail"],
                    {"id": session_id, "head": len(CURRENT_PREFIX), "window": window},
                    binary=True,
                )
                row = cursor.fetchone()
            if row is None:
                self._tails.drop(session_id)
                return None
            document_size, size, head, end, lines = row
            if size > max_bytes:
                raise self._too_large(session_id, size, max_bytes)
            head, end = bytes(head), bytes(end)
            offset = document_size - len(end)
            if head != CURRENT_PREFIX or tail_is_enough(end, offset):
                break
            window = document_size  # a store line longer than the window: read it all
        tail = FileTail(size, None, head, end + bytes(lines or b""), offset)
        self._tails.put(session_id, tail)
        return tail

    def known_tail(self, session_id: str, *, max_bytes: int) -> FileTail | None:
        """The session's tail as this backend last read or appended it (no I/O): a hint,
        which ``append_record_if_last`` checks on the server."""
        tail = self._tails.get(session_id)
        return tail if tail is not None and tail.size <= max_bytes else None

    def append_record(
        self, session_id: str, line: bytes, *, identity: object, size: int, keep: int
    ) -> None:
        """Add ``line`` as the session's next journal row; the caller holds the lock
        and read the session at ``size`` bytes, ``keep`` of them intact (rows past
        ``keep``, a torn line copied in, are removed first). Raises
        ``SessionWriteError`` (nothing added) and ``CommitUnknownError``."""
        del identity  # a row, unlike a file, cannot be replaced by another one
        link = line_link(line)
        if link is None:  # pragma: no cover - appendlog writes only record lines
            msg = "append_record takes a record line"
            raise ValueError(msg)
        if keep < size:
            self._write(
                session_id, "append", self._sql["cut"], {"id": session_id, "seq": link[0]}, _none
            )
        if not self.append_record_if_last(session_id, line):
            msg = (
                f"session {session_id!r} in {self.description} changed while its lock was "
                "held (another writer that does not take the lock?); nothing was written"
            )
            raise SessionWriteError(msg, session_id=session_id, path=self.location(session_id))

    def append_record_if_last(self, session_id: str, line: bytes) -> bool:
        """Store the record ``line`` as a journal row, in a transaction holding the
        session's lock, only if it follows the session's last record (its ``seq`` and
        ``prev``; see ``postgres_journal``): one round trip. False, and nothing
        written, when it does not. Raises ``SessionWriteError``, ``LockTimeoutError``
        and ``CommitUnknownError`` (whose ``etag`` is the record's hash: the append
        landed if the session has it).
        """
        link = line_link(line)
        if link is None:  # pragma: no cover - appendlog writes only record lines
            msg = "append_record_if_last takes a record line"
            raise ValueError(msg)
        seq, prev, digest = link
        params = {"id": session_id, "seq": seq, "prev": prev, "hash": digest, "line": line}
        try:
            stored = self._write(
                session_id,
                "append",
                self._sql["append_if"],
                params,
                lambda cursor: cursor.rowcount == 1,
            )
        except CommitUnknownError as exc:
            self._tails.drop(session_id)
            if exc.etag is None:
                exc.etag = digest
            raise
        except BaseException:
            self._tails.drop(session_id)
            raise
        if stored:
            self._tails.extend(session_id, line, prev)
        else:
            self._tails.drop(session_id)
        return stored

    def exists(self, session_id: str) -> bool:
        with (
            self._reading(SessionReadError, "check", session_id) as conn,
            self._exchange(conn, self._answer, SessionReadError, "check", session_id),
        ):
            row = conn.execute(self._sql["exists"], [session_id]).fetchone()
        return row is not None

    def list_ids(self) -> list[str]:
        with (
            self._reading(SessionReadError, "list", None) as conn,
            self._exchange(conn, self._answer, SessionReadError, "list", None),
        ):
            rows = conn.execute(self._sql["list"]).fetchall()
        return [row[0] for row in rows if is_valid_session_id(row[0])]

    # -- the write transaction ------------------------------------------------------

    def _write(
        self,
        session_id: str,
        action: str,
        statement: sql.Composed,
        params: dict[str, Any],
        outcome: Callable[[Cursor], T],
    ) -> T:
        """Run ``statement`` in a write transaction holding the session's lock and
        return ``outcome`` of its cursor (called once the transaction committed).

        Joins this thread's lock transaction on the same database if there is one;
        else one round trip: BEGIN, timeouts, lock, statement, COMMIT.
        """
        held, conn = self._join_or_connect(SessionWriteError, action, session_id)
        if held is not None:
            cursor = self._lock_in(held, session_id, action, (statement, params))
            assert cursor is not None  # a statement was given
            return outcome(cursor)
        assert conn is not None  # either a transaction to join or a connection
        try:
            with (
                self._exchange(
                    conn, self._lock_answer, SessionWriteError, action, session_id, commit_sent=True
                ),
                _batch(conn),
            ):
                conn.execute(_BEGIN)
                self._queue_lock(conn, session_id)
                cursor = conn.execute(statement, params)
                commit = conn.execute(_COMMIT)
            self._check_committed(commit, action, session_id)
        finally:
            self._source.put(conn)
        return outcome(cursor)

    def _queue_lock(self, conn: Connection, session_id: str) -> None:
        """Send the statement that sets the timeouts and takes the session's lock."""
        conn.execute(self._take_lock, [session_id, *self._timeouts])

    def _lock_in(
        self,
        held: _Held,
        session_id: str,
        action: str,
        statement: tuple[sql.Composed, dict[str, Any]] | None = None,
    ) -> Cursor | None:
        """In the joined transaction ``held``: take the session's lock unless this
        table and id hold it already, then run ``statement``; one round trip."""
        conn = held.conn
        key = (self.table, session_id)
        fresh = key not in held.keys
        seconds = self._lock_answer if fresh else self._answer
        cursor = None
        with self._exchange(conn, seconds, SessionWriteError, action, session_id), _batch(conn):
            if fresh:
                self._queue_lock(conn, session_id)
            if statement is not None:
                cursor = conn.execute(*statement)
        held.keys.add(key)
        held.members.add(id(self))
        return cursor

    def _join_or_connect(
        self, cls: type[SessionStoreError], action: str, session_id: str
    ) -> tuple[_Held | None, Connection | None]:
        """This thread's lock transaction to join (same connection source or same
        database), else a connection for a transaction of our own."""
        stack = self._held_stack()
        if not stack:
            return None, self._get(cls, action, session_id)
        pid = os.getpid()
        for held in reversed(stack):
            if held.source is self._source.key and held.pid == pid:
                return held, None
        conn = self._get(cls, action, session_id)
        try:
            identity = _identities.get(conn)
            if identity is None:
                with self._exchange(conn, self._answer, cls, action, session_id):
                    identity = _identity_row(conn.execute(_IDENTITY))
                _identities[conn] = identity
        except BaseException:
            self._source.put(conn)
            raise
        for held in reversed(stack):
            if held.identity == identity and held.pid == pid:
                self._source.put(conn)
                return held, None
        return None, conn

    @contextmanager
    def _reading(
        self, cls: type[SessionStoreError], action: str, session_id: str | None
    ) -> Iterator[Connection]:
        """The lock transaction this backend works in, in this thread, if any (so a
        read inside ``lock`` sees the transaction's writes); else a pooled connection."""
        pid = os.getpid()
        for held in reversed(self._held_stack()):
            if held.pid == pid and (held.source is self._source.key or id(self) in held.members):
                yield held.conn
                return
        conn = self._get(cls, action, session_id)
        try:
            yield conn
        finally:
            self._source.put(conn)

    def _get(self, cls: type[SessionStoreError], action: str, session_id: str | None) -> Connection:
        try:
            return self._source.get()
        except NoConnectionError as exc:
            what = f"session {session_id!r}: " if session_id is not None else ""
            message = f"{what}cannot {action} in {self.description}: {exc}"
            if issubclass(cls, SessionWriteError):
                message += "; nothing was written"
            path = self.location(session_id) if session_id is not None else self.description
            raise cls(message, session_id=session_id, path=path) from None

    def _check_committed(self, commit: Cursor, action: str, session_id: str | None) -> None:
        # COMMIT of a transaction that failed earlier answers ROLLBACK, not an error.
        if commit.statusmessage != "COMMIT":
            what = f"session {session_id!r}: " if session_id is not None else ""
            message = (
                f"{what}cannot {action} in {self.description}: the transaction was rolled "
                f"back ({commit.statusmessage}); nothing was written"
            )
            path = self.location(session_id) if session_id is not None else self.description
            raise SessionWriteError(message, session_id=session_id, path=path)

    # -- errors -----------------------------------------------------------------------

    @contextmanager
    def _exchange(
        self,
        conn: Connection,
        seconds: float | None,
        cls: type[SessionStoreError],
        action: str,
        session_id: str | None,
        *,
        commit_sent: bool = False,
    ) -> Iterator[None]:
        """One exchange with the server: bounded by ``seconds`` (the connection is
        broken after that), its psycopg errors turned into the store's.

        ``commit_sent``: the block sends COMMIT, so a connection lost in it leaves
        the outcome unknown (``CommitUnknownError``).
        """
        with deadline(conn, seconds) as alarm:
            try:
                yield
            except psycopg.Error as exc:
                failure = exc
            else:
                return
        lost = alarm.fired or conn.broken or conn.closed
        raise self._error(
            failure,
            cls,
            action,
            session_id,
            fired_after=seconds if alarm.fired else None,
            unknown=commit_sent and lost,
            lost=lost,
        ) from failure

    def _error(
        self,
        exc: psycopg.Error,
        cls: type[SessionStoreError],
        action: str,
        session_id: str | None,
        *,
        fired_after: float | None,
        unknown: bool,
        lost: bool,
    ) -> SessionStoreError:
        what = f"session {session_id!r}: " if session_id is not None else ""
        path = self.location(session_id) if session_id is not None else self.description
        if isinstance(exc, pg_errors.LockNotAvailable):
            return self._lock_timeout(session_id)
        if isinstance(exc, pg_errors.DeadlockDetected):
            return LockTimeoutError(
                f"{what}the server found a deadlock in {self.description}: two writers "
                "nest locks of the same sessions in opposite orders; nothing was written "
                "(retry, or take nested sessions in one order)",
                session_id=session_id,
                path=path,
            )
        detail = scrub(str(exc).strip() or type(exc).__name__, self._source.secrets)
        if fired_after is not None:
            reason = (
                f"the server did not answer within {fired_after:g} s (timeout={self.timeout:g}"
                f"{'' if self.lock_timeout is None else f', lock_timeout={self.lock_timeout:g}'}"
                "); the connection was closed"
            )
        elif isinstance(exc, pg_errors.UndefinedTable):
            reason = (
                f"table {self.table!r} or its journal does not exist; call setup() first "
                "(for a table made by an older version, setup() adds the journal)"
            )
        elif isinstance(exc, pg_errors.QueryCanceled):
            reason = f"the server cancelled the statement ({detail}; timeout={self.timeout})"
        elif lost:
            reason = f"the connection was lost ({detail})"
        else:
            reason = detail
        message = f"{what}cannot {action} in {self.description}: {reason}"
        if unknown:
            message += (
                "; COMMIT was sent but its answer was lost, so the write may or may not "
                "have landed (never half-written): load the session with its etag to see "
                "(it landed if the etag is the error's etag)"
            )
            return CommitUnknownError(message, session_id=session_id, path=path)
        if issubclass(cls, SessionWriteError):
            message += "; nothing was written"
        return cls(message, session_id=session_id, path=path)

    def _lock_timeout(self, session_id: str | None) -> LockTimeoutError:
        return LockTimeoutError(
            f"session {session_id!r} in {self.description}: lock not acquired within "
            f"{self.lock_timeout} s; another writer holds it; nothing was written (raise "
            "lock_timeout, or find the stuck client)",
            session_id=session_id,
            path=self.location(session_id) if session_id else self.description,
        )

    # -- statements -------------------------------------------------------------------

    def _statements(self) -> dict[str, sql.Composed]:
        # The session's etag: its last journal row's hash, else its document's etag.
        current = sql.SQL(
            "COALESCE((SELECT hash FROM {j} WHERE id = %(id)s ORDER BY seq DESC LIMIT 1),"
            " (SELECT etag FROM {t} WHERE id = %(id)s))"
        ).format(t=self._ident, j=self._journal)
        # A conditional statement also reports what was stored before it ran (its
        # subqueries see the snapshot taken when it started, after the lock): the
        # etag, and whether it is the etag of our very bytes.
        before = sql.SQL("{current}, {current} = %(whole)s").format(current=current)
        columns = sql.SQL("(id, schema_version, document, etag, updated_at)")
        values = sql.SQL("VALUES (%(id)s, %(version)s, %(document)s, %(etag)s, now())")
        # The journal's lines of the session ``d``, in order, and their size.
        lines = sql.SQL(
            " LEFT JOIN LATERAL (SELECT sum(octet_length(line)) AS size,"
            " string_agg(line, ''::bytea ORDER BY seq) AS lines"
            " FROM {j} WHERE {j}.id = d.id) AS r ON true"
        ).format(j=self._journal)
        size = sql.SQL("(octet_length(d.document) + COALESCE(r.size, 0))")
        statements = {
            "read": "SELECT {size}, CASE WHEN {size} <= %s THEN d.document END,"
            " CASE WHEN {size} <= %s THEN r.lines END FROM {t} AS d{lines} WHERE d.id = %s",
            "read_many": "SELECT d.id, {size}, CASE WHEN {size} <= %(max)s THEN d.document END,"
            " CASE WHEN {size} <= %(max)s THEN r.lines END FROM {t} AS d{lines}"
            " WHERE d.id = ANY(%(ids)s)",
            # The document's first bytes and its last ``window`` bytes, then the lines.
            "tail": "SELECT octet_length(d.document), {size},"
            " substring(d.document FOR %(head)s),"
            " substring(d.document FROM greatest(1, octet_length(d.document) - %(window)s + 1)),"
            " r.lines FROM {t} AS d{lines} WHERE d.id = %(id)s",
            "exists": "SELECT 1 FROM {t} WHERE id = %s",
            # Byte order ("C"), not the database's locale: the same order as sorted().
            "list": 'SELECT id FROM {t} ORDER BY id COLLATE "C"',
            "delete": "WITH cleared AS (DELETE FROM {j} WHERE id = %(id)s)"
            " DELETE FROM {t} WHERE id = %(id)s",
            # Rows left by a version that did not know the journal go with a create.
            "insert": "WITH orphans AS (DELETE FROM {j} WHERE id = %(id)s"
            " AND NOT EXISTS (SELECT 1 FROM {t} WHERE id = %(id)s)),"
            " done AS (INSERT INTO {t} {columns} {values}"
            " ON CONFLICT (id) DO NOTHING RETURNING 1)"
            " SELECT EXISTS (SELECT 1 FROM done), {before}",
            "upsert": "WITH cleared AS (DELETE FROM {j} WHERE id = %(id)s)"
            " INSERT INTO {t} {columns} {values} ON CONFLICT (id) DO UPDATE SET"
            " schema_version = EXCLUDED.schema_version, document = EXCLUDED.document,"
            " etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at",
            "update_if": "WITH done AS (UPDATE {t} SET schema_version = %(version)s,"
            " document = %(document)s, etag = %(etag)s, updated_at = now()"
            " WHERE id = %(id)s AND {current} = %(if_match)s RETURNING 1),"
            " cleared AS (DELETE FROM {j} WHERE id = %(id)s AND EXISTS (SELECT 1 FROM done))"
            " SELECT EXISTS (SELECT 1 FROM done), {before}",
            "add_rows": "INSERT INTO {j} (id, seq, hash, line)"
            " SELECT %(id)s, r.seq, r.hash, r.line"
            " FROM unnest(%(hashes)s::text[], %(lines)s::bytea[]) WITH ORDINALITY"
            " AS r(hash, line, seq)",
            # Rows from ``seq`` on: a torn line copied in, cut by the next append.
            "cut": "DELETE FROM {j} WHERE id = %(id)s AND seq >= %(seq)s::int",
            # One record, only if it follows the session's last one (see postgres_journal).
            "append_if": "INSERT INTO {j} (id, seq, hash, line)"
            " SELECT %(id)s, %(seq)s::int, %(hash)s, %(line)s"
            " WHERE NOT EXISTS (SELECT 1 FROM {j} WHERE id = %(id)s AND seq >= %(seq)s::int)"
            " AND CASE WHEN %(seq)s::int = 1"
            " THEN EXISTS (SELECT 1 FROM {t} WHERE id = %(id)s AND etag = %(prev)s)"
            " ELSE EXISTS (SELECT 1 FROM {j} WHERE id = %(id)s"
            " AND seq = %(seq)s::int - 1 AND hash = %(prev)s) END",
        }
        return {
            name: sql.SQL(text).format(
                t=self._ident,
                j=self._journal,
                columns=columns,
                values=values,
                before=before,
                current=current,
                size=size,
                lines=lines,
            )
            for name, text in statements.items()
        }

    def __repr__(self) -> str:
        return f"PostgresBackend({self._where!r}, table={self.table!r})"


def _one(cursor: Cursor) -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    return tuple(row)


def _none(_cursor: Cursor) -> None:
    return None


def _identity_row(cursor: Cursor) -> tuple[object, ...]:
    return tuple(_one(cursor))
