"""Shared PostgreSQL test helpers: the DSN, the skip marker, a store on its own table."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from unittest import mock

import pytest

from sessionstore.testing.conformance import StoreUnderTest

DSN = os.environ.get("SESSIONSTORE_TEST_POSTGRES_DSN", "")

SKIP_REASON = (
    "PostgreSQL tests need a server: set SESSIONSTORE_TEST_POSTGRES_DSN, e.g. "
    "SESSIONSTORE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test "
    "(.ci/run sets it when that server answers)"
)

requires_postgres = [pytest.mark.postgres, pytest.mark.skipif(not DSN, reason=SKIP_REASON)]
"""Marks for a PostgreSQL test module (``pytestmark``), class or function."""

# What a pytest mark can decorate; a mark returns what it decorates.
T = TypeVar("T", bound=Callable[..., object])


def postgres_only(obj: T) -> T:
    """Mark a test class or function as needing PostgreSQL (skipped without the DSN)."""
    for mark in requires_postgres:
        obj = mark(obj)
    return obj


def unique_table(prefix: str = "t") -> str:
    """A fresh table name, so tests running at the same time never share a table."""
    return f"sstest_{prefix}_{uuid.uuid4().hex[:16]}"


def named_dsn(name: str, dsn: str = "") -> str:
    """``dsn`` (default: the test server's) with ``application_name=name``, so a test can
    find the server processes of its own connections (``backend_pids``)."""
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415

    return make_conninfo(dsn or DSN, application_name=name)


def backend_pids(name: str) -> list[int]:
    """The server processes of the connections named ``name`` (see ``named_dsn``)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid", [name]
        ).fetchall()
    return [row[0] for row in rows]


def terminate(name: str) -> int:
    """Terminate the server processes of the connections named ``name`` and wait until
    they are gone (as a server restart would, for those connections); how many."""
    import psycopg  # noqa: PLC0415

    pids = backend_pids(name)
    with psycopg.connect(DSN, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
    return len(pids)


def waiting_for_locks(name: str) -> int:
    """How many connections named ``name`` wait for an advisory lock right now."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE a.application_name = %s AND l.locktype = 'advisory' AND NOT l.granted",
            [name],
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_until(condition: Callable[[], bool], what: str, *, limit: float = 30.0) -> None:
    """Return once ``condition()`` holds (polling the server's state); fail after ``limit``
    seconds, so a test that waits for something that never happens fails, not hangs."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"gave up after {limit} s waiting for {what}")
        time.sleep(0.01)


def postgres_subject() -> StoreUnderTest:
    """A ``PostgresSessionStore`` on a new table, dropped by ``cleanup``."""
    import psycopg  # noqa: PLC0415  # only the PostgreSQL tests need the driver

    from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415

    table = unique_table("conf")
    handles = [PostgresSessionStore(DSN, table=table)]
    handles[0].setup()

    def reopen() -> PostgresSessionStore:
        handles[-1].close()
        handles.append(PostgresSessionStore(DSN, table=table))
        return handles[-1]

    def failing_save() -> Any:
        # The statements never reach the server: as if the connection dropped before
        # they were sent. The pool's check of a connection (an empty query) still
        # passes, so the failure is the save's own.
        real = psycopg.Connection.execute

        def execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
            if query == "":
                return real(self, query, *args, **kwargs)
            raise psycopg.OperationalError("injected: server closed the connection unexpectedly")

        return mock.patch.object(psycopg.Connection, "execute", execute)

    def cleanup() -> None:
        try:
            handles[-1].backend.drop()
        finally:
            for handle in handles:
                handle.close()

    return StoreUnderTest(handles[0], reopen=reopen, failing_save=failing_save, cleanup=cleanup)
