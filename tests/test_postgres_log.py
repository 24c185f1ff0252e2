"""The append log on PostgreSQL: record lines as rows of ``<table>_journal``.

The same appends, keys, ``if_match`` and folds as the file backend (same semantics;
etags may differ, as timestamps do); writers in many threads lose and duplicate
nothing; a lost commit reply is ``CommitUnknownError`` and a retry with the key is
exactly-once; a server that stops answering fails the append in bounded time.

``SESSIONSTORE_TEST_PG_APPENDS`` sets the appends per writer of the concurrency test
(default 25, 16 writers).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sessionstore import (
    CommitUnknownError,
    ConflictError,
    SessionStore,
    StoredSession,
    TransientError,
)
from sessionstore.appendlog import AppendResult
from sessionstore.backends.base import content_etag
from sessionstore.backends.postgres_journal import journal_name
from sessionstore.postgres import PostgresSessionStore
from sessionstore.store import BackendSessionStore
from tests.pg import DSN, requires_postgres, unique_table
from tests.pgproxy import Proxy

pytestmark = requires_postgres

APPENDS = int(os.environ.get("SESSIONSTORE_TEST_PG_APPENDS", "25"))
WRITERS = 16


@pytest.fixture
def table() -> Iterator[str]:
    name = unique_table("log")
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
                sql.Identifier(name), sql.Identifier(*journal_name((name,)))
            )
        )


@pytest.fixture
def store(table: str) -> Iterator[PostgresSessionStore]:
    with PostgresSessionStore(DSN, table=table) as opened:
        opened.setup()
        yield opened


def _journal_rows(table: str, session_id: str) -> int:
    with psycopg.connect(DSN, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE id = %s").format(
                sql.Identifier(*journal_name((table,)))
            ),
            [session_id],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _script(store: BackendSessionStore) -> list[object]:
    """One sequence of appends, keys, if_match, folds and saves; what each step gave
    (results without etags, which hold timestamps, and the session after)."""
    seen: list[object] = []

    def shape(result: AppendResult) -> tuple[int, int, int, bool]:
        return (result.message_count, result.input_tokens, result.output_tokens, result.replayed)

    first = store.append("s", ["a"], input_tokens=1, key="k1")
    seen.append(shape(first))
    seen.append(shape(store.append("s", ["b", "c"], output_tokens=2, key="k2")))
    seen.append(shape(store.append("s", ["again"], key="k1")))  # a retry: replayed
    _, etag = store.load_with_etag("s")
    seen.append(store.compact("s") == etag)  # a fold keeps the etag
    seen.append(shape(store.append("s", ["again"], key="k2")))  # keys survive the fold
    seen.append(shape(store.append("s", ["d"], if_match=etag)))
    try:
        store.append("s", ["e"], if_match=etag)  # stale now
    except ConflictError:
        seen.append("conflict")
    try:
        store.append("other", ["x"], if_match=etag)  # no session never matches
    except ConflictError:
        seen.append("conflict")
    seen.append(shape(store.append("s", ["e"], key="k3")))
    for i in range(100):  # past the fold threshold: folds on its own
        store.append("s", [f"m{i}" * 40], key=f"many{i}")
    seen.append(shape(store.append("s", ["x"], key="many3")))
    session = store.load("s")
    seen.append((session.messages, session.input_tokens, session.output_tokens))
    store.update("s", lambda s: s)  # update keeps the keys
    seen.append(shape(store.append("s", ["x"], key="k3")))
    store.save(store.load("s"))  # a save forgets them
    seen.append(shape(store.append("s", ["f"], key="k3")))
    seen.append(store.delete("s"))
    seen.append(shape(store.append("s", ["new"], key="k1")))  # a new session
    seen.append(store.load("s").messages)
    return seen


def test_appends_keys_if_match_and_folds_behave_as_on_files(
    store: PostgresSessionStore, tmp_path: Path
) -> None:
    assert _script(store) == _script(SessionStore(tmp_path))


def test_read_is_the_document_then_the_journal_lines(
    store: PostgresSessionStore, table: str
) -> None:
    store.append("s", ["a"])
    etags = [store.append("s", [f"m{i}"], key=f"k{i}").etag for i in range(3)]
    data = store.backend.read("s", max_bytes=1 << 20)
    assert data is not None
    assert _journal_rows(table, "s") == 3
    assert content_etag(data) == etags[-1] == store.load_with_etag("s")[1]
    assert data.count(b'\n{"seq":') == 3  # three record lines after the snapshot
    assert store.load("s").messages == ("a", "m0", "m1", "m2")
    store.compact("s")
    assert _journal_rows(table, "s") == 0
    assert store.load_with_etag("s")[1] == etags[-1]


@pytest.mark.parametrize("write", ["save", "save(if_match)", "update", "delete"])
def test_every_write_clears_the_journal(
    store: PostgresSessionStore, table: str, write: str
) -> None:
    store.append("s", ["a"])
    result = store.append("s", ["b"], key="k")
    assert _journal_rows(table, "s") == 1
    session = store.load("s")
    actions: dict[str, Callable[[], object]] = {
        "save": lambda: store.save(session),
        "save(if_match)": lambda: store.save(session, if_match=result.etag),
        "update": lambda: store.update("s", lambda s: s),
        "delete": lambda: store.delete("s"),
    }
    actions[write]()
    assert _journal_rows(table, "s") == 0
    if write != "delete":
        assert store.load("s") == session
        assert store.append("s", ["c"]).message_count == 3


def test_a_session_file_with_records_copied_in_reads_back_exactly(
    store: PostgresSessionStore, table: str, tmp_path: Path
) -> None:
    files = SessionStore(tmp_path)
    files.append("s", ["a"])
    for i in range(3):
        files.append("s", [f"m{i}"], key=f"k{i}")
    data = (tmp_path / "s.json").read_bytes()
    etag = store.backend.write("s", data)
    assert etag == content_etag(data)
    assert store.backend.read("s", max_bytes=1 << 20) == data
    assert _journal_rows(table, "s") == 3
    assert store.load_with_etag("s") == files.load_with_etag("s")
    assert store.append("s", ["x"], key="k1").replayed
    assert store.append("s", ["n"], key="k9").message_count == 5
    with_torn = data + b'{"seq":4,"pr'  # an append that never finished, copied in
    store.backend.write("s", with_torn)
    assert store.backend.read("s", max_bytes=1 << 20) == with_torn
    assert store.load_with_etag("s") == files.load_with_etag("s")
    assert store.append("s", ["n"]).message_count == 5  # the torn line is cut
    assert store.load("s").messages == (*files.load("s").messages, "n")


def test_setup_adds_the_journal_to_a_table_of_an_older_version(table: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id text PRIMARY KEY, schema_version integer,"
                " document bytea NOT NULL, etag text NOT NULL,"
                " updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(table))
        )
    session = StoredSession("s", ("old",), 1, 1)
    with PostgresSessionStore(DSN, table=table) as store:
        with pytest.raises(TransientError, match="call setup"):
            store.load("s")
        store.setup()
        store.save(session)
        store.append("s", ["new"], key="k")
        assert store.load("s").messages == ("old", "new")


def test_appends_from_two_stores_in_turn_stay_chained(table: str) -> None:
    # Each store remembers the tail it appended last; the other's appends make it
    # stale, and the server refuses a record built on it: the store then rereads.
    with (
        PostgresSessionStore(DSN, table=table) as one,
        PostgresSessionStore(DSN, table=table) as two,
    ):
        one.setup()
        for i in range(40):
            (one if i % 3 else two).append("s", [f"m{i}"], key=f"k{i}")
        assert one.load("s").messages == tuple(f"m{i}" for i in range(40))
        assert two.append("s", ["m5"], key="k5").replayed


def test_sixteen_writers_with_keys_lose_and_duplicate_nothing(table: str) -> None:
    with PostgresSessionStore(DSN, table=table, max_size=WRITERS) as store:
        store.setup()
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                for i in range(APPENDS):
                    key = f"w{w}-{i}"
                    store.append("s", [key], input_tokens=1, key=key)
                    if i % 5 == 0:  # a retry, as after a lost reply
                        assert store.append("s", [key], key=key).replayed
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        session = store.load("s")
    assert len(session.messages) == len(set(session.messages)) == WRITERS * APPENDS
    assert session.input_tokens == WRITERS * APPENDS
    for w in range(WRITERS):
        mine = [m for m in session.messages if m.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(APPENDS)]


@pytest.mark.parametrize("before", [1, 3], ids=["under-the-lock", "one-round-trip"])
def test_a_lost_commit_reply_is_unknown_and_a_retry_with_the_key_is_exactly_once(
    table: str, before: int
) -> None:
    # After one append the next one reads the session under its lock; after three,
    # the store knows the tail and appends with one checked statement.
    with Proxy(DSN) as proxy, PostgresSessionStore(proxy.dsn("lost"), table=table) as store:
        store.setup()
        for i in range(before):
            store.append("s", [f"m{i}"])
        proxy.lose_reply_to(b"COMMIT")
        with pytest.raises(CommitUnknownError) as unknown:
            store.append("s", ["c"], key="k")
        assert proxy.reply_lost.is_set()
        retried = store.append("s", ["c"], key="k")
        assert retried.replayed
        assert retried.etag == unknown.value.etag == store.load_with_etag("s")[1]
        assert store.load("s").messages == (*(f"m{i}" for i in range(before)), "c")


def test_a_server_that_stops_answering_fails_the_append_in_time(table: str) -> None:
    outcome: list[Any] = []
    with (
        Proxy(DSN) as proxy,
        PostgresSessionStore(
            proxy.dsn("stop"), table=table, timeout=0.5, lock_timeout=1, connect_timeout=1
        ) as store,
    ):
        store.setup()
        store.append("s", ["a"])
        store.append("s", ["b"])
        proxy.stop_forwarding()

        def append() -> None:
            try:
                store.append("s", ["c"], key="k")
            except TransientError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=append, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "the append has no bound"
    assert outcome
    assert isinstance(outcome[0], TransientError)
    with PostgresSessionStore(DSN, table=table) as direct:
        messages = direct.load("s").messages
        assert messages in (("a", "b"), ("a", "b", "c"))
        assert direct.append("s", ["c"], key="k").message_count == 3
