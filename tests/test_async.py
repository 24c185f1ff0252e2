"""The async API (issue 13): off the loop, cancellation-safe, one set of rules.

The behaviour of every method is checked by the sync tests, which run the async
classes through ``BlockingView`` (see tests/test_appendlog.py and the conformance
tests); this module checks what only an async API has: a free loop while a call
waits, async update functions, cancellation and timeouts.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from sessionstore import LockTimeoutError, SessionStore, StoredSession
from sessionstore.asyncstore import AsyncMemorySessionStore, AsyncSessionStore

CANCELLATIONS = int(os.environ.get("SESSIONSTORE_ASYNC_CANCELLATIONS", "300"))
"""How many random cancellations the stress test makes (thousands in a soak run)."""


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_the_loop_stays_responsive_while_a_call_waits_for_a_held_lock(tmp_path: Path) -> None:
    sync = SessionStore(tmp_path, lock_timeout=None)
    sync.append("s", ["first"])

    async def main() -> list[float]:
        async with AsyncSessionStore(tmp_path) as store:
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


def test_update_takes_an_async_function(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncSessionStore(tmp_path) as store:
            await store.save(StoredSession("s", ["a"], 1, 0))

            async def add(session: StoredSession) -> StoredSession:
                await asyncio.sleep(0)
                return StoredSession("s", (*session.messages, "b"), 2, 0)

            stored = await store.update("s", add)
            assert stored.messages == ("a", "b")
            stored = await store.update("s", lambda s: StoredSession("s", (*s.messages, "c"), 3, 0))
            assert (await store.load("s")) == stored

    run(main())


def test_a_cancelled_async_update_function_writes_nothing_and_frees_the_lock(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with AsyncSessionStore(tmp_path, lock_timeout=5) as store:
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


def test_a_timeout_while_waiting_for_the_lock_means_the_write_never_happens(
    tmp_path: Path,
) -> None:
    sync = SessionStore(tmp_path)
    sync.save(StoredSession("s", ["a"], 0, 0))

    async def main() -> None:
        async with AsyncSessionStore(tmp_path) as store:
            with sync.backend.lock("s"):
                # asyncio.wait_for: asyncio.timeout is 3.11+, and 3.10 is supported.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(store.append("s", ["never"]), 0.05)
            # The worker got the lock after the caller had gone, and did not write.
            await store.append("s", ["b"])
            assert (await store.load("s")).messages == ("a", "b")

    run(main())


def test_lock_timeouts_are_the_sync_error(tmp_path: Path) -> None:
    sync = SessionStore(tmp_path)

    async def main() -> None:
        async with AsyncSessionStore(tmp_path, lock_timeout=0.05) as store:
            with sync.backend.lock("s"), pytest.raises(LockTimeoutError):
                await store.append("s", ["x"])

    run(main())


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_random_cancellations_lose_nothing_acknowledged_and_leave_no_lock(
    tmp_path: Path, kind: str
) -> None:
    rng = random.Random(1234)

    async def main() -> None:
        store = (
            AsyncSessionStore(tmp_path, lock_timeout=10)
            if kind == "file"
            else (AsyncMemorySessionStore())
        )
        acknowledged: dict[str, list[str]] = {f"s{i}": [] for i in range(4)}
        async with store:
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
