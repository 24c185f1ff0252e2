"""The packaged conformance state machine against every backend: each must agree with a dict.

The file store also reopens, fails saves before the rename and must leave no temp
files; the memory store reopens on the same backend; PostgreSQL reopens on the same
table and fails saves before the statement reaches the server.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from sessionstore import MemorySessionStore, SessionStore
from sessionstore.atomic import TEMP_NAME
from sessionstore.testing.conformance import StoreUnderTest, make_state_machine
from tests.pg import postgres_only, postgres_subject


def file_subject() -> StoreUnderTest:
    folder = Path(tempfile.mkdtemp(prefix="sessionstore-state-"))
    store_dir = folder / "store"

    def failing_save() -> Any:
        return mock.patch.object(os, "replace", side_effect=OSError(errno.EIO, "injected"))

    def no_temp_files_left() -> None:
        if store_dir.exists():
            assert [n for n in os.listdir(store_dir) if TEMP_NAME.match(n)] == []

    return StoreUnderTest(
        SessionStore(store_dir, durable=False),
        reopen=lambda: SessionStore(store_dir, durable=False),
        failing_save=failing_save,
        check=no_temp_files_left,
        cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
    )


def memory_subject() -> StoreUnderTest:
    store = MemorySessionStore()

    def reopen() -> MemorySessionStore:
        # A new handle on the same backend, as a new handle on a folder would be.
        again = MemorySessionStore()
        again.backend = store.backend
        return again

    return StoreUnderTest(store, reopen=reopen)


TestFileStore = make_state_machine(file_subject, name="FileStoreMachine").TestCase
TestMemoryStore = make_state_machine(memory_subject, name="MemoryStoreMachine").TestCase


TestPostgresStore = postgres_only(
    make_state_machine(postgres_subject, name="PostgresStoreMachine").TestCase
)
