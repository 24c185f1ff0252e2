"""The packaged conformance state machine against every backend: each must agree with a dict.

The subjects here are also what ``test_conformance.py`` runs the concurrency rules on.
The file store also reopens, fails saves before the rename and must leave no temp
files; its ``opener`` reaches the same folder through a symlink, as a second part of
an application may (a store must not care how its folder is spelled). The memory
store reopens on the same backend and cannot be reached from another process.
PostgreSQL reopens on the same table and fails saves before the statement reaches
the server.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from sessionstore import BackendSessionStore, MemorySessionStore, SessionStore
from sessionstore.atomic import TEMP_NAME
from sessionstore.backends.base import Backend
from sessionstore.testing import StoreUnderTest
from sessionstore.testing.conformance import make_state_machine
from tests.pg import DSN, postgres_only, postgres_subject

LOCK_TIMEOUT = 10.0
"""Short enough that a deadlock shows as ``LockTimeoutError`` before a rule's hang guard."""


def open_file_store(directory: str) -> SessionStore:
    """A store on ``directory``: what the file subject's picklable opener calls."""
    return SessionStore(directory, durable=False, lock_timeout=LOCK_TIMEOUT)


def file_subject() -> StoreUnderTest:
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
        open_file_store(str(store_dir)),
        reopen=lambda: open_file_store(str(store_dir)),
        failing_save=failing_save,
        check=no_temp_files_left,
        cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
        opener=functools.partial(open_file_store, str(folder / "same-store")),
    )


def _on_backend(backend: Backend) -> BackendSessionStore:
    # A new handle on the same backend, as a new handle on a folder would be.
    return BackendSessionStore(backend)


def memory_subject() -> StoreUnderTest:
    store = MemorySessionStore()
    return StoreUnderTest(
        store,
        reopen=functools.partial(_on_backend, store.backend),
        opener=functools.partial(_on_backend, store.backend),
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
    table: str = subject.store.backend.table  # type: ignore[attr-defined]
    drop_table = subject.cleanup

    def cleanup() -> None:
        for store in _opened.pop(table, []):
            store.close()
        if drop_table is not None:
            drop_table()

    subject.opener = functools.partial(open_postgres_store, DSN, table)
    subject.cleanup = cleanup
    return subject


TestFileStore = make_state_machine(file_subject, name="FileStoreMachine").TestCase
TestMemoryStore = make_state_machine(memory_subject, name="MemoryStoreMachine").TestCase


TestPostgresStore = postgres_only(
    make_state_machine(postgres_subject, name="PostgresStoreMachine").TestCase
)
