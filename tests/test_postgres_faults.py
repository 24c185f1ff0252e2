"""The PostgreSQL write contract under concurrency and faults (issue 9).

Every write of a session holds its lock (a transaction-scoped advisory lock keyed by
the table's oid and the id); writers in several processes lose nothing; a server that
stops answering raises instead of hanging; a lost answer to a COMMIT is "unknown",
and retries of the same document succeed; the pool hands out only live connections,
is bounded and fork-safe; nested stores in one thread do not deadlock; passwords are
never shown; raw driver errors never escape.

Faults are made without touching the shared server: ``pg_terminate_backend`` and
SIGSTOP/SIGCONT of this test's own server processes (found by ``application_name``),
and a TCP proxy (``tests/pgproxy.py``). Sizes of the multi-process run:
``SESSIONSTORE_PG_WRITERS`` (default 4) processes x ``SESSIONSTORE_PG_MIXED_OPS``
(default 150) operations.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import random
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from sessionstore import (
    CommitUnknownError,
    ConflictError,
    LockTimeoutError,
    SessionNotFoundError,
    SessionReadError,
    SessionStoreError,
    SessionWriteError,
    StoredSession,
    TransientDeleteError,
    TransientError,
)
from sessionstore.backends import postgres as postgres_backend
from sessionstore.backends.base import content_etag
from sessionstore.cli import main
from sessionstore.codec import encode
from sessionstore.postgres import PostgresSessionStore
from tests.pg import (
    DSN,
    backend_pids,
    named_dsn,
    requires_postgres,
    terminate,
    unique_table,
    wait_until,
    waiting_for_locks,
)
from tests.pgproxy import Proxy
from tests.reliability.figures import record

pytestmark = requires_postgres

T = TypeVar("T")

WRITERS = int(os.environ.get("SESSIONSTORE_PG_WRITERS", "4"))
MIXED_OPS = int(os.environ.get("SESSIONSTORE_PG_MIXED_OPS", "150"))
SHARED_IDS = ("a", "b")


def _session(session_id: str, *messages: str) -> StoredSession:
    return StoredSession(session_id=session_id, messages=messages, input_tokens=0, output_tokens=0)


def _append(session: StoredSession, *messages: str) -> StoredSession:
    return replace(session, messages=(*session.messages, *messages))


@pytest.fixture
def table() -> Iterator[str]:
    """A fresh table name; the table is dropped after the test if it was created."""
    name = unique_table("fault")
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
                sql.Identifier(name), sql.Identifier(f"{name}_journal")
            )
        )


@pytest.fixture
def app() -> str:
    """An application_name for this test's connections (to find their server processes)."""
    return unique_table("app")


def in_thread(fn: Callable[[], T], *, limit: float = 120.0) -> T:
    """Run ``fn`` in another thread (another client); its result, or its error re-raised.

    A call still blocked after ``limit`` seconds fails the test instead of hanging it.
    """
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"still blocked after {limit} s: the call has no bound")
    if errors:
        raise errors[0]
    return outcome[0]


# -- 1. every write is serialized with every other write of the session ------------------

_WRITES: dict[str, tuple[str, Callable[[PostgresSessionStore, str], object]]] = {
    "save": ("s1", lambda store, etag: store.save(_session("s1", "other"))),
    "save of a new id": ("new", lambda store, etag: store.save(_session("new", "other"))),
    "save(if_match)": ("s1", lambda store, etag: store.save(_session("s1", "x"), if_match=etag)),
    "create": ("new", lambda store, etag: store.create(_session("new", "created"))),
    "delete": ("s1", lambda store, etag: store.delete("s1")),
    "update": ("s1", lambda store, etag: store.update("s1", lambda s: _append(s, "u"))),
    "append_messages": ("new", lambda store, etag: store.append_messages("new", ["m"])),
}


@pytest.mark.parametrize("write", list(_WRITES))
def test_every_write_waits_for_the_session_lock(table: str, write: str) -> None:
    """While the session's lock is held (as update and append hold it), every kind of
    write from another client waits for it; ids with no row yet are covered too."""
    session_id, run = _WRITES[write]
    with (
        PostgresSessionStore(DSN, table=table) as holder,
        PostgresSessionStore(DSN, table=table, lock_timeout=0.2) as other,
    ):
        holder.setup()
        etag = holder.save(_session("s1", "a"))
        with holder.backend.lock(session_id):
            # LockTimeoutError; from delete, a TransientDeleteError that wraps it.
            with pytest.raises(TransientError, match="lock not acquired"):
                in_thread(lambda: run(other, etag))
            assert holder.load("s1") == _session("s1", "a")  # nothing got through
        run(other, etag)  # and once the lock is free, the write goes through


def test_without_pipeline_mode_the_contract_holds(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a libpq older than 14 (no pipeline mode) the same statements go one by one."""
    monkeypatch.setattr(postgres_backend, "_PIPELINES", False)
    with (
        PostgresSessionStore(DSN, table=table) as holder,
        PostgresSessionStore(DSN, table=table, lock_timeout=0.2) as other,
    ):
        holder.setup()
        for session_id, run in _WRITES.values():
            etag = holder.save(_session("s1", "a"))
            holder.delete("new")
            with holder.backend.lock(session_id), pytest.raises(TransientError):
                in_thread(lambda: run(other, etag))  # noqa: B023  # called at once
            run(other, etag)  # and goes through once the lock is free


def test_update_reads_the_session_only_once_it_holds_the_lock(table: str, app: str) -> None:
    """An update that waits for the lock computes from what the holder committed."""
    with (
        PostgresSessionStore(DSN, table=table) as holder,
        PostgresSessionStore(named_dsn(app), table=table) as waiter,
    ):
        holder.setup()
        holder.save(_session("s1", "a"))
        seen: list[tuple[str, ...]] = []

        def record(session: StoredSession) -> StoredSession:
            seen.append(session.messages)
            return _append(session, "waiter")

        with holder.backend.lock("s1"):
            thread = threading.Thread(target=waiter.update, args=("s1", record))
            thread.start()
            wait_until(lambda: waiting_for_locks(app) == 1, "the waiter to wait for the lock")
            holder.save(_session("s1", "a", "holder"))
        thread.join()
        assert seen == [("a", "holder")]
        assert holder.load("s1").messages == ("a", "holder", "waiter")


def test_table_spellings_share_one_lock(table: str) -> None:
    """``t`` and ``public.t`` are one table: their writers exclude each other."""
    with (
        PostgresSessionStore(DSN, table=table) as bare,
        PostgresSessionStore(DSN, table=f"public.{table}", lock_timeout=0.2) as qualified,
    ):
        bare.setup()
        bare.save(_session("s1", "a"))
        with bare.backend.lock("s1"):
            with pytest.raises(LockTimeoutError):
                in_thread(lambda: qualified.append_messages("s1", ["lost"]))
            with pytest.raises(LockTimeoutError):
                in_thread(lambda: qualified.save(_session("s1", "lost")))
        assert qualified.append_messages("s1", ["b"]).messages == ("a", "b")


def _mixed_writer(
    dsn: str, table: str, worker: int, ops: int, barrier: Any, out: str
) -> None:  # pragma: no cover - runs in a child process
    """One process: ``ops`` random update / if_match save / delete / append on shared
    ids; logs each acknowledged result (or the refusal) to ``out`` as JSON."""
    rng = random.Random(worker)
    log: list[list[Any]] = []
    with PostgresSessionStore(dsn, table=table) as store:
        store.exists("a")  # connect before the start line
        barrier.wait()
        for i in range(ops):
            session_id = rng.choice(SHARED_IDS)
            token = f"w{worker}-{i}"
            kind = rng.choice(("append", "update", "if_match", "delete"))
            result: object
            try:
                if kind == "append":
                    result = list(store.append_messages(session_id, [token]).messages)
                elif kind == "update":

                    def add_token(session: StoredSession, token: str = token) -> StoredSession:
                        return _append(session, token)

                    updated = store.update(session_id, add_token)
                    result = list(updated.messages)
                elif kind == "if_match":
                    session, etag = store.load_with_etag(session_id)
                    new = _append(session, token)
                    store.save(new, if_match=etag)
                    result = list(new.messages)
                else:
                    result = store.delete(session_id)
            except (SessionNotFoundError, ConflictError) as exc:
                result = type(exc).__name__  # refused: nothing written
            log.append([kind, session_id, token, result])
    Path(out).write_text(json.dumps(log))


def mixed_violations(
    logs: list[list[list[Any]]], final: dict[str, tuple[str, ...] | None]
) -> list[str]:
    """Check acknowledged results against a serial history of each session.

    Between two deletes a session is one "epoch" (named by its first message, from
    the append that created it). Serialized writes each extend the previous state by
    one message, so every acknowledged state of an epoch is a prefix of its longest
    one, the final state is the longest of its epoch, each delete that returned True
    ended exactly one epoch, and no refused write's message is stored anywhere.
    """
    problems: list[str] = []
    for session_id in SHARED_IDS:
        epochs: dict[str, list[tuple[str, ...]]] = {}
        deleted = 0
        refused: set[str] = set()
        for log in logs:
            for kind, sid, token, result in log:
                if sid != session_id:
                    continue
                if kind == "delete":
                    deleted += result is True
                elif isinstance(result, str):
                    refused.add(token)
                else:
                    state = tuple(result)
                    epochs.setdefault(state[0], []).append(state)
        for epoch, states in epochs.items():
            longest = max(states, key=len)
            for state in states:
                if longest[: len(state)] != state:
                    lost = sorted(set(state) - set(longest))
                    problems.append(f"{session_id}: acknowledged {lost} lost (epoch {epoch})")
            if len(set(longest)) != len(longest):
                problems.append(f"{session_id}: a message stored twice in {longest}")
        stored = final[session_id]
        if stored is not None:
            if stored and stored != max(epochs.get(stored[0], [()]), key=len):
                problems.append(f"{session_id}: final state is not the last acknowledged one")
            refused_stored = refused & set(stored)
            if refused_stored:
                problems.append(f"{session_id}: refused writes stored: {sorted(refused_stored)}")
        expected = deleted + (stored is not None)
        if len(epochs) != expected:
            problems.append(
                f"{session_id}: {len(epochs)} epochs but {deleted} acknowledged deletes "
                f"and {'a' if stored is not None else 'no'} session at the end "
                "(a deleted session came back, or a creation was lost)"
            )
    return problems


def test_mixed_writers_in_several_processes_lose_nothing(table: str, tmp_path: Path) -> None:
    """4 processes x 150 random update / if_match save / delete / append on two ids:
    every acknowledged write is in the history, none lost, none resurrected."""
    with PostgresSessionStore(DSN, table=table) as store:
        store.setup()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    outs = [str(tmp_path / f"w{w}.json") for w in range(WRITERS)]
    processes = [
        context.Process(target=_mixed_writer, args=(DSN, table, w, MIXED_OPS, barrier, outs[w]))
        for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [p.exitcode for p in processes] == [0] * WRITERS
    logs = [json.loads(Path(out).read_text()) for out in outs]
    with PostgresSessionStore(DSN, table=table) as store:
        final = {i: (store.load(i).messages if store.exists(i) else None) for i in SHARED_IDS}
    acknowledged = sum(1 for log in logs for entry in log if not isinstance(entry[3], str))
    assert acknowledged > WRITERS * MIXED_OPS // 2  # the run did write
    problems = mixed_violations(logs, final)
    record("postgres: mixed writes acknowledged (processes x operations)", acknowledged)
    record("postgres: mixed-write violations (lost, resurrected)", len(problems))
    assert problems == [], f"{len(problems)} violations in {acknowledged} acknowledged writes"


def test_the_history_check_catches_a_lost_update_and_a_resurrection() -> None:
    """The checker above is not vacuous."""
    lost: list[list[list[Any]]] = [
        [["append", "a", "t0", ["t0"]], ["update", "a", "t1", ["t0", "t1"]]]
    ]
    lost.append([["if_match", "a", "t2", ["t0", "t2"]]])  # built on the same state
    assert mixed_violations(lost, {"a": ("t0", "t1"), "b": None})
    back: list[list[list[Any]]] = [[["append", "a", "t0", ["t0"]], ["delete", "a", "t1", True]]]
    back.append([["append", "a", "t2", ["t0", "t2"]]])  # the deleted session came back
    assert mixed_violations(back, {"a": ("t0", "t2"), "b": None})
    fine: list[list[list[Any]]] = [[["append", "a", "t0", ["t0"]], ["delete", "a", "t1", True]]]
    fine.append([["append", "a", "t2", ["t2"]], ["if_match", "a", "t3", "ConflictError"]])
    assert mixed_violations(fine, {"a": ("t2",), "b": None}) == []


# -- 10. a server that stops answering ----------------------------------------------------


class Stopper:
    """SIGSTOPs this test's server processes (``stop``), and continues them (``resume``,
    and always at the end of the test)."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.pids: list[int] = []

    def stop(self) -> list[int]:
        pids = backend_pids(self.app)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.pids.extend(pids)
        return pids

    def resume(self) -> None:
        pids, self.pids = self.pids, []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def stopper(app: str) -> Iterator[Stopper]:
    stopper = Stopper(app)
    yield stopper
    stopper.resume()


def test_a_stopped_server_process_fails_a_write_instead_of_hanging(
    table: str, app: str, stopper: Stopper
) -> None:
    with PostgresSessionStore(named_dsn(app), table=table, timeout=1.0) as store:
        store.setup()
        store.save(_session("s1", "old"))

        def stop_then_change(session: StoredSession) -> StoredSession:
            assert stopper.stop()  # the process holding this update's transaction, among others
            return _append(session, "new")

        with pytest.raises(SessionWriteError) as failed:
            in_thread(lambda: store.update("s1", stop_then_change))
    message = str(failed.value)
    assert "did not answer within 1.5 s" in message
    assert f"table {table!r}" in message
    assert "127.0.0.1:5432/test" in message
    assert "nothing was written" in message
    assert not isinstance(failed.value, CommitUnknownError)  # COMMIT was never sent
    stopper.resume()
    with PostgresSessionStore(DSN, table=table) as other:
        # Takes the lock: waits until the stopped transaction has ended (rolled back).
        assert other.append_messages("s1", ["after"]).messages == ("old", "after")


def test_a_stopped_server_process_fails_a_read_instead_of_hanging(
    table: str, app: str, stopper: Stopper
) -> None:
    with PostgresSessionStore(named_dsn(app), table=table, timeout=0.5) as store:
        store.setup()
        store.save(_session("s1", "old"))
        store.save(_session("s2", "other"))

        def stop_then_read(session: StoredSession) -> StoredSession:
            stopper.stop()
            store.load("s2")  # inside the update: read on the stopped transaction
            return session

        with pytest.raises(SessionReadError, match=r"did not answer within 0\.75 s"):
            in_thread(lambda: store.update("s1", stop_then_read))


def test_a_slow_statement_is_cancelled_by_the_server_and_writes_nothing(table: str) -> None:
    """``timeout`` is also the server's statement_timeout: a write the server is slow to
    run is cancelled there (a clean "nothing was written", the connection kept)."""
    slow = unique_table("slow")
    with PostgresSessionStore(DSN, table=table, timeout=0.5) as store:
        store.setup()
        store.save(_session("s1", "old"))
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS"
                    " 'BEGIN PERFORM pg_sleep(30); RETURN NEW; END';"
                    " CREATE TRIGGER slow BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()"
                ).format(f=sql.Identifier(slow), t=sql.Identifier(table))
            )
        try:
            with pytest.raises(SessionWriteError) as cancelled:
                in_thread(lambda: store.save(_session("s1", "new")))
        finally:
            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP FUNCTION {} CASCADE").format(sql.Identifier(slow)))
        message = str(cancelled.value)
        assert "the server cancelled the statement" in message
        assert "nothing was written" in message
        assert not isinstance(cancelled.value, CommitUnknownError)
        assert store.load("s1") == _session("s1", "old")


def test_a_partitioned_server_fails_reads_and_writes_instead_of_hanging(table: str) -> None:
    with Proxy(DSN) as proxy:
        with PostgresSessionStore(
            proxy.dsn("partition"), table=table, timeout=0.5, connect_timeout=1
        ) as store:
            store.setup()
            store.save(_session("s1", "old"))
            proxy.stop_forwarding()
            with pytest.raises(SessionReadError) as read:
                in_thread(lambda: store.load("s1"))
            with pytest.raises(SessionWriteError) as write:
                in_thread(lambda: store.save(_session("s1", "new")))
            with pytest.raises(TransientError):
                in_thread(lambda: store.append_messages("s1", ["new"]))
    for error in (read.value, write.value):
        assert f"table {table!r} at 127.0.0.1:{proxy.port}/" in str(error)
        assert error.session_id == "s1"
    with PostgresSessionStore(DSN, table=table) as direct:
        assert direct.load("s1") == _session("s1", "old")


def test_a_lost_commit_answer_is_unknown_even_when_nothing_answers(table: str) -> None:
    with Proxy(DSN) as proxy:
        with PostgresSessionStore(
            proxy.dsn("hang"), table=table, timeout=0.5, lock_timeout=1
        ) as store:
            store.setup()
            proxy.lose_reply_to(b"COMMIT", then="hang")
            with pytest.raises(CommitUnknownError, match="may or may not have landed"):
                in_thread(lambda: store.save(_session("s1", "landed")))
            assert proxy.reply_lost.is_set()
        with PostgresSessionStore(DSN, table=table) as direct:
            # The lock wait ends when the trapped transaction has committed.
            assert direct.update("s1", lambda s: s) == _session("s1", "landed")


# -- 16. a lost answer to a committed write -------------------------------------------------


def test_create_whose_commit_answer_was_lost_is_unknown_and_its_etag_tells_it_landed(
    table: str,
) -> None:
    session = _session("s1", "only once")
    with Proxy(DSN) as proxy, PostgresSessionStore(proxy.dsn("lost"), table=table) as store:
        store.setup()
        proxy.lose_reply_to(b"COMMIT")
        with pytest.raises(CommitUnknownError) as unknown:
            store.create(session)
        assert proxy.reply_lost.is_set()
        assert "nothing was written" not in str(unknown.value)
        assert isinstance(unknown.value, SessionWriteError)  # callers that retry on it
        # It landed: the stored etag is the error's; a retried create is a conflict (an
        # identical document from another writer must not count as two creates).
        assert unknown.value.etag == content_etag(encode(session))
        assert store.load_with_etag("s1") == (session, unknown.value.etag)
        with pytest.raises(ConflictError):
            store.create(session)


def test_if_match_save_whose_commit_answer_was_lost_is_found_by_its_etag(table: str) -> None:
    with Proxy(DSN) as proxy, PostgresSessionStore(proxy.dsn("lost"), table=table) as store:
        store.setup()
        old = store.save(_session("s1", "old"))
        new = _session("s1", "old", "new")
        proxy.lose_reply_to(b"COMMIT")
        with pytest.raises(CommitUnknownError) as unknown:
            store.save(new, if_match=old)
        assert store.load_with_etag("s1") == (new, unknown.value.etag)
        # Two writers that computed the same new document from one version: only
        # one of them may be told it won (a counter would lose an increment).
        with pytest.raises(ConflictError):
            store.save(new, if_match=old)


def test_update_and_delete_whose_commit_answer_was_lost_are_unknown(table: str) -> None:
    with Proxy(DSN) as proxy, PostgresSessionStore(proxy.dsn("lost"), table=table) as store:
        store.setup()
        store.save(_session("s1", "old"))
        proxy.lose_reply_to(b"COMMIT")
        with pytest.raises(CommitUnknownError):
            store.update("s1", lambda s: _append(s, "new"))
        assert store.load("s1").messages == ("old", "new")  # it had landed
        proxy.lose_reply_to(b"COMMIT")
        with pytest.raises(TransientDeleteError) as deleting:
            store.delete("s1")
        assert isinstance(deleting.value.__cause__, CommitUnknownError)
        assert store.delete("s1") is False  # it had landed


# -- 11. nested stores in one thread ----------------------------------------------------------


def test_other_stores_inside_update_join_its_transaction(table: str) -> None:
    """Inside ``update``'s function, other store objects on the same database (same
    table, another spelling of it, another table) write without waiting for the lock
    their own thread holds; everything commits with the update."""
    other_table = unique_table("other")
    try:
        with (
            PostgresSessionStore(DSN, table=table) as outer,
            PostgresSessionStore(DSN, table=table, lock_timeout=0.5) as same,
            PostgresSessionStore(DSN, table=f"public.{table}", lock_timeout=0.5) as spelled,
            PostgresSessionStore(DSN, table=other_table, lock_timeout=0.5) as elsewhere,
        ):
            outer.setup()
            elsewhere.setup()
            outer.save(_session("s1", "a"))

            def nested(current: StoredSession) -> StoredSession:
                same.append_messages("s1", ["nested"])  # the session being updated
                spelled.save(_session("s2", "beside"))  # another session, same table
                elsewhere.create(_session("s1", "audit"))  # same id, another table
                elsewhere.update("s1", lambda s: _append(s, "twice"))
                outer.save(_session("s3", "third"))
                latest = same.load("s1")
                assert latest.messages == ("a", "nested")  # sees the transaction's writes
                return _append(latest, "outer")

            assert outer.update("s1", nested).messages == ("a", "nested", "outer")
            assert outer.load("s1").messages == ("a", "nested", "outer")
            assert outer.load("s2").messages == ("beside",)
            assert outer.load("s3").messages == ("third",)
            assert elsewhere.load("s1").messages == ("audit", "twice")
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(other_table)))


def test_nested_writes_roll_back_with_the_update(table: str) -> None:
    with (
        PostgresSessionStore(DSN, table=table) as outer,
        PostgresSessionStore(DSN, table=table) as inner,
    ):
        outer.setup()
        outer.save(_session("s1", "a"))

        def fail(current: StoredSession) -> StoredSession:
            inner.save(_session("s2", "nested"))
            raise RuntimeError("the update gives up")

        with pytest.raises(RuntimeError):
            outer.update("s1", fail)
        assert not outer.exists("s2")
        assert outer.load("s1").messages == ("a",)


def test_stores_sharing_one_small_pool_nest_without_waiting_for_a_connection(
    table: str,
) -> None:
    with ConnectionPool(DSN, min_size=1, max_size=1, open=True) as pool:
        first = PostgresSessionStore(pool, table=table, timeout=2)
        second = PostgresSessionStore(pool, table=table, timeout=2)
        first.setup()

        def nested(current: StoredSession) -> StoredSession:
            second.append_messages("s2", ["via the same connection"])
            return _append(current, "outer")

        first.save(_session("s1", "a"))
        assert first.update("s1", nested).messages == ("a", "outer")
        assert second.load("s2").messages == ("via the same connection",)


# -- 18. the pool ----------------------------------------------------------------------------


def _hold_connections(store: PostgresSessionStore, count: int) -> None:
    """Make the store open ``count`` connections at once, then give them back idle."""
    barrier = threading.Barrier(count)

    def hold(i: int) -> None:
        with store.backend.lock(f"hold{i}"):
            barrier.wait()

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_after_the_server_killed_every_idle_connection_the_next_operations_succeed(
    table: str, app: str
) -> None:
    """A restart as the pool sees it: every idle connection is dead."""
    with PostgresSessionStore(named_dsn(app), table=table) as store:
        store.setup()
        store.save(_session("s1"))
        _hold_connections(store, 4)
        assert terminate(app) >= 4
        outcomes: list[str] = []
        for i in range(10):
            try:
                store.append_messages("s1", [str(i)]) if i % 2 else store.load("s1")
            except SessionStoreError as exc:
                outcomes.append(f"{i}: {exc}")
        record("postgres: operations after every idle connection was killed", 10)
        record("postgres: ... of which failed", len(outcomes))
        assert outcomes == []
        assert store.load("s1").messages == tuple(str(i) for i in range(1, 10, 2))


def test_the_pool_is_bounded_by_max_size(table: str, app: str) -> None:
    with PostgresSessionStore(named_dsn(app), table=table, max_size=2, timeout=0.5) as store:
        store.setup()
        inside = threading.Barrier(3)
        release = threading.Event()

        def hold(i: int) -> None:
            with store.backend.lock(f"hold{i}"):
                inside.wait()
                release.wait()

        threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        inside.wait()
        try:
            with pytest.raises(SessionReadError, match="all 2 connections of the store are in use"):
                in_thread(lambda: store.load("s1"))
            assert len(backend_pids(app)) == 2
        finally:
            release.set()
            for thread in threads:
                thread.join()


def _fork(child: Callable[[], None]) -> int:
    """Run ``child`` in a forked process; its exit code (0: it returned)."""
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process (the pool has threads).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_forked_child_opens_its_own_connections(table: str, app: str) -> None:
    with PostgresSessionStore(named_dsn(app), table=table) as store:
        store.setup()
        store.save(_session("s1", "parent"))
        parents = set(backend_pids(app))
        assert parents

        def child() -> None:
            store.append_messages("s1", ["child"])
            assert store.load("s1").messages == ("parent", "child")
            assert set(backend_pids(app)) - parents  # a connection of its own

        assert _fork(child) == 0
        # The parent's connections were neither used nor closed by the child.
        assert parents <= set(backend_pids(app))
        assert store.append_messages("s1", ["parent again"]).messages == (
            "parent",
            "child",
            "parent again",
        )


def test_a_forked_child_refuses_a_borrowed_pool(table: str) -> None:
    with ConnectionPool(DSN, min_size=1, max_size=2, open=True) as pool:
        store = PostgresSessionStore(pool, table=table)
        store.setup()
        store.save(_session("s1"))

        def child() -> None:
            with pytest.raises(SessionStoreError, match="forked child"):
                store.load("s1")

        assert _fork(child) == 0
        assert store.load("s1") == _session("s1")


# -- 19. timeouts are validated ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [True, False, math.nan, math.inf, -math.inf, -1, -0.5, "1", [1]])
@pytest.mark.parametrize("name", ["lock_timeout", "timeout"])
def test_timeouts_must_be_finite_numbers_or_none(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a finite number of seconds"):
        PostgresSessionStore(DSN, **{name: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, True, "2", None])
def test_max_size_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_size must be an int"):
        PostgresSessionStore(DSN, max_size=bad)  # type: ignore[arg-type]


def test_a_zero_timeout_is_refused_and_a_zero_lock_timeout_does_not_wait(table: str) -> None:
    with pytest.raises(ValueError, match="timeout must be"):
        PostgresSessionStore(DSN, timeout=0)
    with (
        PostgresSessionStore(DSN, table=table) as holder,
        PostgresSessionStore(DSN, table=table, lock_timeout=0) as impatient,
    ):
        holder.setup()
        with holder.backend.lock("s1"), pytest.raises(LockTimeoutError):
            in_thread(lambda: impatient.append_messages("s1", ["m"]))
        assert impatient.append_messages("s1", ["m"]).messages == ("m",)


def test_lock_timeout_none_waits_without_bound(table: str, app: str) -> None:
    with (
        PostgresSessionStore(DSN, table=table) as holder,
        PostgresSessionStore(named_dsn(app), table=table, lock_timeout=None, timeout=None) as w,
    ):
        holder.setup()
        done: list[StoredSession] = []
        with holder.backend.lock("s1"):
            thread = threading.Thread(target=lambda: done.append(w.append_messages("s1", ["m"])))
            thread.start()
            wait_until(lambda: waiting_for_locks(app) == 1, "the writer to wait for the lock")
            assert done == []
        thread.join()
        assert [s.messages for s in done] == [("m",)]


# -- 15. passwords ---------------------------------------------------------------------------------

_UNPARSABLE = [
    "postgresql://postgres:hun ter2@127.0.0.1:1/test",
    "postgresql://postgres:hunter2%zz@127.0.0.1:1/test",
    "host=127.0.0.1 port=1 password=hun ter2",
    "host=127.0.0.1 port=1 password='hunter2",
]


@pytest.mark.parametrize("dsn", _UNPARSABLE)
def test_an_unparsable_connection_string_never_shows_its_password(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="cannot be parsed") as refused:
        PostgresSessionStore(dsn)
    assert main(["validate", "--dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert "cannot be parsed" in err
    for text in (str(refused.value), err):
        for fragment in ("hunter2", "hun", "ter2"):
            assert fragment not in text
    assert "Traceback" not in err


def test_a_password_is_not_in_reprs_descriptions_or_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = "postgresql://postgres:hunter2@127.0.0.1:1/test?connect_timeout=2"
    with PostgresSessionStore(dsn, timeout=2) as store:
        shown = [repr(store), repr(store.backend), store.backend.description]
        for call in (lambda: store.load("s1"), lambda: store.save(_session("s1"))):
            with pytest.raises(TransientError) as failed:
                call()
            shown.append(str(failed.value))
    assert main(["copy", "--from", str(Path(__file__).parent / "corpus"), "--to-dsn", dsn]) == 2
    shown.append(capsys.readouterr().err)
    assert all("hunter2" not in text for text in shown), shown
    assert all("127.0.0.1:1/test" in text for text in shown[1:]), shown


# -- raw driver errors never escape ----------------------------------------------------------------

_DRIVER_ERRORS = [
    psycopg.OperationalError("injected: server closed the connection unexpectedly"),
    psycopg.InterfaceError("injected: the connection is closed"),
    pg_errors.AdminShutdown("injected: terminating connection due to administrator command"),
    pg_errors.DiskFull("injected: could not extend file"),
    pg_errors.InsufficientPrivilege("injected: permission denied for table"),
    pg_errors.QueryCanceled("injected: canceling statement due to statement timeout"),
    pg_errors.DeadlockDetected("injected: deadlock detected"),
    pg_errors.LockNotAvailable("injected: canceling statement due to lock timeout"),
    pg_errors.InternalError_("injected: cache lookup failed"),
]

_CALLS: dict[str, Callable[[PostgresSessionStore], object]] = {
    "setup": lambda s: s.setup(),
    "save": lambda s: s.save(_session("s1", "x")),
    "save(if_match)": lambda s: s.save(_session("s1", "x"), if_match="0" * 32),
    "create": lambda s: s.create(_session("s9")),
    "load": lambda s: s.load("s1"),
    "load_with_etag": lambda s: s.load_with_etag("s1"),
    "exists": lambda s: s.exists("s1"),
    "list": lambda s: s.list(),
    "read_many": lambda s: s.backend.read_many(["s1"], max_bytes=1000),
    "delete": lambda s: s.delete("s1"),
    "update": lambda s: s.update("s1", lambda x: x),
    "append_messages": lambda s: s.append_messages("s1", ["m"]),
}


@pytest.mark.parametrize("error", _DRIVER_ERRORS, ids=lambda e: type(e).__name__)
def test_raw_driver_errors_never_escape(table: str, error: psycopg.Error) -> None:
    real = psycopg.Connection.execute

    def failing(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == "":  # the pool's check of a connection passes
            return real(self, query, *args, **kwargs)
        raise error

    with PostgresSessionStore(DSN, table=table, timeout=5) as store:
        store.setup()
        store.save(_session("s1"))
        escaped = {}
        for name, call in _CALLS.items():
            with mock.patch.object(psycopg.Connection, "execute", failing):
                try:
                    call(store)
                except SessionStoreError as exc:
                    if isinstance(exc, psycopg.Error):
                        escaped[name] = repr(exc)
                except Exception as exc:  # what the test looks for
                    escaped[name] = repr(exc)
                else:
                    escaped[name] = "no error"
        assert escaped == {}
        assert store.load("s1") == _session("s1")  # and the store still works


@pytest.mark.parametrize(
    "error",
    [PoolTimeout("injected"), psycopg.OperationalError("injected"), psycopg.InterfaceError("x")],
    ids=lambda e: type(e).__name__,
)
def test_pool_errors_never_escape(table: str, error: psycopg.Error) -> None:
    with PostgresSessionStore(DSN, table=table, timeout=0.2) as store:
        store.setup()
        with mock.patch.object(ConnectionPool, "getconn", side_effect=error):
            for name, call in _CALLS.items():
                with pytest.raises(SessionStoreError) as failed:
                    call(store)
                assert not isinstance(failed.value, psycopg.Error), name
                assert f"table {table!r}" in str(failed.value), name
