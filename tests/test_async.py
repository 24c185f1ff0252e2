"""The async API (issue 13): off the loop, cancellation-safe, one set of rules.

The behaviour of every method is checked by the sync tests, which run the async
classes through ``BlockingView`` (see tests/test_appendlog.py and the conformance
tests); this module checks what only an async API has: a free loop while a call
waits, async update functions, cancellation and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sessionstore import (
    LockTimeoutError,
    SessionDeleteError,
    SessionStore,
    StoredSession,
    TransientDeleteError,
)
from sessionstore.asyncstore import AsyncMemorySessionStore, AsyncSessionStore

from .pg import DSN, SKIP_REASON, unique_table

CANCELLATIONS = int(os.environ.get("SESSIONSTORE_ASYNC_CANCELLATIONS", "300"))
"""How many random cancellations the stress test makes (thousands in a soak run)."""


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


HANG = 20.0
"""Seconds after which a call that should finish at once counts as hung."""


KINDS = ["file", "memory", "postgres"]
"""The async classes: folder, memory and PostgreSQL (skipped without its DSN)."""


@contextlib.asynccontextmanager
async def opened(
    kind: str, directory: Path, *, lock_timeout: float = HANG, durable: bool = True
) -> AsyncIterator[Any]:
    """An open async store of ``kind`` (PostgreSQL: on a new table, dropped after)."""
    store: Any
    if kind == "file":
        async with AsyncSessionStore(
            directory, durable=durable, lock_timeout=lock_timeout
        ) as store:
            yield store
    elif kind == "memory":
        async with AsyncMemorySessionStore() as store:
            yield store
    else:
        if not DSN:
            pytest.skip(SKIP_REASON)
        from sessionstore.asyncpostgres import AsyncPostgresSessionStore  # noqa: PLC0415

        table = unique_table("async")
        try:
            async with AsyncPostgresSessionStore(
                DSN, table=table, lock_timeout=lock_timeout
            ) as store:
                await store.setup()
                yield store
        finally:
            async with sync_twin(store) as twin:
                twin.backend.drop()


@contextlib.asynccontextmanager
async def sync_twin(store: Any, *, lock_timeout: float | None = HANG) -> AsyncIterator[Any]:
    """A sync store on the same sessions as the async ``store`` (its folder or table)."""
    if isinstance(store, AsyncSessionStore):
        yield SessionStore(store.directory, lock_timeout=lock_timeout)
        return
    from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415

    with PostgresSessionStore(DSN, table=store.table, lock_timeout=lock_timeout) as twin:
        yield twin


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_the_loop_stays_responsive_while_a_call_waits_for_a_held_lock(
    tmp_path: Path, kind: str
) -> None:
    async def main() -> list[float]:
        async with opened(kind, tmp_path) as store, sync_twin(store, lock_timeout=None) as sync:
            await store.append("s", ["first"])
            lates = []
            with sync.backend.lock("s"):  # held by this thread: the append must wait
                waiting = asyncio.create_task(store.append("s", ["second"]))
                for _ in range(20):
                    planned = time.perf_counter() + 0.005
                    await asyncio.sleep(0.005)
                    lates.append(time.perf_counter() - planned)
                assert not waiting.done()
            await waiting
            assert (await store.load("s")).messages == ("first", "second")
            return lates

    lates = run(main())
    assert isinstance(lates, list)
    # Each 5 ms timer fired within a few milliseconds of its time: the loop was free.
    assert max(lates) < 0.05, lates


@pytest.mark.parametrize("kind", KINDS)
def test_update_takes_an_async_function(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with opened(kind, tmp_path) as store:
            await store.save(StoredSession("s", ["a"], 1, 0))

            async def add(session: StoredSession) -> StoredSession:
                await asyncio.sleep(0)
                return StoredSession("s", (*session.messages, "b"), 2, 0)

            stored = await store.update("s", add)
            assert stored.messages == ("a", "b")
            stored = await store.update("s", lambda s: StoredSession("s", (*s.messages, "c"), 3, 0))
            assert (await store.load("s")) == stored

    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancelled_async_update_function_writes_nothing_and_frees_the_lock(
    tmp_path: Path, kind: str
) -> None:
    async def main() -> None:
        async with opened(kind, tmp_path, lock_timeout=5) as store:
            await store.save(StoredSession("s", ["a"], 0, 0))
            started = asyncio.Event()

            async def slow(session: StoredSession) -> StoredSession:
                started.set()
                await asyncio.sleep(3600)
                return session

            task = asyncio.create_task(store.update("s", slow))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The lock is free again: a write goes through (it would time out otherwise).
            await store.append("s", ["b"])
            assert (await store.load("s")).messages == ("a", "b")

    run(main())


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_a_timeout_while_waiting_for_the_lock_means_the_write_never_happens(
    tmp_path: Path, kind: str
) -> None:
    async def main() -> None:
        async with opened(kind, tmp_path) as store, sync_twin(store) as sync:
            sync.save(StoredSession("s", ["a"], 0, 0))
            with sync.backend.lock("s"):
                # asyncio.wait_for: asyncio.timeout is 3.11+, and 3.10 is supported.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(store.append("s", ["never"]), 0.05)
            # The worker got the lock after the caller had gone, and did not write.
            await store.append("s", ["b"])
            assert (await store.load("s")).messages == ("a", "b")

    run(main())


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_lock_timeouts_are_the_sync_error(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with opened(kind, tmp_path, lock_timeout=0.05) as store, sync_twin(store) as sync:
            with sync.backend.lock("s"), pytest.raises(LockTimeoutError):
                await store.append("s", ["x"])

    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_random_cancellations_lose_nothing_acknowledged_and_leave_no_lock(
    tmp_path: Path, kind: str
) -> None:
    rng = random.Random(1234)

    async def main() -> None:
        acknowledged: dict[str, list[str]] = {f"s{i}": [] for i in range(4)}
        async with opened(kind, tmp_path, lock_timeout=10) as store:
            for n in range(CANCELLATIONS):
                session_id = f"s{n % 4}"
                message = f"m{n}"
                kind_of_call = rng.choice(["append", "update", "save"])
                call: Coroutine[Any, Any, object]
                if kind_of_call == "append":
                    call = store.append(session_id, [message], key=message)
                elif kind_of_call == "update":

                    async def add(s: StoredSession, m: str = message) -> StoredSession:
                        await asyncio.sleep(0)
                        return StoredSession(s.session_id, (*s.messages, m), 0, 0)

                    if not await store.exists(session_id):
                        await store.append(session_id, [])
                    call = store.update(session_id, add)
                else:
                    current = (
                        await store.load(session_id) if await store.exists(session_id) else None
                    )
                    new = (*(current.messages if current else ()), message)
                    call = store.save(StoredSession(session_id, new, 0, 0))
                task = asyncio.create_task(call)
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                else:
                    acknowledged[session_id].append(message)
            # Every session loads, and holds every acknowledged message once, in order.
            for session_id, messages in acknowledged.items():
                if not await store.exists(session_id):
                    assert not messages
                    continue
                stored = list((await store.load(session_id)).messages)
                assert len(stored) == len(set(stored))
                assert [m for m in stored if m in messages] == messages
                # And no lock is left held: a write with a short wait goes through.
                await store.append(session_id, ["last"])
            if kind != "memory":
                # Once the calls of cancelled callers have ended (close waits for them),
                # no lock is held: sync code gets each at once.
                await store.close()
                async with sync_twin(store, lock_timeout=0) as sync:
                    for session_id in acknowledged:
                        with sync.backend.lock(session_id):
                            pass

    run(main())


def test_workers_must_be_a_positive_int(tmp_path: Path) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            AsyncSessionStore(tmp_path, workers=bad)  # type: ignore[arg-type]


def test_sync_and_async_stores_share_a_folder_and_its_locks(tmp_path: Path) -> None:
    sync = SessionStore(tmp_path)

    async def main() -> None:
        async with AsyncSessionStore(tmp_path) as store:
            await asyncio.gather(
                *(store.append("s", [f"a{i}"], key=f"a{i}") for i in range(50)),
                *(asyncio.to_thread(sync.append, "s", [f"b{i}"], key=f"b{i}") for i in range(50)),
            )
            assert len((await store.load("s")).messages) == 100
            assert store.path_of("s") == sync.path_of("s")

    run(main())


# -- the hostile findings: each hang fails by asyncio.wait_for, not by hanging --------


def _holder(directory: str, session_id: str, ready: Any, stop: Any) -> None:
    with SessionStore(directory).backend.lock(session_id):
        ready.set()
        stop.wait(30)


@pytest.mark.parametrize("kind", KINDS)
def test_as_many_async_updates_as_workers_whose_functions_await_the_store_finish(
    tmp_path: Path, kind: str
) -> None:
    # Finding 02: each update's fn awaited a store call that needed a worker, while
    # every worker was blocked waiting for such a fn. (PostgreSQL: fn's load reads in
    # the update's transaction, on its connection, not on another of the pool's.)
    async def main() -> None:
        store: Any = (
            AsyncSessionStore(tmp_path, durable=False, workers=4)
            if kind == "file"
            else AsyncMemorySessionStore(workers=4)
            if kind == "memory"
            else None
        )
        async with contextlib.AsyncExitStack() as stack:
            if store is None:
                store = await stack.enter_async_context(opened(kind, tmp_path, durable=False))
            else:
                await stack.enter_async_context(store)
            await store.save(StoredSession("profile", ("system prompt",), 0, 0))
            for i in range(8):
                await store.save(StoredSession(f"chat-{i}", ("hi",), 1, 1))

            async def add_profile(current: StoredSession) -> StoredSession:
                profile = await store.load("profile")
                return replace(current, metadata={"n": len(profile.messages)})

            await asyncio.wait_for(
                asyncio.gather(*(store.update(f"chat-{i}", add_profile) for i in range(8))), HANG
            )
            for i in range(8):
                assert (await store.load(f"chat-{i}")).metadata == {"n": 1}

    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_an_async_update_function_may_write_its_own_session_and_others(
    tmp_path: Path, kind: str
) -> None:
    # Finding 03: as the sync update's fn may, through the same (re-entrant) lock.
    async def main() -> None:
        async with opened(kind, tmp_path, durable=False) as store:
            await store.save(StoredSession("a", ("hi",), 1, 1))

            async def fn(current: StoredSession) -> StoredSession:
                await store.append("b", ["x"])
                await store.append("a", ["inner"])
                # Calls made by tasks fn starts belong to it too, and take turns.
                await asyncio.gather(*(store.append("a", [f"g{i}"], key=f"g{i}") for i in range(3)))
                latest: StoredSession = await store.load("a")
                return replace(latest, metadata={"seen": True})

            stored = await asyncio.wait_for(store.update("a", fn), HANG)
            assert stored.messages[:2] == ("hi", "inner")
            assert sorted(stored.messages[2:]) == ["g0", "g1", "g2"]
            assert await store.load("a") == stored
            assert (await store.load("b")).messages == ("x",)
            # The lock is free again, for this store and for sync code.
            await asyncio.wait_for(store.append("a", ["after"]), HANG)
            if kind != "memory":
                async with sync_twin(store) as sync:
                    sync.append("a", ["sync"])

    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_other_calls_on_the_session_wait_for_an_async_update_to_write(
    tmp_path: Path, kind: str
) -> None:
    # The lock spans the async fn: a write of another task lands after the update's.
    async def main() -> None:
        async with opened(kind, tmp_path, durable=False) as store:
            await store.save(StoredSession("a", ("hi",), 0, 0))
            inside = asyncio.Event()
            go_on = asyncio.Event()

            async def fn(current: StoredSession) -> StoredSession:
                inside.set()
                await go_on.wait()
                return StoredSession("a", (*current.messages, "update"), 0, 0)

            updating = asyncio.create_task(store.update("a", fn))
            await inside.wait()
            appending = asyncio.create_task(store.append("a", ["other"]))
            for _ in range(10):
                await asyncio.sleep(0)
            assert not appending.done()
            go_on.set()
            await asyncio.wait_for(asyncio.gather(updating, appending), HANG)
            assert (await store.load("a")).messages == ("hi", "update", "other")

    run(main())


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_an_async_update_function_that_raises_writes_nothing_and_frees_the_lock(
    tmp_path: Path, kind: str
) -> None:
    async def main() -> None:
        async with opened(kind, tmp_path) as store:
            await store.save(StoredSession("a", ("hi",), 0, 0))

            async def fn(current: StoredSession) -> StoredSession:
                await store.append("a", ["inner"])
                raise KeyError("boom")

            with pytest.raises(KeyError):
                await asyncio.wait_for(store.update("a", fn), HANG)
            # The update wrote nothing. fn's own append was a write of its own on a
            # folder; on PostgreSQL it joined the update's transaction (as a sync
            # update's function's writes do), so it rolled back with it.
            inner = ("inner",) if kind == "file" else ()
            assert (await store.load("a")).messages == ("hi", *inner)
            async with sync_twin(store) as sync:
                sync.append("a", ["sync"])

    run(main())


def test_async_delete_raises_the_sync_errors() -> None:
    # Finding 04: a lock timeout is a TransientDeleteError, as in the sync delete.
    directory = tempfile.mkdtemp()
    SessionStore(directory).save(StoredSession("a", ("hi",), 1, 1))
    context = multiprocessing.get_context("fork")
    ready, stop = context.Event(), context.Event()
    process = context.Process(target=_holder, args=(directory, "a", ready, stop))
    process.start()
    try:
        assert ready.wait(HANG)

        async def main() -> None:
            async with AsyncSessionStore(directory, lock_timeout=0.05) as store:
                with pytest.raises(TransientDeleteError) as caught:
                    await store.delete("a")
                assert isinstance(caught.value, SessionDeleteError)
                assert caught.value.session_id == "a"

        run(main())
    finally:
        stop.set()
        process.join()


def test_async_delete_of_a_missing_session_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"

    async def main() -> None:
        async with AsyncSessionStore(missing) as store:
            assert await store.delete("x") is False

    run(main())
    assert not missing.exists()


def test_calls_waiting_for_one_busy_session_leave_the_workers_to_other_sessions(
    tmp_path: Path,
) -> None:
    # Finding 07: 16 appends waiting for a session held by another process held all
    # 16 workers, so a load of another session waited for the holder too.
    sync = SessionStore(tmp_path, durable=False)
    sync.save(StoredSession("busy", ("x",), 0, 0))
    sync.save(StoredSession("other", ("y",), 0, 0))
    context = multiprocessing.get_context("fork")
    ready, stop = context.Event(), context.Event()
    process = context.Process(target=_holder, args=(str(tmp_path), "busy", ready, stop))
    process.start()
    try:
        assert ready.wait(HANG)

        async def main() -> None:
            async with AsyncSessionStore(tmp_path, durable=False, workers=2) as store:
                waiting = [
                    asyncio.create_task(store.append("busy", [f"m{i}"], key=f"k{i}"))
                    for i in range(8)
                ]
                # With every worker waiting for "busy", this would wait for the holder
                # (which never lets go before stop is set): wait_for fails it instead.
                other = await asyncio.wait_for(store.load("other"), HANG)
                await asyncio.wait_for(store.append("other", ["z"]), HANG)
                assert other.messages == ("y",)
                assert not any(task.done() for task in waiting)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*waiting), HANG)
                assert len((await store.load("busy")).messages) == 9

        run(main())
    finally:
        stop.set()
        process.join()


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_a_turn_not_had_within_lock_timeout_is_a_lock_timeout(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with opened(kind, tmp_path, lock_timeout=0.05) as store:
            await store.save(StoredSession("a", ("hi",), 0, 0))
            release = asyncio.Event()

            async def slow(current: StoredSession) -> StoredSession:
                await release.wait()
                return current

            updating = asyncio.create_task(store.update("a", slow))
            await asyncio.sleep(0)
            with pytest.raises(LockTimeoutError):
                await asyncio.wait_for(store.append("a", ["x"]), HANG)
            release.set()
            await asyncio.wait_for(updating, HANG)

    run(main())


def test_a_process_waiting_for_a_busy_session_gets_its_turn() -> None:
    # Finding 08: a thread appending in a loop starved a forked waiter polling with a
    # 50 ms cap; each child here appends once with a timeout far above the hold time.
    directory = tempfile.mkdtemp()
    store = SessionStore(directory, lock_timeout=5)
    stop = threading.Event()

    def loop() -> None:
        i = 0
        while not stop.is_set():
            store.append("f", [f"t{i}"], key=f"t{i}")
            i += 1

    thread = threading.Thread(target=loop)
    thread.start()
    failures = 0
    try:
        for i in range(PROCESS_WAITERS):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    SessionStore(directory, lock_timeout=5).append("f", [f"c{i}"], key=f"c{i}")
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
            failures += status != 0
    finally:
        stop.set()
        thread.join()
    assert failures == 0
    messages = SessionStore(directory).load("f").messages
    assert all(f"c{i}" in messages for i in range(PROCESS_WAITERS))


PROCESS_WAITERS = int(os.environ.get("SESSIONSTORE_ASYNC_PROCESS_WAITERS", "10"))
"""How many forked processes wait for a busy session's lock (finding 08's repro uses 60)."""
