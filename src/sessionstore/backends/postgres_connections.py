"""Connections of the PostgreSQL backend: where they come from, how long the server
may take to answer, and what may be said about them in a message.

- ``ConnectionSource`` hands out connections from a ``psycopg_pool.ConnectionPool``:
  one it opens itself (at most ``max_size`` connections, each checked within a
  deadline before it is handed out; a failed check drains the idle connections,
  since it usually means the server restarted and killed them all), or one the
  caller lends (used, never closed). A forked child never touches its parent's
  sockets: it opens a pool of its own, or refuses a lent one.
- ``deadline`` bounds one exchange with the server: if no answer comes in time
  (the server process is stopped, the network is partitioned), a watchdog thread
  shuts the socket down, so the blocked call fails at once instead of hanging.
- ``parse_conninfo``, ``describe`` and ``scrub`` keep passwords out of every
  message, including for connection strings libpq cannot parse (its own error
  text may quote them).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

__all__ = [
    "Connection",
    "ConnectionSource",
    "NoConnectionError",
    "deadline",
    "describe",
    "parse_conninfo",
    "scrub",
]

Connection = psycopg.Connection[Any]

# psycopg_pool logs what goes wrong with connections (at WARNING) on this logger; the
# store reports the same problems as exceptions. Without a handler of its own, Python's
# last-resort handler would print those lines on stderr (the CLI's one-line errors
# included); applications that configure logging still get them.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

_SLICE = 0.2
"""Seconds a caller waits on the pool at a time, so that a failed connection attempt
(which the pool makes in a worker thread) is reported within this long."""

_RECENT = 1.0
"""A failed connection attempt this many seconds before a call that finds no free
connection is the reason given for it at once."""


class NoConnectionError(Exception):
    """No connection could be had; the message is safe to show (no password)."""


# -- descriptions without passwords ---------------------------------------------


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """The parameters of a libpq connection string or URL.

    Raises ``ValueError`` for a string libpq cannot parse, without quoting it or
    libpq's message (either may contain the password).
    """
    try:
        return {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except psycopg.Error:
        msg = (
            "the PostgreSQL connection string cannot be parsed (check its syntax: "
            "'postgresql://user@host:5432/dbname' or 'host=... dbname=...'; special "
            "characters in a URL must be percent-encoded); it is not shown here "
            "because it may contain a password"
        )
        raise ValueError(msg) from None


def describe(params: dict[str, str]) -> str:
    """``host:port/dbname`` of parsed connection parameters; never the password."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or ""
    return f"{host}:{port}/{dbname}"


_SECRET_PATTERNS = (
    # key=value form: password=secret or password='se cret'
    re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']+)", re.IGNORECASE),
    # URL form: scheme://user:secret@host
    re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)"),
)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every known secret and anything that looks like a password
    (``password=...``, the ``user:secret@`` of a URL) replaced by ``***``.

    Known secrets shorter than 4 characters are left alone: replacing them would
    garble every message (libpq does not quote a password it parsed anyway).
    """
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _SECRET_PATTERNS[0].sub(r"\1***", text)
    return _SECRET_PATTERNS[1].sub(r"\1***\3", text)


# -- deadlines --------------------------------------------------------------------


class Alarm:
    """One armed deadline: ``fired`` is True once the watchdog broke the connection."""

    __slots__ = ("at", "done", "fd", "fired")

    def __init__(self, fd: int, at: float) -> None:
        self.fd = fd  # a duplicate of the connection's socket, ours to close
        self.at = at
        self.fired = False
        self.done = False


_NO_ALARM = Alarm(-1, 0.0)
_NO_ALARM.done = True


class _Watchdog:
    """One daemon thread that shuts down the sockets of exchanges past their deadline.

    The socket is reached through a duplicate descriptor taken when the alarm is
    armed, so a descriptor number that libpq closed and the process reused for
    something else is never touched.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Alarm]] = []
        self._seq = itertools.count()
        self._armed = 0
        self._thread: threading.Thread | None = None

    def arm(self, conn: Connection, seconds: float) -> Alarm:
        try:
            fd = os.dup(conn.pgconn.socket)
        except (psycopg.Error, OSError):
            return _NO_ALARM  # no socket: the call fails at once by itself
        alarm = Alarm(fd, time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, (alarm.at, next(self._seq), alarm))
            self._armed += 1
            if len(self._heap) > 64 and len(self._heap) > 4 * self._armed:
                # Disarmed alarms are dropped lazily; keep the heap small.
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sessionstore-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is alarm:
                self._cond.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> None:
        if alarm is _NO_ALARM:
            return
        with self._cond:
            if not alarm.done:
                alarm.done = True
                self._armed -= 1
        os.close(alarm.fd)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                alarm = heapq.heappop(self._heap)[2]
                alarm.done = alarm.fired = True
                self._armed -= 1
                # Under the lock: ``disarm`` (and so the close of ``fd``) waits for this.
                _shut_down(alarm.fd)


def _shut_down(fd: int) -> None:
    """Shut the socket down both ways: a blocked read or write on it fails at once."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()  # the descriptor stays open; ``disarm`` closes it


_watchdog = _Watchdog()


@contextmanager
def deadline(conn: Connection, seconds: float | None) -> Iterator[Alarm]:
    """Break ``conn`` if the block is still running after ``seconds`` (None: never).

    The call blocked inside then raises ``psycopg.OperationalError``; the yielded
    alarm's ``fired`` tells that the deadline, not the server, ended it.
    """
    watchdog = _watchdog
    alarm = _NO_ALARM if seconds is None else watchdog.arm(conn, seconds)
    try:
        yield alarm
    finally:
        watchdog.disarm(alarm)


# -- where connections come from ----------------------------------------------------


class ConnectionSource:
    """Connections to one database, from a pool the source opens or one it is lent.

    ``get``/``put`` hand connections out and take them back; ``timeout`` (None: no
    bound) bounds the wait for one and each check of one. Thread-safe and fork-safe.
    """

    slice: float | None = _SLICE
    """Seconds ``get`` waits on the pool at a time (to report a failed connection
    attempt soon); None: the whole wait at once (a pool that reports failures itself)."""

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any],
        *,
        max_size: int,
        connect_timeout: float,
        timeout: float | None,
        check_seconds: float | None,
    ) -> None:
        self.timeout = timeout
        self._check_seconds = check_seconds
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._closed = False
        self._failure: tuple[float, str] | None = None  # when and why the last attempt failed
        self._pool: ConnectionPool[Any] | None = None
        if isinstance(conninfo_or_pool, str):
            params = parse_conninfo(conninfo_or_pool)
            self._conninfo: str | None = conninfo_or_pool
            self.lent = False
        else:
            self._conninfo = None
            self.lent = True
            self._pool = conninfo_or_pool
            raw = conninfo_or_pool.conninfo
            try:
                params = parse_conninfo(raw) if isinstance(raw, str) else {}
            except ValueError:
                params = {}
        self.secrets = tuple(value for key, value in params.items() if key == "password")
        self.description = describe(params) if params else "the server of the given pool"
        _SOURCES.add(self)

    @property
    def key(self) -> object:
        """Equal for two sources that hand out the same connections (one lent pool)."""
        return self._pool if self.lent else self

    def get(self) -> Connection:
        """A checked, idle, autocommit connection. Raises ``NoConnectionError``."""
        pool = self._current_pool()
        start = time.monotonic()
        end = None if self.timeout is None else start + self.timeout
        while True:
            left = None if end is None else end - time.monotonic()
            wait = self.slice if left is None else left
            if self.slice is not None and left is not None:
                wait = min(self.slice, left)
            if wait is not None and wait <= 0:
                raise NoConnectionError(self._no_connection_reason())
            try:
                conn: Connection = pool.getconn(timeout=wait)
            except PoolTimeout:
                failure = self._failure
                if failure is not None and failure[0] >= start - _RECENT:
                    # The pool's last attempt to connect, just now, failed: say why
                    # now rather than after ``timeout``.
                    raise NoConnectionError(
                        f"cannot connect to {self.description}: {failure[1]}"
                    ) from None
            except PoolClosed:
                raise NoConnectionError("the store was closed") from None
            except psycopg.Error as exc:
                raise NoConnectionError(
                    f"no connection to {self.description}: {scrub(str(exc), self.secrets)}"
                ) from None
            else:
                if not conn.autocommit:
                    # A lent pool's connection: the backend runs its own transactions.
                    conn.autocommit = True
                    _lent_manual.add(conn)
                return conn

    def put(self, conn: Connection) -> None:
        """Take ``conn`` back, rolled back to idle (a broken one is discarded)."""
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                with deadline(conn, self._check_seconds):
                    conn.rollback()
            except psycopg.Error:
                conn.close()
        if conn in _lent_manual:
            _lent_manual.discard(conn)
            if not conn.closed:
                conn.autocommit = False  # as the lender configured it
        pool = self._pool
        if pool is None:  # closed meanwhile
            conn.close()
            return
        try:
            pool.putconn(conn)
        except psycopg.Error:  # pragma: no cover - a pool closed meanwhile
            conn.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """``get`` and, when the block ends, ``put``."""
        conn = self.get()
        try:
            yield conn
        finally:
            self.put(conn)

    def close(self) -> None:
        """Close the pool this source opened (a lent pool stays open)."""
        with self._mutex:
            self._closed = True
            pool = None if self.lent else self._pool
            if not self.lent:
                self._pool = None
        if pool is not None:
            pool.close()

    # -- internals ----------------------------------------------------------------

    def _current_pool(self) -> ConnectionPool[Any]:
        if os.getpid() != self._pid and self.lent:
            msg = (
                f"the connection pool given for {self.description} was opened in another "
                "process; a forked child must not use its parent's connections: open a "
                "new pool (and store) in the child"
            )
            raise NoConnectionError(msg)
        with self._mutex:
            if self._closed:
                raise NoConnectionError("the store was closed")
            if self._pool is None:
                self._pool = self._open_pool()
            return self._pool

    def _open_pool(self) -> ConnectionPool[Any]:
        assert self._conninfo is not None  # a lent pool is never reopened
        return ConnectionPool(
            self._conninfo,
            open=True,
            check=self._check,
            **self._pool_options(_recording_class(self)),
        )

    def _pool_options(self, connection_class: type[Any]) -> dict[str, Any]:
        """What every pool this source opens is built with (the sync and the async one)."""
        return {
            "connection_class": connection_class,
            "kwargs": {
                "autocommit": True,
                "connect_timeout": max(1, round(self._connect_timeout)),
                "fallback_application_name": "sessionstore",
            },
            "min_size": 0,
            "max_size": self._max_size,
            "name": f"sessionstore {self.description}",
            # Give up a series of failed connection attempts early: the next
            # request starts a new series at once, with no backoff to wait out.
            "reconnect_timeout": max(5.0, 2 * self._connect_timeout),
            "num_workers": 2,
        }

    def _check(self, conn: Connection) -> None:
        """The pool's check of a connection before handing it out, within a deadline."""
        try:
            with deadline(conn, self._check_seconds):
                ConnectionPool.check_connection(conn)
        except Exception:
            # A dead idle connection usually means the server restarted (or a
            # proxy dropped idle connections): the other idle ones are dead too.
            pool = self._pool
            drain = getattr(pool, "drain", None)  # psycopg_pool >= 3.3
            if drain is not None:
                drain()
            raise

    def _no_connection_reason(self) -> str:
        failure = self._failure
        if failure is not None:
            return f"cannot connect to {self.description}: {failure[1]}"
        if self.lent:
            return f"no connection from the given pool within {self.timeout:g} s"
        pool = self._pool
        busy = pool is not None and pool.get_stats().get("pool_size", 0) >= self._max_size
        why = (
            f"all {self._max_size} connections of the store are in use; raise max_size"
            if busy
            else "the server did not answer, or its connections failed their check"
        )
        return f"no connection to {self.description} within {self.timeout:g} s ({why})"

    def _connect_failed(self, exc: BaseException) -> None:
        reason = scrub(str(exc).strip() or type(exc).__name__, self.secrets)
        self._failure = (time.monotonic(), reason)

    def _connect_succeeded(self) -> None:
        self._failure = None

    def _after_fork_in_child(self) -> None:
        self._mutex = threading.Lock()
        if self.lent:
            return  # ``_pid`` stays the parent's: the child refuses the lent pool
        if self._pool is not None:
            # Never close (nor let the garbage collector finalize) the parent's pool
            # here: closing would end the parent's sessions on the server.
            _ABANDONED.append(self._pool)
            self._pool = None
        self._pid = os.getpid()


def _recording_class(source: ConnectionSource) -> type[Connection]:
    """A connection class that tells ``source`` how its last connection attempt went
    (the pool connects in a worker thread, out of the caller's sight)."""
    ref = weakref.ref(source)

    class RecordingConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> RecordingConnection:
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                if (owner := ref()) is not None:
                    owner._connect_failed(exc)
                raise
            if (owner := ref()) is not None:
                owner._connect_succeeded()
            return conn

    return RecordingConnection


_SOURCES: weakref.WeakSet[ConnectionSource] = weakref.WeakSet()
_lent_manual: weakref.WeakSet[Connection] = weakref.WeakSet()
"""Connections of lent pools that were not in autocommit mode: restored when put back."""
_ABANDONED: list[ConnectionPool[Any]] = []


def _after_fork_in_child() -> None:
    global _watchdog  # noqa: PLW0603  # the parent's thread does not exist in the child
    _watchdog = _Watchdog()
    for source in list(_SOURCES):
        source._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
