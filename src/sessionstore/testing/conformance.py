"""The backend conformance suite: what every backend must do, as pytest tests.

Run all of it against your own ``Backend`` with one factory and one line::

    from sessionstore import BackendSessionStore
    from sessionstore.testing import StoreUnderTest
    from sessionstore.testing.conformance import conformance_suite

    def subject() -> StoreUnderTest:  # called for every test and example: new, empty storage
        backend = MyBackend.create_empty()
        return StoreUnderTest(
            BackendSessionStore(backend),
            reopen=lambda: BackendSessionStore(MyBackend.open(backend.address)),
            opener=functools.partial(open_my_store, backend.address),  # picklable
            cleanup=backend.destroy,
        )

    TestMyBackend = conformance_suite(subject)

An async store (``AsyncSessionStore``, ``AsyncMemorySessionStore``,
``AsyncPostgresSessionStore``, or your own class with the same coroutine methods) is
given the same way, ``StoreUnderTest(AsyncMyStore(...), ...)``: the suite detects it,
enters it on an event loop of its own and runs every rule through a ``BlockingView``,
plus the tasks rule, many tasks on that loop (``sessionstore.testing.adapt``).

The pieces are also available one by one: ``make_state_machine(factory).TestCase``,
``round_trip_test``, ``delete_idempotence_test``, ``concurrency_test``, ``tasks_test``,
``fork_test``, ``max_bytes_test``, ``appends_test``, ``two_stores_test`` and
``nested_writes_test``.
``docs/testing-kit.md`` says what each checks, what a backend must do to pass, and
which settings to use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sessionstore.appendlog import AppendResult
from sessionstore.backends.base import Backend
from sessionstore.codec import encode
from sessionstore.errors import ConflictError, SessionNotFoundError, SessionWriteError
from sessionstore.models import MAX_TOKENS, StoredSession
from sessionstore.records import KEY_MEMORY
from sessionstore.store import BackendSessionStore
from sessionstore.testing import strategies as sst
from sessionstore.testing.adapt import blocking_factory, is_async_store, sync_store
from sessionstore.testing.appends import NEVER_ISSUED_ETAG, check_appends
from sessionstore.testing.blocking import BlockingView
from sessionstore.testing.concurrency import (
    Sizes,
    check_concurrent_history,
    check_concurrent_tasks,
)
from sessionstore.testing.limits import check_max_bytes
from sessionstore.testing.locks import (
    check_concurrent_nested_writes,
    check_fork_while_locked,
    check_two_stores,
)
from sessionstore.testing.subject import AnyStore, StoreFactory, StoreUnderTest

__all__ = [
    "IDS",
    "NEVER_ISSUED_ETAG",
    "StoreFactory",
    "StoreUnderTest",
    "appends_test",
    "check_delete_idempotence",
    "check_round_trip",
    "concurrency_test",
    "conformance_suite",
    "delete_idempotence_test",
    "fork_test",
    "make_state_machine",
    "max_bytes_test",
    "nested_writes_test",
    "round_trip_test",
    "tasks_test",
    "two_stores_test",
]

IDS = st.sampled_from(["a", "b", "c-1", "D_2", "x" * 128])
"""A small id pool, so saves, loads and deletes collide."""

_TEXTS = st.sampled_from(["", "hi", "e\u0301t\u00e9", "\U0001f600", "\x00", "two\nlines"])
_WHEN = st.sampled_from(
    [None, datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-9)))]
)
# The machine checks sequences of calls, so its values are few and fixed: a
# counterexample then shrinks in seconds, not minutes (each shrink attempt replays the
# whole sequence). Values of every kind are the round-trip property's job.
_SESSIONS = st.builds(
    StoredSession,
    session_id=IDS,
    messages=st.lists(_TEXTS, max_size=3).map(tuple),
    input_tokens=st.sampled_from([0, 7, MAX_TOKENS]),
    output_tokens=st.sampled_from([0, 3]),
    created_at=_WHEN,
    updated_at=_WHEN,
    metadata=st.sampled_from([{}, {"k": "v"}, {"nested": {"list": [1, None, 2.5, "\u00e9"]}}]),
)

_KEYS = st.sampled_from([None, "k1", "k2"])
"""Few keys, so that appends retry."""

_OPS = st.lists(
    st.tuples(st.sampled_from(["save", "delete"]), st.sampled_from(["a", "b", "c"])),
    max_size=30,
)


class _ConformanceMachine(RuleBasedStateMachine):
    """Drives a store and a dict with the same calls; they must agree after every step.

    Etags are treated as opaque tokens. What is checked: the etag a write returns is
    the one ``load_with_etag`` then gives (until the next write); one etag is never
    given to two different contents of a session (even across a delete); saving the
    same content again gives the same etag; a current etag makes ``if_match``
    succeed, and a stale one (an etag of other content) or one never issued fails it.
    """

    factory: StoreFactory

    def __init__(self) -> None:
        super().__init__()
        self.subject = type(self).factory()
        self.store = self.subject.store
        self.model: dict[str, StoredSession] = {}
        # The etag of the stored version, when known (after an append or an update it
        # is learnt from the next load_with_etag).
        self.etags: dict[str, str | None] = {}
        # Per id: every etag seen and the content it stood for; the etag of each
        # content written by save or create.
        self.contents: dict[str, dict[str, bytes]] = {}
        self.saved: dict[str, dict[bytes, str]] = {}
        # Per id: the append keys the store must remember, with what the first append
        # returned (a save, create or delete forgets them; update and compact keep them).
        self.keys: dict[str, dict[str, AppendResult]] = {}

    def _learn(self, session: StoredSession, etag: str, *, saved: bool) -> None:
        session_id = session.session_id
        content = encode(session)
        seen = self.contents.setdefault(session_id, {})
        assert seen.get(etag, content) == content, (
            f"etag {etag!r} of session {session_id!r} was given to two different contents"
        )
        seen[etag] = content
        if saved:
            earlier = self.saved.setdefault(session_id, {}).setdefault(content, etag)
            assert earlier == etag, (
                f"saving the same content of session {session_id!r} gave etag {etag!r}, "
                f"and {earlier!r} before"
            )
        self.etags[session_id] = etag

    def _current_etag(self, session_id: str) -> str:
        etag = self.etags.get(session_id)
        if etag is None:
            session, etag = self.store.load_with_etag(session_id)
            assert session == self.model[session_id]
            self._learn(session, etag, saved=False)
        return etag

    @initialize()
    def start_empty(self) -> None:
        assert isinstance(self.store.backend, Backend)
        assert self.store.list() == []

    @rule(session=_SESSIONS)
    def save(self, session: StoredSession) -> None:
        etag = self.store.save(session)
        self.model[session.session_id] = session
        self.keys.pop(session.session_id, None)
        self._learn(session, etag, saved=True)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def save_the_same_content_again(self, data: st.DataObject) -> None:
        session = self.model[data.draw(st.sampled_from(sorted(self.model)), label="session_id")]
        self._learn(session, self.store.save(session), saved=True)
        self.keys.pop(session.session_id, None)

    @rule(session=_SESSIONS)
    def create(self, session: StoredSession) -> None:
        if session.session_id in self.model:
            with pytest.raises(ConflictError):
                self.store.create(session)
        else:
            etag = self.store.create(session)
            self.model[session.session_id] = session
            self._learn(session, etag, saved=True)

    @rule(session_id=IDS)
    def load(self, session_id: str) -> None:
        if session_id in self.model:
            session, etag = self.store.load_with_etag(session_id)
            assert session == self.model[session_id]
            known = self.etags.get(session_id)
            assert known in (None, etag), (
                f"load_with_etag({session_id!r}) gives etag {etag!r}; the last write gave {known!r}"
            )
            self._learn(session, etag, saved=False)
        else:
            with pytest.raises(SessionNotFoundError):
                self.store.load(session_id)

    @rule(session=_SESSIONS)
    def save_if_match_current(self, session: StoredSession) -> None:
        session_id = session.session_id
        if session_id not in self.model:
            with pytest.raises(ConflictError):
                self.store.save(session, if_match=NEVER_ISSUED_ETAG)
            return
        etag = self.store.save(session, if_match=self._current_etag(session_id))
        self.model[session_id] = session
        self.keys.pop(session_id, None)
        self._learn(session, etag, saved=True)

    @rule(session=_SESSIONS, data=st.data())
    def save_if_match_stale(self, session: StoredSession, data: st.DataObject) -> None:
        session_id = session.session_id
        etag = data.draw(st.sampled_from(self._stale_etags(session_id)), label="stale etag")
        with pytest.raises(ConflictError):
            self.store.save(session, if_match=etag)

    @rule(
        session_id=IDS,
        messages=st.lists(_TEXTS, max_size=3),
        tokens=st.sampled_from([0, 1, 5]),
    )
    def append_messages(self, session_id: str, messages: list[str], tokens: int) -> None:
        current = self.model.get(session_id)
        if current is not None and current.input_tokens + tokens > MAX_TOKENS:
            with pytest.raises(ValueError, match="token"):
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
        self.etags[session_id] = None

    @rule(
        session_id=IDS,
        messages=st.lists(_TEXTS, max_size=2),
        tokens=st.sampled_from([0, 2]),
        key=_KEYS,
        if_match=st.sampled_from(["none", "current", "stale"]),
        data=st.data(),
    )
    def append(
        self,
        *,
        session_id: str,
        messages: list[str],
        tokens: int,
        key: str | None,
        if_match: str,
        data: st.DataObject,
    ) -> None:
        current = self.model.get(session_id)
        etag: str | None = None
        if if_match == "current" and current is not None:
            etag = self._current_etag(session_id)
        elif if_match != "none":
            etag = data.draw(st.sampled_from(self._stale_etags(session_id)), label="stale etag")
        first = self.keys.get(session_id, {}).get(key) if key is not None else None
        if first is not None:
            # A retry: replayed before if_match or the totals are looked at.
            result = self.store.append(
                session_id, messages, input_tokens=tokens, key=key, if_match=etag
            )
            assert result == replace(first, replayed=True), (
                f"a retry of key {key!r} on {session_id!r} returned {result}; the first "
                f"append returned {first}"
            )
            return
        if etag is not None and (current is None or if_match != "current"):
            with pytest.raises(ConflictError):
                self.store.append(session_id, messages, input_tokens=tokens, key=key, if_match=etag)
            return
        if current is not None and current.input_tokens + tokens > MAX_TOKENS:
            with pytest.raises(ValueError, match="token"):
                self.store.append(session_id, messages, input_tokens=tokens, key=key, if_match=etag)
            return
        result = self.store.append(
            session_id, messages, input_tokens=tokens, key=key, if_match=etag
        )
        loaded, loaded_etag = self.store.load_with_etag(session_id)
        assert loaded_etag == result.etag, (
            f"load_with_etag({session_id!r}) gives etag {loaded_etag!r}; the append returned "
            f"{result.etag!r}"
        )
        before = current.messages if current is not None else ()
        assert loaded.messages == before + tuple(messages)
        assert loaded.input_tokens == tokens + (current.input_tokens if current else 0)
        assert loaded.output_tokens == (current.output_tokens if current else 0)
        totals = (len(loaded.messages), loaded.input_tokens, loaded.output_tokens)
        assert not result.replayed, f"a new append to {session_id!r} returned replayed=True"
        assert (result.message_count, result.input_tokens, result.output_tokens) == totals
        if current is not None:
            assert loaded.created_at == current.created_at
            assert loaded.metadata == current.metadata
        self.model[session_id] = loaded
        self._learn(loaded, loaded_etag, saved=False)
        if key is not None:
            self.keys.setdefault(session_id, {})[key] = result

    @rule(session_id=IDS)
    def compact(self, session_id: str) -> None:
        if session_id not in self.model:
            with pytest.raises(SessionNotFoundError):
                self.store.compact(session_id)
            return
        etag = self._current_etag(session_id)
        assert self.store.compact(session_id) == etag, (
            f"compact({session_id!r}) changed the etag {etag!r}; a fold changes no content"
        )
        session, after = self.store.load_with_etag(session_id)
        assert session == self.model[session_id]
        assert after == etag, f"after compact, load_with_etag({session_id!r}) gives {after!r}"

    def _stale_etags(self, session_id: str) -> list[str]:
        """Never-issued, then in the order seen (not sorted: etag values may differ
        from run to run, and Hypothesis replays draws by index) those of other content."""
        current = self.model.get(session_id)
        current_content = encode(current) if current is not None else None
        return [
            NEVER_ISSUED_ETAG,
            *(
                etag
                for etag, content in self.contents.get(session_id, {}).items()
                if content != current_content
            ),
        ]

    @rule(session_id=IDS, message=_TEXTS)
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
        self.etags[session_id] = None

    @rule(session_id=IDS)
    def update_that_raises_writes_nothing(self, session_id: str) -> None:
        def boom(session: StoredSession) -> StoredSession:
            raise RuntimeError(f"update function failed on {session.session_id}")

        expected: type[Exception] = (
            RuntimeError if session_id in self.model else SessionNotFoundError
        )
        with pytest.raises(expected):
            self.store.update(session_id, boom)

    @rule(session_id=IDS)
    def delete(self, session_id: str) -> None:
        existed = session_id in self.model
        assert self.store.delete(session_id) is existed, (
            f"delete({session_id!r}) must return {existed}"
        )
        assert self.store.delete(session_id) is False, (
            f"a second delete({session_id!r}) must return False"
        )
        self.model.pop(session_id, None)
        self.etags.pop(session_id, None)
        self.keys.pop(session_id, None)

    @rule(session_id=IDS)
    def exists(self, session_id: str) -> None:
        assert self.store.exists(session_id) is (session_id in self.model)

    @precondition(lambda self: self.subject.reopen is not None)
    @rule()
    def reopen(self) -> None:
        assert self.subject.reopen is not None
        self.store = self.subject.reopen()

    @precondition(lambda self: self.subject.failing_save is not None)
    @rule(session=_SESSIONS)
    def save_fails_before_it_lands(self, session: StoredSession) -> None:
        assert self.subject.failing_save is not None
        with self.subject.failing_save(), pytest.raises(SessionWriteError):
            self.store.save(session)
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
    unittest). Rules: save (also of the same content again), create, load (with
    etag), save with a current, stale or never-issued ``if_match``, append_messages,
    update (also one that raises), delete (twice), exists, and, when the subject
    offers them, reopen and a failing save; after every step the listing must match.
    Sessions are drawn from a few fixed values and carry their real id, so a
    counterexample shrinks in seconds and reads as the calls that failed.

    ``TestCase.settings`` is the Hypothesis profile loaded when this is called, with
    ``deadline=None``, every health check off (as Hypothesis does for state machines),
    without the ``explain`` phase (it costs tens of seconds per failure) and with
    ``report_multiple_bugs=False``. Assign ``TestCase.settings`` to change that.
    """
    machine: type[_ConformanceMachine] = type(
        name, (_ConformanceMachine,), {"factory": staticmethod(blocking_factory(factory))}
    )
    test_case = machine.TestCase  # Hypothesis builds it with the profile loaded now
    # Hypothesis's explain phase replays a failing sequence hundreds of times to mark
    # the values that did not matter: 20 to 300 seconds per failure here. And one
    # shrunk bug at a time is what a backend author needs.
    test_case.settings = settings(
        test_case.settings,
        phases=[phase for phase in test_case.settings.phases if phase is not Phase.explain],
        report_multiple_bugs=False,
    )
    # Pinned on the class, so every use of machine.TestCase has these settings.
    setattr(machine, "TestCase", test_case)  # noqa: B010  # mypy: TestCase is read-only
    return machine


def check_round_trip(store: AnyStore, session: StoredSession) -> None:
    """Save ``session``, load it back equal with the etag ``save`` returned; saving it
    again gives the same etag; it exists and is listed. ``store`` may be async."""
    with sync_store(store) as blocking:
        _check_round_trip(blocking, session)


def _check_round_trip(store: BackendSessionStore, session: StoredSession) -> None:
    etag = store.save(session)
    loaded, loaded_etag = store.load_with_etag(session.session_id)
    assert loaded == session
    assert loaded_etag == etag, "load_with_etag must give the etag that save returned"
    assert store.save(session) == etag, "saving the same content again must give the same etag"
    assert store.exists(session.session_id)
    assert session.session_id in store.list()


def check_delete_idempotence(store: AnyStore, ops: Iterable[tuple[str, str]]) -> None:
    """Apply ``("save" | "delete", id)`` operations; delete, exists, list and load must agree.

    ``store`` must start empty; it may be async.
    """
    with sync_store(store) as blocking:
        _check_delete_idempotence(blocking, ops)


def _check_delete_idempotence(store: BackendSessionStore, ops: Iterable[tuple[str, str]]) -> None:
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
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

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
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

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


def _report(rule: str, violations: list[str]) -> str:
    return f"{rule}: {len(violations)} finding(s)\n" + "\n".join(violations)


def concurrency_test(factory: StoreFactory, sizes: Sizes | None = None) -> Callable[[], None]:
    """A test: threads and processes mix every write on shared ids; the history they
    record must be linearizable (see ``concurrency.check_concurrent_history``).

    Processes take part when the subject has an ``opener`` and ``multiprocess``; else
    threads only. Sizes come from ``Sizes.from_environment()`` unless given.
    """
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

    def test_concurrent_history_is_linearizable() -> None:
        subject = factory()
        try:
            violations = check_concurrent_history(subject, sizes)
        finally:
            subject.close()
        assert not violations, _report("concurrent history", violations)

    return test_concurrent_history_is_linearizable


def tasks_test(factory: StoreFactory, sizes: Sizes | None = None) -> Callable[[], None]:
    """A test: many tasks on an async store's event loop (and in other processes, on
    loops of their own) mix every write on shared ids; the history must be
    linearizable (see ``concurrency.check_concurrent_tasks``). Skipped for a sync
    store, whose calls would block the loop."""

    def test_concurrent_tasks_are_linearizable() -> None:
        subject = factory()
        try:
            if not is_async_store(subject.store):
                pytest.skip("the tasks rule is for async stores; this store is sync")
            violations = check_concurrent_tasks(subject, sizes)
        finally:
            subject.close()
        assert not violations, _report("concurrent tasks", violations)

    return test_concurrent_tasks_are_linearizable


def _key_memory() -> int:
    """``SESSIONSTORE_CONFORMANCE_KEYS``: keyed appends of the key-memory check (1000)."""
    value = os.environ.get("SESSIONSTORE_CONFORMANCE_KEYS", "").strip()
    if not value:
        return KEY_MEMORY
    if not value.isdigit() or int(value) < 1:
        msg = f"SESSIONSTORE_CONFORMANCE_KEYS must be an integer of at least 1, not {value!r}"
        raise ValueError(msg)
    return int(value)


def _timeout() -> float:
    return Sizes.from_environment().timeout


def fork_test(factory: StoreFactory) -> Callable[[], None]:
    """A test: a fork while another thread holds a session's lock hangs neither the
    child nor the parent, and (when the storage is shared across processes,
    ``multiprocess``) both their writes land. Skipped where ``os.fork`` does not exist."""
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

    def test_fork_while_a_lock_is_held() -> None:
        if not hasattr(os, "fork"):
            pytest.skip("os.fork is not available on this platform")
        subject = factory()
        try:
            if isinstance(subject.store, BlockingView) and subject.opener is None:
                pytest.skip(
                    "an async store needs StoreUnderTest.opener for the fork rule: a forked "
                    "child cannot run its parent's event loop, so it opens a store of its own"
                )
            violations = check_fork_while_locked(subject, _timeout())
        finally:
            subject.close()
        assert not violations, _report("fork while a lock is held", violations)

    return test_fork_while_a_lock_is_held


def max_bytes_test(factory: StoreFactory) -> Callable[[], None]:
    """A test: no write acknowledges a session its own load refuses, on every write
    method, and documents over ``max_bytes`` are refused on load
    (see ``limits.check_max_bytes``)."""
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

    def test_max_bytes_holds_on_every_write() -> None:
        subject = factory()
        try:
            violations = check_max_bytes(subject.store)
        finally:
            subject.close()
        assert not violations, _report("max_bytes", violations)

    return test_max_bytes_holds_on_every_write


def appends_test(factory: StoreFactory) -> Callable[[], None]:
    """A test: ``append`` round trip and totals, exactly-once keys (also across
    ``compact`` and ``update``, and the latest 1000 of them), ``if_match`` across
    ``append``, ``save`` and ``compact``, and ``compact`` keeping the session and its
    etag (see ``appends.check_appends``); the session also loads after ``reopen``."""
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

    def test_appends_keys_and_folds() -> None:
        subject = factory()
        try:
            violations = check_appends(subject.store, key_memory=_key_memory())
            if not violations and subject.reopen is not None:
                store = subject.reopen()
                retry = store.append("append-keys", ["after reopen"], key="k1")
                if not retry.replayed:
                    violations.append("key 'k1' of 'append-keys' was forgotten by reopen")
        finally:
            subject.close()
        assert not violations, _report("appends", violations)

    return test_appends_keys_and_folds


def two_stores_test(factory: StoreFactory) -> Callable[[], None]:
    """A test: two store objects on one storage; nested writes through one inside the
    other's ``update`` do not deadlock, and each sees the other's writes. Skipped
    without an ``opener``."""
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

    def test_two_store_objects_on_one_storage() -> None:
        subject = factory()
        try:
            if subject.opener is None:
                pytest.skip("needs StoreUnderTest.opener (a second store on the same storage)")
            violations = check_two_stores(subject, _timeout())
        finally:
            subject.close()
        assert not violations, _report("two store objects", violations)

    return test_two_store_objects_on_one_storage


def nested_writes_test(factory: StoreFactory) -> Callable[[], None]:
    """A test: threads that each nest writes to their own sessions inside ``update``
    never deadlock one another (see ``locks.check_concurrent_nested_writes``)."""
    factory = blocking_factory(factory)  # an async store runs through a BlockingView

    def test_nested_writes_in_concurrent_updates() -> None:
        subject = factory()
        try:
            violations = check_concurrent_nested_writes(subject, _timeout())
        finally:
            subject.close()
        assert not violations, _report("nested writes", violations)

    return test_nested_writes_in_concurrent_updates


def conformance_suite(
    factory: StoreFactory, *, name: str = "TestStoreConformance", sizes: Sizes | None = None
) -> type:
    """A pytest test class holding every test of the suite for the stores ``factory`` makes.

    Assign it to a name starting with ``Test`` in a test module. Its tests: the state
    machine, round trip, delete idempotence, concurrent history, concurrent tasks
    (async stores; skipped for a sync one), fork, ``max_bytes``, appends (keys,
    ``if_match``, folds), two store objects and nested writes. ``factory`` may make
    subjects of async stores.
    """
    machine = make_state_machine(factory, name=f"{name}Machine")
    tests: dict[str, Callable[[], None]] = {
        "test_state_machine": lambda: run_state_machine_as_test(machine),
        "test_round_trip": round_trip_test(factory),
        "test_delete_idempotence": delete_idempotence_test(factory),
        "test_concurrent_history_is_linearizable": concurrency_test(factory, sizes),
        "test_concurrent_tasks_are_linearizable": tasks_test(factory, sizes),
        "test_fork_while_a_lock_is_held": fork_test(factory),
        "test_max_bytes_holds_on_every_write": max_bytes_test(factory),
        "test_appends_keys_and_folds": appends_test(factory),
        "test_two_store_objects_on_one_storage": two_stores_test(factory),
        "test_nested_writes_in_concurrent_updates": nested_writes_test(factory),
    }

    def method(test: Callable[[], None]) -> Callable[[object], None]:
        def run(_self: object) -> None:
            test()

        run.__doc__ = test.__doc__
        return run

    namespace: dict[str, object] = {test_name: method(test) for test_name, test in tests.items()}
    namespace["__doc__"] = f"The sessionstore conformance suite for {factory!r}."
    return type(name, (), namespace)
