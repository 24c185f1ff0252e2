"""The classic broken backends: the conformance suite must catch each of them.

Each broken backend wraps a working one and gets one thing wrong. Each test runs the
part of the suite that should catch it and asserts that it does: a suite that passes
these backends would prove nothing. ``docs/testing-kit.md`` has the time each took
to be caught; with ``SESSIONSTORE_KIT_TIMINGS=path.json`` this module writes the
times of the run there (they are never asserted).

| backend | what it gets wrong |
|---|---|
| lost delete | ``delete`` returns True and unlists the id, but its bytes stay readable |
| stale etag | ``write`` returns the etag of the version it replaced |
| unsorted list | ``list_ids`` in insertion order |
| ignored if_match | ``write`` writes whatever ``if_match`` says |
| no-op lock | ``lock`` does nothing (over the memory and the file backend) |
| ignored max_bytes | ``read`` returns documents over ``max_bytes`` |
| no write limit | the store writes sessions over ``max_bytes`` (a store, not a backend) |
| no append limit | the store's appends add records past ``max_bytes`` (a store) |
| ignored keys | ``append`` drops its key: a retry appends again (a store) |
| compact by save | ``compact`` saves the loaded session: new etag, keys forgotten (a store) |
| append ignores if_match | ``append`` drops its ``if_match`` (a store) |

Some of them are also wrapped in an async store (``AsyncBackendSessionStore``), which
the kit takes as it is: the bug must still be caught through the async class.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from sessionstore import BackendSessionStore, SessionStoreError, StoredSession
from sessionstore.appendlog import AppendResult, Target
from sessionstore.asyncstore import AsyncBackendSessionStore
from sessionstore.backends.base import Backend, content_etag
from sessionstore.backends.filesystem import FileSystemBackend
from sessionstore.backends.memory import MemoryBackend
from sessionstore.testing import StoreUnderTest
from sessionstore.testing.appends import check_appends
from sessionstore.testing.concurrency import (
    Sizes,
    check_concurrent_history,
    check_concurrent_tasks,
)
from sessionstore.testing.conformance import (
    check_delete_idempotence,
    make_state_machine,
)
from sessionstore.testing.limits import check_max_bytes

TIMINGS: dict[str, float] = {}


def _searching_hard_enough(base: settings) -> settings:
    """The machine's settings, with at least the ``ci`` profile's search (a smaller
    profile, as CI uses on the other Pythons, must not let a broken store pass), and no
    example database: each run must find the bug afresh, as on a new checkout."""
    return settings(
        base,
        database=None,
        max_examples=max(60, base.max_examples),
        stateful_step_count=max(50, base.stateful_step_count),
    )


class _Wrapper:
    """A backend that forwards everything to ``inner``; subclasses break one method."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    # Every member of the Backend protocol is forwarded by name: from Python 3.12 on,
    # isinstance() against a runtime-checkable protocol looks members up statically and
    # does not see what __getattr__ would provide.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def description(self) -> str:
        return f"{type(self).__name__} over {self.inner.description}"

    def location(self, session_id: str) -> object:
        return self.inner.location(session_id)

    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        return self.inner.read(session_id, max_bytes=max_bytes)  # type: ignore[no-any-return]

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        return str(self.inner.write(session_id, data, if_match=if_match))

    def create(self, session_id: str, data: bytes) -> str:
        return str(self.inner.create(session_id, data))

    def delete(self, session_id: str) -> bool:
        return bool(self.inner.delete(session_id))

    def exists(self, session_id: str) -> bool:
        return bool(self.inner.exists(session_id))

    def list_ids(self) -> list[str]:
        return list(self.inner.list_ids())

    def lock(self, session_id: str) -> AbstractContextManager[None]:
        return self.inner.lock(session_id)  # type: ignore[no-any-return]


class LostDelete(_Wrapper):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.hidden: set[str] = set()

    def delete(self, session_id: str) -> bool:
        if session_id in self.hidden or not self.inner.exists(session_id):
            return False
        self.hidden.add(session_id)
        return True

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        self.hidden.discard(session_id)
        return str(self.inner.write(session_id, data, if_match=if_match))

    def list_ids(self) -> list[str]:
        return [i for i in self.inner.list_ids() if i not in self.hidden]


class StaleEtag(_Wrapper):
    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        before = self.inner.read(session_id, max_bytes=2**62)
        etag = self.inner.write(session_id, data, if_match=if_match)
        return content_etag(before) if before is not None else str(etag)


class UnsortedList(_Wrapper):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.order: dict[str, None] = {}

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        etag = self.inner.write(session_id, data, if_match=if_match)
        self.order.setdefault(session_id)
        return str(etag)

    def create(self, session_id: str, data: bytes) -> str:
        etag = self.inner.create(session_id, data)
        self.order.setdefault(session_id)
        return str(etag)

    def list_ids(self) -> list[str]:
        present = set(self.inner.list_ids())
        return [i for i in self.order if i in present]


class IgnoredIfMatch(_Wrapper):
    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        return str(self.inner.write(session_id, data))


class NoOpLock(_Wrapper):
    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        yield


class IgnoredMaxBytes(_Wrapper):
    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        data: bytes | None = self.inner.read(session_id, max_bytes=2**62)
        return data


def memory(wrapper: type[_Wrapper]) -> Callable[[], StoreUnderTest]:
    """A factory of stores over ``wrapper(MemoryBackend())``."""

    def factory() -> StoreUnderTest:
        backend = wrapper(MemoryBackend())
        return StoreUnderTest(
            BackendSessionStore(backend),
            reopen=lambda: BackendSessionStore(backend),
            opener=lambda: BackendSessionStore(backend),
            multiprocess=False,
        )

    return factory


def open_no_op_lock_files(directory: str) -> BackendSessionStore:
    """A store over ``NoOpLock(FileSystemBackend(directory))``: picklable as a partial."""
    return BackendSessionStore(NoOpLock(FileSystemBackend(Path(directory), durable=False)))


def no_op_lock_files() -> StoreUnderTest:
    folder = tempfile.mkdtemp(prefix="sessionstore-broken-")
    return StoreUnderTest(
        open_no_op_lock_files(folder),
        opener=functools.partial(open_no_op_lock_files, folder),
        cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
    )


CAUGHT = (AssertionError, SessionStoreError, pytest.fail.Exception)
"""How a failed check shows: an assert, an error the model did not expect, or
``pytest.raises`` that saw no error."""

MACHINE_IDS = {"a", "b", "c-1", "D_2", "x" * 128}


@contextmanager
def timed(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        TIMINGS[name] = round(time.perf_counter() - start, 3)


def teardown_module() -> None:
    target = os.environ.get("SESSIONSTORE_KIT_TIMINGS")
    if target:
        Path(target).write_text(json.dumps(TIMINGS, indent=2, sort_keys=True) + "\n")


def test_the_wrappers_are_backends() -> None:
    for wrapper in (LostDelete, StaleEtag, UnsortedList, IgnoredIfMatch, NoOpLock):
        assert isinstance(wrapper(MemoryBackend()), Backend)


@pytest.mark.parametrize(
    "wrapper", [LostDelete, StaleEtag, UnsortedList, IgnoredIfMatch], ids=lambda w: w.__name__
)
def test_the_state_machine_catches_it_and_names_real_ids(wrapper: type[_Wrapper]) -> None:
    machine = make_state_machine(memory(wrapper), name=f"{wrapper.__name__}Machine")
    with timed(f"state machine: {wrapper.__name__}"), pytest.raises(CAUGHT) as caught:
        # No example database: each run must find the bug afresh, as on a new checkout.
        run_state_machine_as_test(
            machine, settings=_searching_hard_enough(machine.TestCase.settings)
        )
    steps = "\n".join(getattr(caught.value, "__notes__", []))
    assert "state = " in steps, steps
    named = re.findall(r"session_id='([^']*)'", steps)
    assert named, steps
    assert set(named) <= MACHINE_IDS, f"a counterexample names ids the store never saw: {named}"


def test_delete_idempotence_catches_a_lost_delete() -> None:
    subject = memory(LostDelete)()
    with timed("delete idempotence: LostDelete"), pytest.raises(CAUGHT):
        check_delete_idempotence(subject.store, [("save", "a"), ("delete", "a")])


def test_the_max_bytes_rule_catches_ignored_max_bytes() -> None:
    store = memory(IgnoredMaxBytes)().store
    with timed("max_bytes rule: IgnoredMaxBytes"):
        violations = check_max_bytes(store)
    assert any("returned it although max_bytes is 4096" in v for v in violations), violations
    assert check_max_bytes(memory(_Wrapper)().store) == []


class NoWriteLimit(BackendSessionStore):
    """A store that writes whatever size (issue 9, finding 6: sessionstore before 0.2).

    Every write path (save, create, update, and the folds of appends) checks sizes
    through ``_check_size``; appends that add a record line check ``Target.max_bytes``
    (see ``NoAppendLimit``)."""

    def _check_size(self, session: StoredSession, data: bytes) -> bytes:
        return data


def test_the_max_bytes_rule_catches_writes_that_ignore_max_bytes() -> None:
    with timed("max_bytes rule: NoWriteLimit"):
        violations = check_max_bytes(NoWriteLimit(MemoryBackend()))
    # append_messages loads what it wrote, so it raises after it wrote: a refusal
    # that changed the session.
    caught = [
        v
        for v in violations
        if "its own load refuses it" in v or "refused, but the stored session changed" in v
    ]
    methods = ("save", "save(if_match=)", "create", "update", "append_messages", "append")
    for method in (*methods, "append(key=)"):
        assert any(v.startswith(f"{method} of ") for v in caught), violations


class NoAppendLimit(BackendSessionStore):
    """A store whose appends add record lines whatever the size: only a fold (a whole
    snapshot) is held to ``max_bytes``."""

    def _target(self, session_id: str) -> Target:
        return Target(self.backend, session_id, 2**62, self._check_size)


def test_the_max_bytes_rule_catches_records_that_grow_past_max_bytes() -> None:
    with timed("max_bytes rule: NoAppendLimit"):
        violations = check_max_bytes(NoAppendLimit(MemoryBackend()))
    assert any(
        "the records grew the session past max_bytes 4096), but its own load refuses it" in v
        for v in violations
    ), violations


def test_the_concurrency_rule_catches_a_no_op_lock_over_memory() -> None:
    with timed("concurrency rule (threads): NoOpLock over memory"):
        violations = check_concurrent_history(memory(NoOpLock)(), Sizes.from_environment())
    assert violations, "a backend whose lock does nothing passed the concurrency rule"
    assert "acknowledged write lost" in "\n".join(violations) or "no order" in violations[-1]


def test_the_concurrency_rule_catches_a_no_op_lock_over_files() -> None:
    subject = no_op_lock_files()
    try:
        with timed("concurrency rule (threads and processes): NoOpLock over files"):
            violations = check_concurrent_history(subject, Sizes.from_environment())
    finally:
        subject.close()
    assert violations, "a backend whose lock does nothing passed the concurrency rule"


class IgnoredKeys(BackendSessionStore):
    def append(self, session_id: str, messages: Any, **options: Any) -> AppendResult:
        options.pop("key", None)
        return super().append(session_id, messages, **options)


class CompactBySave(BackendSessionStore):
    def compact(self, session_id: str) -> str:
        return self.save(self.load(session_id))


class AppendIgnoresIfMatch(BackendSessionStore):
    def append(self, session_id: str, messages: Any, **options: Any) -> AppendResult:
        options.pop("if_match", None)
        return super().append(session_id, messages, **options)


BROKEN_APPENDS = {
    IgnoredKeys: "exactly-once keys: a retry of key 'k1' on 'append-keys' returned replayed=False",
    CompactBySave: "compact: compact of 'append-compact' returned etag",
    AppendIgnoresIfMatch: "if_match: append to 'append-if-match' with if_match on a missing",
}


def memory_store(store_class: type[BackendSessionStore]) -> Callable[[], StoreUnderTest]:
    """A factory of ``store_class`` stores over a ``MemoryBackend``."""

    def factory() -> StoreUnderTest:
        backend = MemoryBackend()
        return StoreUnderTest(
            store_class(backend),
            reopen=lambda: store_class(backend),
            opener=lambda: store_class(backend),
            multiprocess=False,
        )

    return factory


@pytest.mark.parametrize("store_class", list(BROKEN_APPENDS), ids=lambda c: c.__name__)
def test_the_appends_rule_catches_it(store_class: type[BackendSessionStore]) -> None:
    with timed(f"appends rule: {store_class.__name__}"):
        # 50 keys, not 1000: the key memory is not what these get wrong.
        violations = check_appends(store_class(MemoryBackend()), key_memory=50)
    assert any(v.startswith(BROKEN_APPENDS[store_class]) for v in violations), violations


def test_the_appends_rule_passes_a_working_store() -> None:
    assert check_appends(BackendSessionStore(MemoryBackend()), key_memory=50) == []


# IgnoredKeys is caught by the machine too, but in 12 to 165 s (shrinking): too slow
# for CI; the appends and concurrency rules catch it in under 0.1 s.
@pytest.mark.parametrize("store_class", [CompactBySave], ids=lambda c: c.__name__)
def test_the_state_machine_catches_a_broken_append(store_class: type[BackendSessionStore]) -> None:
    name = f"{store_class.__name__}Machine"
    machine = make_state_machine(memory_store(store_class), name=name)
    # A compact that changes the etag shows only after an append (about 1 example in
    # 35): the ci search of 60 missed it about once in six runs; 400 miss about once
    # in 100,000 (and take ~7 s when they find nothing).
    search = settings(_searching_hard_enough(machine.TestCase.settings), max_examples=400)
    with timed(f"state machine: {store_class.__name__}"), pytest.raises(CAUGHT) as caught:
        run_state_machine_as_test(machine, settings=search)
    steps = "\n".join(getattr(caught.value, "__notes__", []))
    assert "state = " in steps, steps


def test_the_concurrency_rule_catches_ignored_keys() -> None:
    subject = memory_store(IgnoredKeys)()
    with timed("concurrency rule (threads): IgnoredKeys"):
        violations = check_concurrent_history(subject, Sizes.from_environment())
    assert violations, "a store whose append ignores keys passed the concurrency rule"
    assert "no order" in "\n".join(violations), violations


# -- the same broken backends and stores, in an async store -----------------------------
# The kit takes an async store as it is (it runs the rules through a BlockingView, and
# the tasks rule on the store's loop): a bug under the async class must still be caught.


def in_async_store(store_class: type[BackendSessionStore], backend: Any) -> Any:
    """An async store over ``store_class(backend)``."""
    return AsyncBackendSessionStore(store_class(backend))


def async_memory(
    wrapper: type[_Wrapper] | None = None,
    store_class: type[BackendSessionStore] = BackendSessionStore,
) -> Callable[[], StoreUnderTest]:
    """A factory of async stores over ``store_class`` over a (wrapped) ``MemoryBackend``."""

    def factory() -> StoreUnderTest:
        backend = wrapper(MemoryBackend()) if wrapper is not None else MemoryBackend()
        open_store = functools.partial(in_async_store, store_class, backend)
        return StoreUnderTest(
            open_store(), reopen=open_store, opener=open_store, multiprocess=False
        )

    return factory


def open_async_no_op_lock_files(directory: str) -> Any:
    """An async store over ``NoOpLock(FileSystemBackend(directory))``: picklable as a partial."""
    return AsyncBackendSessionStore(open_no_op_lock_files(directory))


# StaleEtag is caught too, in about 15 s (shrinking through the view): left out of CI.
@pytest.mark.parametrize("wrapper", [IgnoredIfMatch], ids=lambda w: w.__name__)
def test_the_state_machine_catches_it_in_an_async_store(wrapper: type[_Wrapper]) -> None:
    machine = make_state_machine(async_memory(wrapper), name=f"Async{wrapper.__name__}Machine")
    with timed(f"state machine, async: {wrapper.__name__}"), pytest.raises(CAUGHT) as caught:
        run_state_machine_as_test(
            machine, settings=_searching_hard_enough(machine.TestCase.settings)
        )
    assert "state = " in "\n".join(getattr(caught.value, "__notes__", []))


@pytest.mark.parametrize("store_class", list(BROKEN_APPENDS), ids=lambda c: c.__name__)
def test_the_appends_rule_catches_it_in_an_async_store(
    store_class: type[BackendSessionStore],
) -> None:
    store = in_async_store(store_class, MemoryBackend())
    with timed(f"appends rule, async: {store_class.__name__}"):
        violations = check_appends(store, key_memory=50)
    assert any(v.startswith(BROKEN_APPENDS[store_class]) for v in violations), violations


def test_the_max_bytes_rule_catches_writes_that_ignore_max_bytes_in_an_async_store() -> None:
    with timed("max_bytes rule, async: NoWriteLimit"):
        violations = check_max_bytes(in_async_store(NoWriteLimit, MemoryBackend()))
    assert any(v.startswith("save of ") and "its own load refuses it" in v for v in violations)


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(async_memory(NoOpLock), id="no-op lock"),
        pytest.param(async_memory(store_class=IgnoredKeys), id="ignored keys"),
    ],
)
@pytest.mark.parametrize(
    "rule", [check_concurrent_history, check_concurrent_tasks], ids=["threads", "tasks"]
)
def test_the_concurrency_rules_catch_it_in_an_async_store(
    rule: Callable[[StoreUnderTest, Sizes], list[str]], factory: Callable[[], StoreUnderTest]
) -> None:
    with timed(f"{rule.__name__}, async memory: {factory}"):
        violations = rule(factory(), Sizes.from_environment())
    assert violations, "a broken store under an async class passed the concurrency rule"


def few_tasks() -> Sizes:
    """Sizes for a broken store over files: 7 clients of 30 calls (3 tasks here, 2 in
    each of 2 processes). Its history is full of errors, calls of unknown outcome, and
    the exact search of such a history can take minutes: with the default 12 clients
    of 100 calls (at first 16), 4 of 12 runs took over 10 s, up to 200 s; with 8
    clients of 40 calls, one of 25 took 85 s. At these sizes: under 6 s in 30 runs,
    and caught in every one of 50."""
    return dataclasses.replace(Sizes.from_environment(), tasks=3, tasks_per_process=2, ops=30)


def test_the_tasks_rule_catches_a_no_op_lock_over_files_from_tasks_in_processes() -> None:
    folder = tempfile.mkdtemp(prefix="sessionstore-broken-")
    subject = StoreUnderTest(
        open_async_no_op_lock_files(folder),
        opener=functools.partial(open_async_no_op_lock_files, folder),
        cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
    )
    try:
        with timed("tasks rule (tasks and processes): NoOpLock over files, async"):
            violations = check_concurrent_tasks(subject, few_tasks())
    finally:
        subject.close()
    assert violations, "an async store whose lock does nothing passed the tasks rule"


def test_the_async_wrappers_pass_over_working_storage() -> None:
    """The catches above are the bugs', not the async wrapping's."""
    assert check_appends(in_async_store(BackendSessionStore, MemoryBackend()), key_memory=50) == []
    assert check_concurrent_tasks(async_memory()(), Sizes.from_environment()) == []
