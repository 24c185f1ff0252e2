"""Shared PostgreSQL test helpers: the DSN, the skip marker, a store on its own table."""

from __future__ import annotations

import os
import uuid
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

T = TypeVar("T")


def postgres_only(obj: T) -> T:
    """Mark a test class or function as needing PostgreSQL (skipped without the DSN)."""
    for mark in requires_postgres:
        obj = mark(obj)
    return obj


def unique_table(prefix: str = "t") -> str:
    """A fresh table name, so tests running at the same time never share a table."""
    return f"sstest_{prefix}_{uuid.uuid4().hex[:16]}"


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
        # The statement never reaches the server: as if the connection dropped.
        failure = psycopg.OperationalError("injected: server closed the connection unexpectedly")
        return mock.patch.object(psycopg.Connection, "execute", side_effect=failure)

    def cleanup() -> None:
        try:
            handles[-1].backend.drop()
        finally:
            for handle in handles:
                handle.close()

    return StoreUnderTest(handles[0], reopen=reopen, failing_save=failing_save, cleanup=cleanup)
