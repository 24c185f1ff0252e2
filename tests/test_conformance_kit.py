"""The test kit as a third party meets it: imports, errors, assertion messages, the suite class."""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sessionstore.testing
from sessionstore import MemorySessionStore, SessionTooLargeError, StoredSession
from sessionstore.asyncstore import AsyncMemorySessionStore
from sessionstore.testing import StoreFactory, StoreUnderTest
from sessionstore.testing.adapt import blocking_store
from sessionstore.testing.appends import check_appends
from sessionstore.testing.concurrency import (
    Sizes,
    check_concurrent_history,
    check_concurrent_tasks,
)
from sessionstore.testing.conformance import conformance_suite
from tests.test_store_stateful import async_memory_subject, memory_subject

SRC = Path(sessionstore.testing.__file__).parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


def test_what_a_factory_needs_is_exported_from_the_kit() -> None:
    assert set(sessionstore.testing.__all__) == {"StoreFactory", "StoreUnderTest"}
    factory: StoreFactory = memory_subject
    assert isinstance(factory(), StoreUnderTest)


@pytest.mark.parametrize("missing", ["hypothesis", "pytest"])
def test_a_missing_test_dependency_names_the_testing_extra(missing: str) -> None:
    result = _python(
        f"""
        import sys
        sys.modules[{missing!r}] = None  # as if it were not installed
        try:
            import sessionstore.testing.conformance
        except ImportError as exc:
            print(exc.name, exc, sep="|")
        """
    )
    name, message = result.stdout.strip().split("|")
    assert name == missing
    assert "pip install 'sessionstore[testing]'" in message
    assert missing in message


def test_failed_kit_assertions_show_the_values_they_compared(tmp_path: Path) -> None:
    """The kit's modules are rewritten by pytest like test modules, so a failure inside
    them shows both values, not only the message."""
    (tmp_path / "test_backend.py").write_text(
        textwrap.dedent(
            """
            from sessionstore import MemorySessionStore, StoredSession
            from sessionstore.testing.conformance import check_round_trip

            class WrongEtag(MemorySessionStore):
                def load_with_etag(self, session_id):
                    return super().load_with_etag(session_id)[0], "etag-from-elsewhere"

            def test_round_trip():
                session = StoredSession(
                    session_id="chat-1", messages=(), input_tokens=0, output_tokens=0
                )
                check_round_trip(WrongEtag(), session)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_backend.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "load_with_etag must give the etag that save returned" in result.stdout
    assert "assert 'etag-from-elsewhere' == " in result.stdout, result.stdout


def test_an_opener_that_cannot_reach_another_process_is_refused_clearly() -> None:
    store = MemorySessionStore()
    subject = StoreUnderTest(store, opener=lambda: store)  # a lambda does not pickle
    with pytest.raises(TypeError, match=r"cannot be sent to another process.*multiprocess=False"):
        check_concurrent_history(subject, Sizes(ops=1))


def opener_that_fails() -> MemorySessionStore:
    """Module level, so that a worker process can unpickle it, and fail."""
    msg = "no storage in this process"
    raise RuntimeError(msg)


def opener_that_exits() -> MemorySessionStore:
    """A worker process that dies before it can report."""
    os._exit(3)


def test_a_worker_process_that_cannot_open_the_storage_is_reported() -> None:
    subject = StoreUnderTest(MemorySessionStore(), opener=opener_that_fails)
    violations = check_concurrent_history(subject, Sizes(threads=1, ops=5, timeout=60))
    text = "\n".join(violations)
    assert "worker process p0 failed" in text
    assert "worker process p1 failed" in text
    assert "RuntimeError: no storage in this process" in text


def test_a_worker_process_that_dies_leaves_the_history_unchecked() -> None:
    subject = StoreUnderTest(MemorySessionStore(), opener=opener_that_exits)
    # The worker exits (code 3) as soon as it has started: the generous timeout only
    # keeps a slow start-up (a loaded CI machine) from being mistaken for a hang.
    violations = check_concurrent_history(subject, Sizes(threads=1, ops=5, timeout=120))
    assert "worker process p0 did not report within 120 s (exit code 3)" in "\n".join(violations)
    assert violations[-1] == "the history was not checked: the calls of a lost process are unknown"


def test_the_knobs_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONSTORE_CONFORMANCE_OPS", "7")
    monkeypatch.setenv("SESSIONSTORE_CONFORMANCE_SEED", "0")
    monkeypatch.setenv("SESSIONSTORE_CONFORMANCE_TIMEOUT", "2.5")
    assert Sizes.from_environment() == Sizes(ops=7, seed=0, timeout=2.5)
    monkeypatch.setenv("SESSIONSTORE_CONFORMANCE_OPS", "many")
    with pytest.raises(
        ValueError,
        match="SESSIONSTORE_CONFORMANCE_OPS must be an integer of at least 1, not 'many'",
    ):
        Sizes.from_environment()


def test_the_suite_class_holds_every_rule_and_runs() -> None:
    suite = conformance_suite(memory_subject, name="TestMemorySuite")
    tests = sorted(name for name in vars(suite) if name.startswith("test_"))
    assert tests == [
        "test_appends_keys_and_folds",
        "test_concurrent_history_is_linearizable",
        "test_concurrent_tasks_are_linearizable",
        "test_delete_idempotence",
        "test_fork_while_a_lock_is_held",
        "test_max_bytes_holds_on_every_write",
        "test_nested_writes_in_concurrent_updates",
        "test_round_trip",
        "test_state_machine",
        "test_two_store_objects_on_one_storage",
    ]
    instance = suite()
    instance.test_max_bytes_holds_on_every_write()
    instance.test_concurrent_history_is_linearizable()
    instance.test_appends_keys_and_folds()


def test_a_rule_skips_with_a_reason_when_the_subject_lacks_what_it_needs() -> None:
    suite = conformance_suite(
        functools.partial(StoreUnderTest, MemorySessionStore()), name="TestBare"
    )
    with pytest.raises(pytest.skip.Exception, match=r"needs StoreUnderTest\.opener"):
        suite().test_two_store_objects_on_one_storage()


# -- async stores, as the kit takes them --------------------------------------------------


def test_the_suite_class_takes_an_async_store_as_it_is() -> None:
    suite = conformance_suite(async_memory_subject, name="TestAsyncMemorySuite")
    instance = suite()
    instance.test_concurrent_tasks_are_linearizable()
    instance.test_max_bytes_holds_on_every_write()
    instance.test_fork_while_a_lock_is_held()


def test_the_check_functions_take_an_async_store_and_close_their_view() -> None:
    async_store = AsyncMemorySessionStore()
    assert check_appends(async_store, key_memory=20) == []
    # The view closed the store when it was done: its workers take no more calls.
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(async_store.load("append-keys"))


def test_a_small_max_bytes_copy_of_a_view_leaves_the_view_and_its_store_as_they_were() -> None:
    view = blocking_store(AsyncMemorySessionStore(max_bytes=10_000))
    try:
        small = copy.copy(view)
        small.max_bytes = 100
        assert (small.max_bytes, view.max_bytes, view.async_store.max_bytes) == (
            100,
            10_000,
            10_000,
        )
        session = StoredSession(
            session_id="s", messages=("x" * 200,), input_tokens=0, output_tokens=0
        )
        view.save(session)
        with pytest.raises(SessionTooLargeError):
            small.load("s")
    finally:
        view.close()


def test_the_tasks_rule_refuses_a_sync_store() -> None:
    with pytest.raises(TypeError, match="the tasks rule needs an async store"):
        check_concurrent_tasks(StoreUnderTest(MemorySessionStore()), Sizes(ops=1))


def test_an_async_opener_that_cannot_reach_another_process_is_refused_clearly() -> None:
    store = AsyncMemorySessionStore()
    subject = StoreUnderTest(store, opener=lambda: AsyncMemorySessionStore())
    try:
        with pytest.raises(TypeError, match=r"cannot be sent to another process"):
            check_concurrent_tasks(subject, Sizes(ops=1))
    finally:
        asyncio.run(store.close())
