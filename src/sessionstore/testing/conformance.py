"""The backend conformance suite: every backend must agree with a plain dict.

Run it against your own ``Backend`` in three lines::

    from sessionstore import BackendSessionStore
    from sessionstore.testing.conformance import StoreUnderTest, make_state_machine

    TestMyBackend = make_state_machine(
        lambda: StoreUnderTest(BackendSessionStore(MyBackend()))
    ).TestCase

and the properties with ``round_trip_test(factory)`` and
``delete_idempotence_test(factory)``. The factory is called once per Hypothesis
example and must return a store over empty storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sessionstore.backends.base import Backend, content_etag
from sessionstore.codec import encode
from sessionstore.errors import ConflictError, SessionNotFoundError, SessionWriteError
from sessionstore.models import MAX_TOKENS, StoredSession
from sessionstore.store import BackendSessionStore
from sessionstore.testing import strategies as sst

__all__ = [
    "IDS",
    "StoreUnderTest",
    "check_delete_idempotence",
    "check_round_trip",
    "delete_idempotence_test",
    "make_state_machine",
    "round_trip_test",
]

IDS = st.sampled_from(["a", "b", "c-1", "D_2", "x" * 128])
"""A small id pool, so saves, loads and deletes collide."""

_OPS = st.lists(
    st.tuples(st.sampled_from(["save", "delete"]), st.sampled_from(["a", "b", "c"])),
    max_size=30,
)


@dataclass
class StoreUnderTest:
    """One store over empty storage, and what the suite may do with it.

    ``reopen`` returns a new handle on the same storage (closing the old one if it
    must); ``failing_save`` returns a context manager inside which a ``save`` fails
    with ``SessionWriteError`` before anything lands; ``check`` is an extra invariant
    (for example: no temporary files); ``cleanup`` releases the storage.
    """

    store: BackendSessionStore
    reopen: Callable[[], BackendSessionStore] | None = None
    failing_save: Callable[[], AbstractContextManager[object]] | None = None
    check: Callable[[], None] | None = None
    cleanup: Callable[[], None] | None = None

    def close(self) -> None:
        """Run ``cleanup`` if there is one."""
        if self.cleanup is not None:
            self.cleanup()


StoreFactory = Callable[[], StoreUnderTest]


def _with_id(session: StoredSession, session_id: str) -> StoredSession:
    return replace(session, session_id=session_id)


_PLACEHOLDER = sst.sessions(ids=st.just("placeholder"))


class _ConformanceMachine(RuleBasedStateMachine):
    """Drives a store and a dict with the same calls; they must agree after every step."""

    factory: StoreFactory
    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.subject = type(self).factory()
        self.store = self.subject.store
        self.model: dict[str, StoredSession] = {}
        self.etags: dict[str, str] = {}

    @initialize()
    def start_empty(self) -> None:
        assert isinstance(self.store.backend, Backend)
        assert self.store.list() == []

    @rule(target=ids, session_id=IDS)
    def add_id(self, session_id: str) -> str:
        return session_id

    @rule(session_id=ids, session=_PLACEHOLDER)
    def save(self, session_id: str, session: StoredSession) -> None:
        session = _with_id(session, session_id)
        etag = self.store.save(session)
        # Etags are the digest of the encoded bytes: equal across every backend.
        assert etag == content_etag(encode(session))
        self.model[session_id] = session
        self.etags[session_id] = etag

    @rule(session_id=ids, session=_PLACEHOLDER)
    def create(self, session_id: str, session: StoredSession) -> None:
        session = _with_id(session, session_id)
        if session_id in self.model:
            with pytest.raises(ConflictError):
                self.store.create(session)
        else:
            self.etags[session_id] = self.store.create(session)
            self.model[session_id] = session

    @rule(session_id=ids)
    def load(self, session_id: str) -> None:
        if session_id in self.model:
            session, etag = self.store.load_with_etag(session_id)
            assert session == self.model[session_id]
            assert etag == self.etags[session_id]
        else:
            with pytest.raises(SessionNotFoundError):
                self.store.load(session_id)

    @rule(session_id=ids, session=_PLACEHOLDER)
    def save_if_match_current(self, session_id: str, session: StoredSession) -> None:
        session = _with_id(session, session_id)
        if session_id not in self.model:
            with pytest.raises(ConflictError):
                self.store.save(session, if_match=content_etag(b"never stored"))
            return
        etag = self.store.save(session, if_match=self.etags[session_id])
        self.model[session_id] = session
        self.etags[session_id] = etag

    @rule(session_id=ids, session=_PLACEHOLDER)
    def save_if_match_stale(self, session_id: str, session: StoredSession) -> None:
        session = _with_id(session, session_id)
        stale = content_etag(b"a version that was never stored")
        with pytest.raises(ConflictError):
            self.store.save(session, if_match=stale)

    @rule(
        session_id=ids,
        messages=st.lists(sst.texts(max_size=20), max_size=3),
        tokens=st.integers(0, 5),
    )
    def append_messages(self, session_id: str, messages: list[str], tokens: int) -> None:
        current = self.model.get(session_id)
        if current is not None and current.input_tokens + tokens > MAX_TOKENS:
            with pytest.raises(ValueError, match="input_tokens"):
                self.store.append_messages(session_id, messages, input_tokens=tokens)
            return
        new = self.store.append_messages(session_id, messages, input_tokens=tokens)
        before = current.messages if current is not None else ()
        assert new.messages == before + tuple(messages)
        assert new.input_tokens == tokens + (current.input_tokens if current else 0)
        assert new.output_tokens == (current.output_tokens if current else 0)
        if current is not None:
            assert new.created_at == current.created_at
            assert new.metadata == current.metadata
        self.model[session_id] = new
        self.etags[session_id] = content_etag(encode(new))

    @rule(session_id=ids, message=sst.texts(max_size=20))
    def update(self, session_id: str, message: str) -> None:
        def add(session: StoredSession) -> StoredSession:
            return replace(session, messages=(*session.messages, message))

        if session_id not in self.model:
            with pytest.raises(SessionNotFoundError):
                self.store.update(session_id, add)
            return
        new = self.store.update(session_id, add)
        assert new == add(self.model[session_id])
        self.model[session_id] = new
        self.etags[session_id] = content_etag(encode(new))

    @rule(session_id=ids)
    def update_that_raises_writes_nothing(self, session_id: str) -> None:
        def boom(session: StoredSession) -> StoredSession:
            raise RuntimeError(f"update function failed on {session.session_id}")

        expected: type[Exception] = (
            RuntimeError if session_id in self.model else SessionNotFoundError
        )
        with pytest.raises(expected):
            self.store.update(session_id, boom)

    @rule(session_id=ids)
    def delete(self, session_id: str) -> None:
        assert self.store.delete(session_id) is (session_id in self.model)
        assert self.store.delete(session_id) is False
        self.model.pop(session_id, None)
        self.etags.pop(session_id, None)

    @rule(session_id=ids)
    def exists(self, session_id: str) -> None:
        assert self.store.exists(session_id) is (session_id in self.model)

    @precondition(lambda self: self.subject.reopen is not None)
    @rule()
    def reopen(self) -> None:
        assert self.subject.reopen is not None
        self.store = self.subject.reopen()

    @precondition(lambda self: self.subject.failing_save is not None)
    @rule(session_id=ids, session=_PLACEHOLDER)
    def save_fails_before_it_lands(self, session_id: str, session: StoredSession) -> None:
        assert self.subject.failing_save is not None
        with self.subject.failing_save(), pytest.raises(SessionWriteError):
            self.store.save(_with_id(session, session_id))
        # The model is unchanged: the old version (or nothing) must still be there;
        # the invariants and the next load check it.

    @invariant()
    def listing_matches_model(self) -> None:
        assert self.store.list() == sorted(self.model)

    @invariant()
    def extra_check(self) -> None:
        if self.subject.check is not None:
            self.subject.check()

    def teardown(self) -> None:
        self.subject.close()


def make_state_machine(
    factory: StoreFactory, *, name: str = "StoreConformance"
) -> type[RuleBasedStateMachine]:
    """A state machine class checking the stores ``factory`` makes against a dict model.

    Use ``make_state_machine(factory).TestCase`` as a test class (pytest or
    unittest). Rules: save, create, load (with etag), save with a current or stale
    ``if_match``, append_messages, update (also one that raises), delete (twice),
    exists, and, when the subject offers them, reopen and a failing save.
    """
    return type(name, (_ConformanceMachine,), {"factory": staticmethod(factory)})


def check_round_trip(store: BackendSessionStore, session: StoredSession) -> None:
    """Save ``session`` and load it back equal, with the etag of its encoded bytes."""
    etag = store.save(session)
    assert etag == content_etag(encode(session))
    loaded, loaded_etag = store.load_with_etag(session.session_id)
    assert loaded == session
    assert loaded_etag == etag
    assert store.exists(session.session_id)
    assert session.session_id in store.list()


def check_delete_idempotence(store: BackendSessionStore, ops: Iterable[tuple[str, str]]) -> None:
    """Apply ``("save" | "delete", id)`` operations; delete, exists, list and load must agree.

    ``store`` must start empty.
    """
    present: set[str] = set()
    ids = set()
    for op, session_id in ops:
        ids.add(session_id)
        if op == "save":
            store.save(
                StoredSession(
                    session_id=session_id, messages=(op,), input_tokens=0, output_tokens=0
                )
            )
            present.add(session_id)
        else:
            assert store.delete(session_id) is (session_id in present)
            assert store.delete(session_id) is False
            present.discard(session_id)
        assert store.list() == sorted(present)
        for other in ids:
            assert store.exists(other) is (other in present)
            if other in present:
                assert store.load(other).session_id == other
            else:
                with pytest.raises(SessionNotFoundError):
                    store.load(other)


def round_trip_test(factory: StoreFactory) -> Callable[[], None]:
    """A Hypothesis test: every generated session survives save and load (and reopen)."""

    @given(sst.sessions())
    def test_round_trip(session: StoredSession) -> None:
        subject = factory()
        try:
            check_round_trip(subject.store, session)
            if subject.reopen is not None:
                assert subject.reopen().load(session.session_id) == session
        finally:
            subject.close()

    return test_round_trip


def delete_idempotence_test(factory: StoreFactory) -> Callable[[], None]:
    """A Hypothesis test: ``check_delete_idempotence`` over generated save/delete sequences."""

    @given(_OPS)
    def test_delete_idempotence(ops: list[tuple[str, str]]) -> None:
        subject = factory()
        try:
            check_delete_idempotence(subject.store, ops)
            if subject.check is not None:
                subject.check()
        finally:
            subject.close()

    return test_delete_idempotence
