"""AsyncPostgresSessionStore (issue 13): what only the native async PostgreSQL store has.

Its methods meet the sync tests through ``BlockingView`` (tests/test_appendlog.py) and
the async ones in tests/test_async.py; here: the sync class's errors, no thread per
call, cancellation at random points in time and during a lock wait, a server that
stops answering or loses a COMMIT's answer, lent pools, and sync use refused.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sessionstore import (
    CommitUnknownError,
    ConflictError,
    InvalidSessionIdError,
    LockTimeoutError,
    SessionNotFoundError,
    SessionReadError,
    SessionTooLargeError,
    SessionWriteError,
    StoredSession,
    TransientDeleteError,
    TransientError,
)
from sessionstore.backends.base import content_etag
from sessionstore.codec import encode

from .pg import DSN, named_dsn, requires_postgres, terminate, unique_table, waiting_for_locks
from .pgproxy import Proxy

pytestmark = requires_postgres

HANG = 20.0
"""Seconds after which a call that should finish at once counts as hung."""

CANCELLATIONS = int(os.environ.get("SESSIONSTORE_ASYNC_CANCELLATIONS", "300"))
"""How many random cancellations in time (thousands in a soak run; tests/test_async.py's
stress test reads the same knob)."""


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def _session(session_id: str, *messages: str) -> StoredSession:
    return StoredSession(session_id=session_id, messages=messages, input_tokens=0, output_tokens=0)


@pytest.fixture
def table() -> Iterator[str]:
    from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415

    name = unique_table("apg")
    with PostgresSessionStore(DSN, table=name) as store:
        store.setup()
        try:
            yield name
        finally:
            store.backend.drop()


@asynccontextmanager
async def opened(dsn: str, table: str, **options: Any) -> AsyncIterator[Any]:
    from sessionstore import AsyncPostgresSessionStore  # noqa: PLC0415

    async with AsyncPostgresSessionStore(dsn, table=table, **options) as store:
        yield store


def sync_store(table: str, **options: Any) -> Any:
    from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415

    return PostgresSessionStore(DSN, table=table, **options)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (a query of the server's state) without blocking the loop long;
    fail after ``HANG`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + HANG
    while not condition():
        if loop.time() > end:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


# -- the sync class's errors ------------------------------------------------------------

ERROR_CASES: dict[str, tuple[Callable[[Any], Any], type[BaseException]]] = {
    "load of a missing session": (lambda s: s.load("missing"), SessionNotFoundError),
    "load of an invalid id": (lambda s: s.load("../x"), InvalidSessionIdError),
    "create of an existing id": (lambda s: s.create(_session("a", "again")), ConflictError),
    "save with a stale etag": (
        lambda s: s.save(_session("a", "new"), if_match="0" * 32),
        ConflictError,
    ),
    "append with a stale etag": (
        lambda s: s.append("a", ["new"], if_match="0" * 32),
        ConflictError,
    ),
    "update of a missing session": (
        lambda s: s.update("missing", lambda x: x),
        SessionNotFoundError,
    ),
    "update that changes the id": (lambda s: s.update("a", lambda _x: _session("b")), ValueError),
    "delete of an invalid id": (lambda s: s.delete("../x"), InvalidSessionIdError),
    "save over max_bytes": (lambda s: s.save(_session("big", "x" * 5000)), SessionTooLargeError),
    "append of a str": (lambda s: s.append("a", "not a list"), TypeError),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_each_failure_raises_what_the_sync_store_raises(table: str, case: str) -> None:
    call, expected = ERROR_CASES[case]
    with sync_store(table, max_bytes=4096) as sync:
        sync.save(_session("a", "hi"))
        with pytest.raises(expected) as sync_error:
            call(sync)

    async def main() -> BaseException:
        async with opened(DSN, table, max_bytes=4096) as store:
            with pytest.raises(expected) as async_error:
                await call(store)
            return async_error.value

    async_error = run(main())
    assert type(async_error) is type(sync_error.value)
    assert str(async_error) == str(sync_error.value)


# -- no thread per call -----------------------------------------------------------------


def test_two_hundred_tasks_run_without_a_thread_each(table: str) -> None:
    async def appends(store: Any, round_: int) -> None:
        await asyncio.gather(*(store.append(f"s{i % 20}", [f"r{round_}-{i}"]) for i in range(200)))

    async def main() -> tuple[int, int]:
        async with opened(DSN, table) as store:
            await appends(store, 0)  # the pool's connections and the watchdog now exist
            before = threading.active_count()
            most = before
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal most
                while not done.is_set():
                    most = max(most, threading.active_count())
                    await asyncio.sleep(0)

            sampler = asyncio.create_task(sample())
            await appends(store, 1)
            done.set()
            await sampler
            sessions = [await store.load(f"s{i}") for i in range(20)]
            assert sum(len(session.messages) for session in sessions) == 400
            return before, most

    before, most = run(main())
    assert most == before


# -- cancellation -----------------------------------------------------------------------


def test_cancellations_at_random_moments_lose_nothing_acknowledged_and_leave_no_lock(
    table: str,
) -> None:
    rng = random.Random(4321)
    acknowledged: dict[str, list[str]] = {f"s{i}": [] for i in range(4)}
    outcomes = {"acknowledged": 0, "cancelled": 0}

    async def main() -> None:
        async with opened(DSN, table, lock_timeout=HANG) as store:
            for n in range(CANCELLATIONS):
                session_id = f"s{n % 4}"
                message = f"m{n}"
                kind = rng.choice(["append", "update", "save", "async update"])

                async def add(s: StoredSession, m: str = message) -> StoredSession:
                    await asyncio.sleep(0)
                    return StoredSession(s.session_id, (*s.messages, m), 0, 0)

                if kind != "append" and not await store.exists(session_id):
                    await store.append(session_id, [])
                call: Any
                if kind == "append":
                    call = store.append(session_id, [message], key=message)
                elif kind == "update":
                    call = store.update(
                        session_id, lambda s, m=message: _session(s.session_id, *s.messages, m)
                    )
                elif kind == "async update":
                    call = store.update(session_id, add)
                else:
                    current, etag = await store.load_with_etag(session_id)
                    new = _session(session_id, *current.messages, message)
                    call = store.save(new, if_match=etag)
                task = asyncio.create_task(call)
                # A moment anywhere in the call: waiting for a connection, for the
                # lock, inside the transaction, or after the COMMIT.
                await asyncio.sleep(rng.random() * 0.004)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    outcomes["cancelled"] += 1
                else:
                    outcomes["acknowledged"] += 1
                    acknowledged[session_id].append(message)
            for session_id, messages in acknowledged.items():
                stored = list((await store.load(session_id)).messages)
                assert len(stored) == len(set(stored))
                assert [m for m in stored if m in messages] == messages
        # The store is closed: the calls of cancelled callers have ended. No lock is held.
        with sync_store(table, lock_timeout=0) as sync:
            for session_id in acknowledged:
                with sync.backend.lock(session_id):
                    pass

    run(main())
    assert outcomes["acknowledged"] > 0
    assert outcomes["cancelled"] > 0


@pytest.mark.parametrize("pipelines", [True, False], ids=["pipelines", "no-pipelines"])
def test_a_call_cancelled_while_it_waits_for_the_lock_stops_waiting_and_writes_nothing(
    table: str, pipelines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without pipelines (a libpq before 14), the lock is a statement sent alone.
    monkeypatch.setattr("sessionstore.backends.postgres._PIPELINES", pipelines)
    name = f"apg-wait-{unique_table()}"

    async def main() -> None:
        # A lock wait longer than ``until`` waits: only a cancel on the server ends it.
        async with opened(named_dsn(name), table, lock_timeout=3 * HANG) as store:
            await store.save(_session("a", "hi"))
            with sync_store(table) as sync, sync.backend.lock("a"):
                task = asyncio.create_task(store.append("a", ["never"]))
                await until(lambda: waiting_for_locks(name) == 1, "the append's lock wait")
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                # The server was asked to cancel the wait: it ends while the lock is held.
                await until(lambda: waiting_for_locks(name) == 0, "the wait to be cancelled")
            assert (await store.load("a")).messages == ("hi",)
            await store.append("a", ["after"])
            assert (await store.load("a")).messages == ("hi", "after")

    run(main())


def test_a_cancelled_async_update_rolls_back_the_writes_its_function_made(table: str) -> None:
    async def main() -> None:
        async with opened(DSN, table, lock_timeout=HANG) as store:
            await store.save(_session("a", "hi"))
            inside = asyncio.Event()

            async def fn(current: StoredSession) -> StoredSession:
                await store.append("a", ["inner"])  # joins the update's transaction
                await store.save(_session("b", "other"))
                inside.set()
                await asyncio.sleep(3600)
                return current

            task = asyncio.create_task(store.update("a", fn))
            await inside.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await store.load("a")).messages == ("hi",)
            assert not await store.exists("b")
        with sync_store(table, lock_timeout=0) as sync, sync.backend.lock("a"):
            pass

    run(main())


# -- a server that stops answering, or loses an answer ----------------------------------


def test_a_server_that_stops_answering_fails_calls_instead_of_hanging(table: str) -> None:
    async def main() -> None:
        with Proxy(DSN) as proxy:
            async with opened(
                proxy.dsn("apartition"), table, timeout=0.5, lock_timeout=0.5, connect_timeout=1
            ) as store:
                await store.save(_session("s1", "old"))
                proxy.stop_forwarding()
                ticks = 0

                async def tick() -> None:
                    nonlocal ticks
                    while True:
                        await asyncio.sleep(0.01)
                        ticks += 1

                ticker = asyncio.create_task(tick())
                with pytest.raises(SessionReadError) as read:
                    await asyncio.wait_for(store.load("s1"), HANG)
                with pytest.raises(SessionWriteError) as write:
                    await asyncio.wait_for(store.save(_session("s1", "new")), HANG)
                with pytest.raises(TransientError):
                    await asyncio.wait_for(store.append_messages("s1", ["new"]), HANG)
                with pytest.raises(TransientDeleteError):
                    await asyncio.wait_for(store.delete("s1"), HANG)
                ticker.cancel()
                assert ticks > 0  # the loop ran other tasks meanwhile
                for error in (read.value, write.value):
                    assert f"table {table!r} at 127.0.0.1:{proxy.port}/" in str(error)
                    assert error.session_id == "s1"
        with sync_store(table) as direct:
            assert direct.load("s1") == _session("s1", "old")

    run(main())


def test_a_lost_commit_answer_is_commit_unknown_and_its_etag_tells_it_landed(
    table: str,
) -> None:
    session = _session("s1", "only once")

    async def main() -> None:
        with Proxy(DSN) as proxy:
            async with opened(proxy.dsn("alost"), table) as store:
                proxy.lose_reply_to(b"COMMIT")
                with pytest.raises(CommitUnknownError) as unknown:
                    await asyncio.wait_for(store.create(session), HANG)
                assert proxy.reply_lost.is_set()
                assert unknown.value.etag == content_etag(encode(session))
                assert await store.load_with_etag("s1") == (session, unknown.value.etag)
                with pytest.raises(ConflictError):
                    await store.create(session)

    run(main())


# -- pools, and what is refused ---------------------------------------------------------


def test_a_lent_async_pool_is_used_and_left_open(table: str) -> None:
    from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415

    async def main() -> None:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            DSN, open=False, min_size=1, max_size=2
        )
        await pool.open()
        try:
            async with opened(pool, table) as store:  # type: ignore[arg-type]
                await store.save(_session("a", "hi"))
                assert (
                    await asyncio.gather(*(store.load("a") for _ in range(10)))
                    == [_session("a", "hi")] * 10
                )
            assert not pool.closed
            async with pool.connection() as conn:
                assert not conn.autocommit  # as the lender configured it
        finally:
            await pool.close()

    run(main())


def test_a_sync_pool_is_refused() -> None:
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    from sessionstore import AsyncPostgresSessionStore  # noqa: PLC0415

    pool: ConnectionPool[Any] = ConnectionPool(DSN, open=False)
    with pytest.raises(TypeError, match="AsyncConnectionPool"):
        AsyncPostgresSessionStore(pool)  # type: ignore[arg-type]


def test_its_sync_code_refuses_to_run_outside_the_loop(table: str) -> None:
    async def main() -> Any:
        async with opened(DSN, table) as store:
            await store.save(_session("a", "hi"))
            return store

    store = run(main())
    with pytest.raises(RuntimeError, match="AsyncPostgresSessionStore"):
        store.sync.load("a")


def test_sync_and_async_stores_share_a_table_and_its_locks(table: str) -> None:
    async def main() -> None:
        async with opened(DSN, table, lock_timeout=HANG) as store:
            with sync_store(table, lock_timeout=HANG) as sync:
                await asyncio.gather(
                    *(store.append("s", [f"a{i}"], key=f"a{i}") for i in range(50)),
                    *(
                        asyncio.to_thread(sync.append, "s", [f"b{i}"], key=f"b{i}")
                        for i in range(50)
                    ),
                )
            assert len((await store.load("s")).messages) == 100

    run(main())


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        ({"lock_timeout": -1}, "lock_timeout"),
        ({"timeout": 0}, "timeout"),
        ({"max_size": 0}, "max_size"),
        ({"table": "a b"}, "table"),
    ],
)
def test_bad_arguments_are_refused_as_by_the_sync_class(bad: dict[str, Any], name: str) -> None:
    from sessionstore import AsyncPostgresSessionStore  # noqa: PLC0415

    with pytest.raises(ValueError, match=name):
        AsyncPostgresSessionStore(DSN, **bad)


def test_a_task_an_update_function_leaves_behind_writes_on_its_own_after_the_update(
    table: str,
) -> None:
    async def main() -> None:
        async with opened(DSN, table, lock_timeout=0.2) as store:
            await store.save(_session("a", "hi"))
            go = asyncio.Event()
            left: list[asyncio.Task[Any]] = []

            async def later() -> None:
                await go.wait()
                await store.append("a", ["later"])

            async def fn(current: StoredSession) -> StoredSession:
                left.append(asyncio.create_task(later()))
                return _session("a", *current.messages, "update")

            await store.update("a", fn)
            # Not in the update's (committed) transaction: it takes the lock anew, so
            # it waits for another holder.
            with sync_store(table) as sync, sync.backend.lock("a"):
                go.set()
                with pytest.raises(LockTimeoutError):
                    await asyncio.wait_for(left[0], HANG)
            assert (await store.load("a")).messages == ("hi", "update")

    run(main())


def test_a_failed_attempt_to_connect_is_reported_without_waiting_out_the_timeout(
    table: str,
) -> None:
    async def main() -> None:
        # Nothing listens on port 1; the call would wait 60 s for a connection, but
        # wait_for gives it HANG: it must be the failed attempt that ends it.
        async with opened(
            "postgresql://postgres@127.0.0.1:1/test", table, timeout=60, connect_timeout=1
        ) as store:
            with pytest.raises(SessionReadError, match=r"cannot connect to 127\.0\.0\.1:1/test"):
                await asyncio.wait_for(store.load("a"), HANG)

    run(main())


def test_calls_after_the_server_killed_every_idle_connection_succeed(table: str) -> None:
    name = f"apg-restart-{unique_table()}"

    async def main() -> None:
        async with opened(named_dsn(name), table) as store:
            await store.save(_session("a"))
            # Some connections in the pool, idle; then the server ends them all.
            await asyncio.gather(*(store.append_messages("a", [f"m{i}"]) for i in range(8)))
            assert terminate(name) >= 1
            for i in range(10):
                if i % 2:
                    await store.append_messages("a", [f"after{i}"])
                else:
                    await store.load("a")
            messages = (await store.load("a")).messages
            assert messages[8:] == tuple(f"after{i}" for i in range(1, 10, 2))

    run(main())
