"""The PostgreSQL backend: setup, errors, migration on load, conditional writes, locks,
and several processes appending to one session.

Every test but the missing-driver one needs ``SESSIONSTORE_TEST_POSTGRES_DSN``; each
uses its own table and drops it.
"""

from __future__ import annotations

import importlib
import multiprocessing
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import orjson
import psycopg
import pytest
from hypothesis import given, settings
from psycopg import sql
from psycopg_pool import ConnectionPool

from sessionstore import (
    CURRENT_SCHEMA_VERSION,
    CommitUnknownError,
    ConflictError,
    LockTimeoutError,
    SessionNotFoundError,
    SessionReadError,
    SessionStore,
    SessionStoreError,
    SessionTooLargeError,
    SessionWriteError,
    StoredSession,
)
from sessionstore.backends.base import Backend, content_etag
from sessionstore.backends.postgres import schema_version_of
from sessionstore.codec import encode
from sessionstore.postgres import PostgresSessionStore
from sessionstore.testing import strategies as sst
from tests.pg import DSN, named_dsn, postgres_only, terminate, unique_table

CORPUS = Path(__file__).parent / "corpus"
T = TypeVar("T")


def _session(session_id: str = "s1", *messages: str) -> StoredSession:
    return StoredSession(session_id=session_id, messages=messages, input_tokens=0, output_tokens=0)


@pytest.fixture
def table() -> Iterator[str]:
    """A fresh table name; the table is dropped after the test if it was created."""
    name = unique_table()
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
                sql.Identifier(name), sql.Identifier(f"{name}_journal")
            )
        )


@pytest.fixture
def store(table: str) -> Iterator[PostgresSessionStore]:
    with PostgresSessionStore(DSN, table=table) as opened:
        opened.setup()
        yield opened


# -- the driver is optional -------------------------------------------------------


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # None: "import psycopg" fails
    for name in ("sessionstore.postgres", "sessionstore.backends.postgres"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=r"pip install 'sessionstore\[postgres\]'"):
        importlib.import_module("sessionstore.postgres")
    with pytest.raises(ImportError, match=r"pip install 'sessionstore\[postgres\]'"):
        importlib.import_module("sessionstore.backends.postgres")


@pytest.mark.parametrize(
    "bad", ["", "1sessions", "sessions; DROP TABLE x", 'a"b', "a.b.c", "x" * 64, "s-1"]
)
def test_table_names_must_be_identifiers(bad: str) -> None:
    with pytest.raises(ValueError, match="table must be an identifier"):
        PostgresSessionStore("postgresql://nobody@127.0.0.1:1/none", table=bad)


# -- setup --------------------------------------------------------------------------


@postgres_only
def test_setup_is_idempotent_and_keeps_data(table: str) -> None:
    with PostgresSessionStore(DSN, table=table) as store:
        store.setup()
        etag = store.save(_session("s1", "kept"))
        store.setup()
        assert store.load_with_etag("s1") == (_session("s1", "kept"), etag)
        assert isinstance(store.backend, Backend)


@postgres_only
def test_concurrent_setups_all_succeed(table: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        with PostgresSessionStore(DSN, table=table) as store:
            barrier.wait()
            try:
                store.setup()
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@postgres_only
def test_schema_qualified_table(table: str) -> None:
    with PostgresSessionStore(DSN, table=f"public.{table}") as store:
        store.setup()
        store.save(_session("s1"))
        assert store.list() == ["s1"]


@postgres_only
def test_without_setup_the_error_says_to_call_it(table: str) -> None:
    with PostgresSessionStore(DSN, table=table) as store:
        with pytest.raises(SessionReadError, match=r"does not exist; call setup\(\) first"):
            store.load("s1")
        with pytest.raises(SessionWriteError, match=r"call setup\(\) first.*nothing was written"):
            store.save(_session("s1"))


# -- connection failures --------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_gives_clear_store_errors() -> None:
    port = _closed_port()
    dsn = f"postgresql://postgres:hunter2@127.0.0.1:{port}/test"
    with PostgresSessionStore(dsn, table="sessions", connect_timeout=2) as store:
        with pytest.raises(SessionReadError) as read_error:
            store.load("s1")
        with pytest.raises(SessionWriteError) as write_error:
            store.save(_session("s1"))
        with pytest.raises(SessionWriteError):
            store.setup()
        with pytest.raises(SessionWriteError):
            store.append_messages("s1", ["m"])
        with pytest.raises(SessionReadError):
            store.list()
    for info in (read_error, write_error):
        message = str(info.value)
        assert isinstance(info.value, SessionStoreError)
        assert f"127.0.0.1:{port}/test" in message
        assert "hunter2" not in message
        assert info.value.session_id == "s1"
    assert "nothing was written" in str(write_error.value)


@postgres_only
def test_connection_lost_inside_update_writes_nothing(table: str) -> None:
    name = unique_table("app")
    with PostgresSessionStore(named_dsn(name), table=table) as store:
        store.setup()
        store.save(_session("s1", "old"))
        before = store.load_with_etag("s1")

        def kill_my_connection(session: StoredSession) -> StoredSession:
            assert terminate(name) >= 1  # among them, the one holding the lock
            return replace(session, messages=("new",))

        with pytest.raises(SessionWriteError, match="cannot write") as lost:
            store.update("s1", kill_my_connection)
        assert not isinstance(lost.value, CommitUnknownError)  # COMMIT was never sent
        assert "nothing was written" in str(lost.value)
        assert store.load_with_etag("s1") == before
        # The broken connection was dropped, not reused.
        assert store.append_messages("s1", ["after"]).messages == ("old", "after")


# -- migration on load ------------------------------------------------------------------


@postgres_only
@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.json")), ids=lambda p: p.stem)
def test_corpus_documents_load_as_from_files(
    store: PostgresSessionStore, tmp_path: Path, path: Path
) -> None:
    data = path.read_bytes()
    store.backend.write(path.stem, data)
    (tmp_path / path.name).write_bytes(data)
    loaded = store.load(path.stem)
    assert loaded == SessionStore(tmp_path).load(path.stem)
    # Loading never writes: the stored bytes are the ones put there.
    assert store.backend.read(path.stem, max_bytes=len(data)) == data


@postgres_only
@settings(max_examples=20)
@given(doc=sst.v1_documents())
def test_v1_documents_are_migrated_on_load(doc: dict[str, object]) -> None:
    table = unique_table("v1")
    with PostgresSessionStore(DSN, table=table) as store:
        store.setup()
        try:
            session_id = str(doc["session_id"])
            store.backend.write(session_id, orjson.dumps(doc))
            assert _schema_version_column(store, session_id) == 1
            loaded = store.load(session_id)
            assert loaded.schema_version == CURRENT_SCHEMA_VERSION
            assert loaded.messages == tuple(doc["messages"])  # type: ignore[arg-type]
            assert (loaded.input_tokens, loaded.output_tokens) == (
                doc["input_tokens"],
                doc["output_tokens"],
            )
            assert (loaded.created_at, loaded.updated_at, loaded.metadata) == (None, None, {})
            store.save(loaded)
            assert _schema_version_column(store, session_id) == CURRENT_SCHEMA_VERSION
        finally:
            store.backend.drop()


def _schema_version_column(store: PostgresSessionStore, session_id: str) -> object:
    with psycopg.connect(DSN) as conn:
        row = conn.execute(
            sql.SQL("SELECT schema_version, etag FROM {} WHERE id = %s").format(
                sql.Identifier(store.table)
            ),
            [session_id],
        ).fetchone()
    assert row is not None
    return row[0]


@postgres_only
def test_oversized_document_is_refused_unread(table: str) -> None:
    with PostgresSessionStore(DSN, table=table) as store:
        store.setup()
        store.save(_session("big", "x" * 200))
    with PostgresSessionStore(DSN, table=table, max_bytes=100) as store:
        with pytest.raises(SessionTooLargeError, match="over the store's max_bytes of 100"):
            store.load("big")


# -- conditional writes -------------------------------------------------------------------


@postgres_only
def test_if_match_and_create_conflicts_write_nothing(store: PostgresSessionStore) -> None:
    first = _session("s1", "first")
    etag = store.create(first)
    assert etag == content_etag(encode(first))

    with pytest.raises(ConflictError, match="already exists"):
        store.create(_session("s1", "second"))
    assert store.load_with_etag("s1") == (first, etag)

    newer = store.save(_session("s1", "newer"), if_match=etag)
    with pytest.raises(ConflictError, match=f"expected etag {etag}, found {newer}"):
        store.save(_session("s1", "lost update"), if_match=etag)
    assert store.load_with_etag("s1") == (_session("s1", "newer"), newer)

    with pytest.raises(ConflictError, match="found no session"):
        store.save(_session("s2"), if_match=etag)
    assert not store.exists("s2")


@postgres_only
def test_etags_agree_with_the_file_store(store: PostgresSessionStore, tmp_path: Path) -> None:
    session = _session("s1", "same bytes, same etag")
    assert store.save(session) == SessionStore(tmp_path, durable=False).save(session)


# -- locks --------------------------------------------------------------------------------


@postgres_only
def test_lock_is_reentrant_and_excludes_other_clients(
    store: PostgresSessionStore, table: str
) -> None:

    store.save(_session("s1", "a"))
    with PostgresSessionStore(DSN, table=table, lock_timeout=0.2) as other:
        with store.backend.lock("s1"), store.backend.lock("s1"):
            # Re-entrant, and the store's own writes inside run in the lock's transaction.
            store.append_messages("s1", ["b"])
            # Another thread (another client) waits for the lock, and gives up.
            with pytest.raises(LockTimeoutError, match="lock not acquired"):
                in_thread(lambda: other.append_messages("s1", ["lost"]))
            # Other ids are not locked.
            in_thread(lambda: other.append_messages("s2", ["free"]))
        assert other.append_messages("s1", ["c"]).messages == ("a", "b", "c")


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread (another client of the server); its result or error."""
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return outcome[0]


@postgres_only
def test_update_raising_inside_lock_writes_nothing(store: PostgresSessionStore) -> None:
    store.save(_session("s1", "a"))

    def half_then_fail(session: StoredSession) -> StoredSession:
        store.backend.write("s1", encode(replace(session, messages=("half",))))
        raise RuntimeError("failed after a write inside the lock")

    with pytest.raises(RuntimeError):
        store.update("s1", half_then_fail)
    assert store.load("s1").messages == ("a",)


@postgres_only
def test_threads_appending_lose_nothing(store: PostgresSessionStore) -> None:
    def append(worker: int) -> None:
        for i in range(25):
            store.append_messages("s1", [f"{worker}:{i}"], input_tokens=1)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session = store.load("s1")
    assert sorted(session.messages) == sorted(f"{w}:{i}" for w in range(6) for i in range(25))
    assert session.input_tokens == 150


def _append_many(dsn: str, table: str, worker: int, count: int) -> None:
    with PostgresSessionStore(dsn, table=table) as store:
        for i in range(count):
            store.append_messages("shared", [f"{worker}:{i}"], input_tokens=1, output_tokens=2)


@postgres_only
def test_processes_appending_to_one_session_lose_nothing(store: PostgresSessionStore) -> None:
    workers, count = 4, 30
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_append_many, args=(DSN, store.table, w, count))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [p.exitcode for p in processes] == [0] * workers

    session = store.load("shared")
    expected = [f"{w}:{i}" for w in range(workers) for i in range(count)]
    assert sorted(session.messages) == sorted(expected)
    assert len(session.messages) == workers * count
    for w in range(workers):
        mine = [m for m in session.messages if m.startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(count)]
    assert (session.input_tokens, session.output_tokens) == (workers * count, 2 * workers * count)


# -- a borrowed pool ------------------------------------------------------------------------


@postgres_only
def test_a_borrowed_pool_works_and_stays_open(table: str) -> None:
    with ConnectionPool(DSN, min_size=1, max_size=4, open=True) as pool:
        with PostgresSessionStore(pool, table=table) as store:
            store.setup()
            store.append_messages("s1", ["a"])
            store.update("s1", lambda s: replace(s, messages=(*s.messages, "b")))
            assert store.load("s1").messages == ("a", "b")
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


@postgres_only
def test_missing_session_is_not_found(store: PostgresSessionStore) -> None:
    with pytest.raises(SessionNotFoundError, match="not found in PostgreSQL table"):
        store.load("nobody")
    assert store.delete("nobody") is False


@given(sst.sessions())
def test_version_column_from_the_prefix_agrees_with_a_full_parse(session: StoredSession) -> None:
    data = encode(session)
    version = orjson.loads(data)["schema_version"]
    assert schema_version_of(data) == version == CURRENT_SCHEMA_VERSION


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (b'{"session_id": "a", "messages": []}', 1),
        (b'{"schema_version": 1, "session_id": "a"}', 1),
        (b'{\n  "schema_version": 7,\n  "x": 1}', 7),
        (b'{"schema_version": "2", "a": 1}', None),
        (b'{"schema_version": true, "a": 1}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b'{"schema_version": 0, "a": 1}', None),
    ],
)
def test_version_column_of_other_documents(data: bytes, version: int | None) -> None:
    assert schema_version_of(data) == version
