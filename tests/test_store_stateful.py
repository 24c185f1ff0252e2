"""A state machine drives the store and a plain dict with the same calls; they must agree.

Runs against the file store (with reopening and a save that fails before the
rename) and the memory store.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sessionstore import (
    MemorySessionStore,
    SessionNotFoundError,
    SessionStore,
    SessionWriteError,
    StoredSession,
)
from sessionstore.atomic import TEMP_NAME
from sessionstore.testing import strategies as sst

# A small id pool makes saves, loads and deletes collide.
IDS = st.sampled_from(["a", "b", "c-1", "D_2", "x" * 128])


class FileStoreMachine(RuleBasedStateMachine):
    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="sessionstore-state-"))
        self.store = self.open()
        self.model: dict[str, StoredSession] = {}

    def open(self) -> SessionStore | MemorySessionStore:
        return SessionStore(self.folder / "store", durable=False)

    @initialize()
    def start_empty(self) -> None:
        assert self.store.list() == []

    @rule(target=ids, session_id=IDS)
    def add_id(self, session_id: str) -> str:
        return session_id

    @rule(session_id=ids, session=sst.sessions(ids=st.just("placeholder")))
    def save(self, session_id: str, session: StoredSession) -> None:
        session = session.model_copy(update={"session_id": session_id})
        self.store.save(session)
        self.model[session_id] = session

    @rule(session_id=ids)
    def load(self, session_id: str) -> None:
        if session_id in self.model:
            assert self.store.load(session_id) == self.model[session_id]
        else:
            with pytest.raises(SessionNotFoundError):
                self.store.load(session_id)

    @rule(session_id=ids)
    def delete(self, session_id: str) -> None:
        assert self.store.delete(session_id) is (session_id in self.model)
        self.model.pop(session_id, None)

    @rule(session_id=ids)
    def exists(self, session_id: str) -> None:
        assert self.store.exists(session_id) is (session_id in self.model)

    @rule()
    def reopen(self) -> None:
        self.store = self.open()

    @precondition(lambda self: isinstance(self.store, SessionStore))
    @rule(session_id=ids, session=sst.sessions(ids=st.just("placeholder")))
    def save_fails_before_rename(self, session_id: str, session: StoredSession) -> None:
        session = session.model_copy(update={"session_id": session_id})
        failure = OSError(errno.EIO, "injected I/O error")
        with (
            mock.patch.object(os, "replace", side_effect=failure),
            pytest.raises(SessionWriteError),
        ):
            self.store.save(session)
        # The model is unchanged: the old version (or nothing) must still be there.

    @invariant()
    def listing_matches_model(self) -> None:
        assert self.store.list() == sorted(self.model)

    @invariant()
    def no_temp_files_left(self) -> None:
        folder = self.folder / "store"
        if folder.exists():
            assert [n for n in os.listdir(folder) if TEMP_NAME.match(n)] == []

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class MemoryStoreMachine(FileStoreMachine):
    def open(self) -> SessionStore | MemorySessionStore:
        # Reopening a memory store keeps its backend, as a new handle would.
        existing = getattr(self, "store", None)
        store = MemorySessionStore()
        if existing is not None:
            store.backend = existing.backend
        return store


TestFileStore = FileStoreMachine.TestCase
TestMemoryStore = MemoryStoreMachine.TestCase
