"""The packaged conformance state machine against every store class: each must agree
with a dict.

The subjects here (``SUBJECTS``: the three sync classes and the async ones) are also
what ``test_conformance.py`` and ``test_store_properties.py`` run the other rules on.
The file store also reopens, fails saves before the rename and must leave no temp
files; its ``opener`` reaches the same folder through a symlink, as a second part of
an application may (a store must not care how its folder is spelled). The memory
store reopens on the same backend and cannot be reached from another process.
PostgreSQL reopens on the same table and fails saves before the statement reaches
the server. The async classes are given to the kit as they are: it detects them and
runs the rules through a ``BlockingView`` (and the tasks rule on their loop).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis.stateful import run_state_machine_as_test

import sessionstore
from sessionstore import BackendSessionStore, MemorySessionStore, SessionStore
from sessionstore.asyncstore import (
    AsyncBackendSessionStore,
    AsyncMemorySessionStore,
    AsyncSessionStore,
)
from sessionstore.atomic import TEMP_NAME
from sessionstore.backends.base import Backend
from sessionstore.testing import StoreFactory, StoreUnderTest
from sessionstore.testing.conformance import make_state_machine
from tests.pg import DSN, postgres_subject, requires_postgres, unique_table

LOCK_TIMEOUT = 10.0
"""Short enough that a deadlock shows as ``LockTimeoutError`` before a rule's hang guard."""


def open_file_store(directory: str) -> SessionStore:
    """A store on ``directory``: what the file subject's picklable opener calls."""
    return SessionStore(directory, durable=False, lock_timeout=LOCK_TIMEOUT)


def open_async_file_store(directory: str) -> AsyncSessionStore:
    """An async store on ``directory``: the async file subject's picklable opener."""
    return AsyncSessionStore(directory, durable=False, lock_timeout=LOCK_TIMEOUT)


def file_subject() -> StoreUnderTest:
    return _folder_subject(open_file_store)


def async_file_subject() -> StoreUnderTest:
    return _folder_subject(open_async_file_store)


def _folder_subject(open_store: Callable[[str], Any]) -> StoreUnderTest:
    folder = Path(tempfile.mkdtemp(prefix="sessionstore-state-"))
    store_dir = folder / "store"
    store_dir.mkdir()
    (folder / "same-store").symlink_to(store_dir, target_is_directory=True)

    def failing_save() -> Any:
        return mock.patch.object(os, "replace", side_effect=OSError(errno.EIO, "injected"))

    def no_temp_files_left() -> None:
        if store_dir.exists():
            assert [n for n in os.listdir(store_dir) if TEMP_NAME.match(n)] == []

    return StoreUnderTest(
        open_store(str(store_dir)),
        reopen=lambda: open_store(str(store_dir)),
        failing_save=failing_save,
        check=no_temp_files_left,
        cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
        opener=functools.partial(open_store, str(folder / "same-store")),
    )


def _on_backend(backend: Backend) -> BackendSessionStore:
    # A new handle on the same backend, as a new handle on a folder would be.
    return BackendSessionStore(backend)


def _async_on_backend(backend: Backend) -> AsyncBackendSessionStore:
    return AsyncBackendSessionStore(BackendSessionStore(backend))


def memory_subject() -> StoreUnderTest:
    store = MemorySessionStore()
    return StoreUnderTest(
        store,
        reopen=functools.partial(_on_backend, store.backend),
        opener=functools.partial(_on_backend, store.backend),
        multiprocess=False,
    )


def async_memory_subject() -> StoreUnderTest:
    store = AsyncMemorySessionStore()
    return StoreUnderTest(
        store,
        reopen=functools.partial(_async_on_backend, store.sync.backend),
        opener=functools.partial(_async_on_backend, store.sync.backend),
        multiprocess=False,
    )


_opened: dict[str, list[Any]] = {}
"""PostgreSQL stores the openers made in this process, by table, closed by cleanup."""


def open_postgres_store(dsn: str, table: str) -> Any:
    """A store on ``table``: what the PostgreSQL subject's picklable opener calls."""
    from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415  # needs psycopg

    store = PostgresSessionStore(dsn, table=table, lock_timeout=LOCK_TIMEOUT)
    _opened.setdefault(table, []).append(store)
    return store


def postgres_kit_subject() -> StoreUnderTest:
    """``tests.pg.postgres_subject`` with an opener; cleanup also closes opened stores."""
    subject = postgres_subject()
    table: str = subject.store.backend.table  # type: ignore[union-attr]
    drop_table = subject.cleanup

    def cleanup() -> None:
        for store in _opened.pop(table, []):
            store.close()
        if drop_table is not None:
            drop_table()

    subject.opener = functools.partial(open_postgres_store, DSN, table)
    subject.cleanup = cleanup
    return subject


def open_async_postgres_store(dsn: str, table: str) -> Any:
    """An async store on ``table``: the async PostgreSQL subject's picklable opener."""
    assert AsyncPostgresSessionStore is not None
    return AsyncPostgresSessionStore(dsn, table=table, lock_timeout=LOCK_TIMEOUT)


def async_postgres_subject() -> StoreUnderTest:
    """``AsyncPostgresSessionStore`` on a new table, which the sync class sets up and
    drops; the kit enters each async store (``async with``) on its view's loop."""
    from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415  # needs psycopg

    table = unique_table("aconf")
    tables = PostgresSessionStore(DSN, table=table)
    tables.setup()

    def cleanup() -> None:
        try:
            tables.backend.drop()
        finally:
            tables.close()

    opener = functools.partial(open_async_postgres_store, DSN, table)
    return StoreUnderTest(opener(), reopen=opener, opener=opener, cleanup=cleanup)


def _async_postgres_class() -> Any:
    try:
        return getattr(sessionstore, "AsyncPostgresSessionStore", None)
    except ImportError:  # the driver is missing: the PostgreSQL tests skip anyway
        return None


AsyncPostgresSessionStore = _async_postgres_class()
"""The async PostgreSQL class, once it exists (built in parallel with these tests)."""

NO_ASYNC_POSTGRES = "sessionstore has no AsyncPostgresSessionStore yet"

SUBJECTS = [
    pytest.param(file_subject, id="file"),
    pytest.param(memory_subject, id="memory"),
    pytest.param(postgres_kit_subject, id="postgres", marks=requires_postgres),
    pytest.param(async_file_subject, id="async-file"),
    pytest.param(async_memory_subject, id="async-memory"),
    # The async PostgreSQL class: runs as soon as sessionstore exports it.
    pytest.param(
        async_postgres_subject,
        id="async-postgres",
        marks=[
            *requires_postgres,
            pytest.mark.skipif(AsyncPostgresSessionStore is None, reason=NO_ASYNC_POSTGRES),
        ],
    ),
]
"""Every store class the conformance kit must pass, as subjects (a ``StoreFactory``
each): the parametrization of every conformance test."""


@pytest.mark.parametrize("factory", SUBJECTS)
def test_state_machine(factory: StoreFactory) -> None:
    machine = make_state_machine(factory, name=f"{factory.__name__}_machine")
    run_state_machine_as_test(machine)
