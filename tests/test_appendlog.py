"""Appends, keys and folds (issue 10): the API on every backend, the file format on disk.

The file-format tests write damaged files byte by byte and check that a load either
gives the acknowledged state or raises ``CorruptSessionError``: never a silent drop.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionstore import (
    CommitUnknownError,
    ConflictError,
    CorruptSessionError,
    MemorySessionStore,
    SessionNotFoundError,
    SessionStore,
    SessionTooLargeError,
    SessionWriteError,
    StoredSession,
)
from sessionstore.appendlog import FOLD_MINIMUM, AppendResult, fold_threshold
from sessionstore.asyncstore import AsyncMemorySessionStore, AsyncSessionStore
from sessionstore.backends import filesystem
from sessionstore.backends.base import content_etag
from sessionstore.records import KEY_MEMORY, STORE_LINE_PREFIX
from sessionstore.store import BackendSessionStore
from sessionstore.testing.blocking import BlockingView

from .pg import DSN, SKIP_REASON, unique_table

BACKENDS = ["file", "memory", "postgres", "async-file", "async-memory", "async-postgres"]
"""Every store class; the async ones through ``BlockingView``, so they meet the same tests."""


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendSessionStore]:
    if request.param == "file":
        yield SessionStore(tmp_path / "store")
    elif request.param == "memory":
        yield MemorySessionStore()
    elif request.param == "async-postgres":
        if not DSN:
            pytest.skip(SKIP_REASON)
        yield from _async_postgres_view()
    elif request.param.startswith("async-"):
        async_store = (
            AsyncSessionStore(tmp_path / "store")
            if request.param == "async-file"
            else AsyncMemorySessionStore()
        )
        view = BlockingView(async_store)
        try:
            yield view  # type: ignore[misc]  # the same methods, run on an event loop
        finally:
            view.close()
    else:
        if not DSN:
            pytest.skip(SKIP_REASON)
        from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415

        pg = PostgresSessionStore(DSN, table=unique_table("log"))
        pg.setup()
        try:
            yield pg
        finally:
            pg.backend.drop()
            pg.close()


def _async_postgres_view() -> Iterator[BackendSessionStore]:
    from sessionstore.asyncpostgres import AsyncPostgresSessionStore  # noqa: PLC0415
    from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415

    table = unique_table("alog")
    view = BlockingView(AsyncPostgresSessionStore(DSN, table=table))
    try:
        view.setup()
        yield view  # type: ignore[misc]  # the same methods, run on an event loop
    finally:
        view.close()
        with PostgresSessionStore(DSN, table=table) as dropper:
            dropper.backend.drop()


@pytest.fixture
def files(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "store")


def file_of(store: SessionStore, session_id: str) -> Path:
    return store.path_of(session_id)


# --- the API, on every backend ---------------------------------------------------------


def test_append_creates_then_adds_and_returns_totals(store: BackendSessionStore) -> None:
    first = store.append("s", ["hi"], input_tokens=3)
    assert first == AppendResult(first.etag, 1, 3, 0, replayed=False)
    second = store.append("s", ["a", "b"], input_tokens=1, output_tokens=5)
    assert (second.message_count, second.input_tokens, second.output_tokens) == (3, 4, 5)
    session, etag = store.load_with_etag("s")
    assert session.messages == ("hi", "a", "b")
    assert (session.input_tokens, session.output_tokens) == (4, 5)
    assert session.created_at is not None
    assert session.updated_at is not None
    assert session.updated_at >= session.created_at
    assert etag == second.etag != first.etag


def test_a_retry_with_the_same_key_adds_nothing_and_returns_the_first_result(
    store: BackendSessionStore,
) -> None:
    first = store.append("s", ["one"], input_tokens=2, key="turn-1")
    store.append("s", ["two"], key="turn-2")
    again = store.append("s", ["one"], input_tokens=2, key="turn-1")
    assert again == AppendResult(first.etag, 1, 2, 0, replayed=True)
    assert store.load("s").messages == ("one", "two")
    assert store.load("s").input_tokens == 2


def test_keys_survive_compact_update_and_the_automatic_fold(store: BackendSessionStore) -> None:
    first = store.append("s", ["x"], key="k")
    store.compact("s")
    assert store.append("s", ["x"], key="k").replayed
    store.update("s", lambda s: s)
    assert store.append("s", ["x"], key="k") == AppendResult(first.etag, 1, 0, 0, True)
    big = "y" * 2000
    for i in range(3 * FOLD_MINIMUM // len(big)):
        store.append("s", [big], key=f"fill-{i}")
    assert store.append("s", ["x"], key="k").replayed
    assert store.append("s", [big], key="fill-0").replayed
    assert len(store.load("s").messages) == 1 + 3 * FOLD_MINIMUM // len(big)


def test_the_latest_thousand_keys_are_remembered(store: BackendSessionStore) -> None:
    for i in range(KEY_MEMORY + 5):
        store.append("s", [str(i)], key=f"k{i}")
    store.compact("s")
    assert store.append("s", ["again"], key=f"k{KEY_MEMORY + 4}").replayed
    assert store.append("s", ["again"], key="k5").replayed
    # The oldest keys are forgotten: the memory is bounded.
    assert not store.append("s", ["new"], key="k0").replayed


def test_if_match_works_across_appends_saves_and_folds(store: BackendSessionStore) -> None:
    etag = store.append("s", ["a"]).etag
    etag = store.append("s", ["b"], if_match=etag).etag
    with pytest.raises(ConflictError):
        store.append("s", ["c"], if_match="0" * 32)
    assert store.compact("s") == etag  # a fold keeps the etag
    assert store.load_with_etag("s")[1] == etag
    saved = store.save(store.load("s"), if_match=etag)
    with pytest.raises(ConflictError):
        store.append("s", ["c"], if_match=etag)
    store.append("s", ["c"], if_match=saved)
    assert store.load("s").messages == ("a", "b", "c")


def test_if_match_on_a_missing_session_is_a_conflict(store: BackendSessionStore) -> None:
    with pytest.raises(ConflictError):
        store.append("nobody", ["a"], if_match="0" * 32)
    assert not store.exists("nobody")


def test_compact_changes_nothing_a_caller_sees(store: BackendSessionStore) -> None:
    for i in range(5):
        store.append("s", [f"m{i}"], input_tokens=i)
    before = store.load_with_etag("s")
    assert store.compact("s") == before[1]
    assert store.load_with_etag("s") == before
    assert store.compact("s") == before[1]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"input_tokens": -1}, ValueError),
        ({"output_tokens": True}, ValueError),
        ({"key": ""}, ValueError),
        ({"key": "k" * 257}, ValueError),
        ({"key": "\ud800"}, ValueError),
        ({"if_match": 5}, TypeError),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    store: BackendSessionStore, kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.append("s", ["a"], **kwargs)  # type: ignore[arg-type]
    assert not store.exists("s")


@pytest.mark.parametrize("messages", ["one string", [1], ["\udc80"]])
def test_bad_messages_are_refused(store: BackendSessionStore, messages: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        store.append("s", messages)  # type: ignore[arg-type]
    assert not store.exists("s")


def test_token_totals_past_the_limit_are_refused(store: BackendSessionStore) -> None:
    store.append("s", ["a"], input_tokens=2**63 - 1)
    etag = store.load_with_etag("s")[1]
    with pytest.raises(ValueError, match="input_tokens would total"):
        store.append("s", ["b"], input_tokens=1)
    assert store.load_with_etag("s")[1] == etag


def test_an_append_past_max_bytes_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    for store in (SessionStore(tmp_path / "s", max_bytes=4000), MemorySessionStore(max_bytes=4000)):
        store.append("s", ["x" * 1000])
        before = store.load_with_etag("s")
        with pytest.raises(SessionTooLargeError):
            store.append("s", ["y" * 3000])
        assert store.load_with_etag("s") == before


def test_append_messages_keeps_its_contract_on_the_log(store: BackendSessionStore) -> None:
    stored = store.append_messages("s", ["a"], input_tokens=1)
    assert stored == store.load("s")
    stored = store.append_messages("s", ["b"], output_tokens=2)
    assert stored.messages == ("a", "b")
    assert stored == store.load("s")


# --- the file on disk --------------------------------------------------------------------


def test_a_file_with_records_reads_as_a_stream_of_json_texts(files: SessionStore) -> None:
    files.save(StoredSession("s", ["zero"], 0, 0, metadata={"a": {"b": [1]}}))
    for i in range(3):
        files.append("s", [f"line\n{i}", "é🚀"], key=f"k{i}")
    text = file_of(files, "s").read_text("utf-8")
    decoder = json.JSONDecoder()
    values, at = [], 0
    while at < len(text):
        value, at = decoder.raw_decode(text, at)
        values.append(value)
        at = len(text) - len(text[at:].lstrip())
    assert values[0]["schema_version"] == 3
    assert [record["seq"] for record in values[1:]] == [1, 2, 3]
    # One record per line: no record holds a raw newline.
    assert text.count("\n") == text[: text.index("\n}\n") + 3].count("\n") + 3


def test_a_saved_session_is_exactly_the_plain_document(files: SessionStore) -> None:
    files.append("s", ["a"])
    files.append("s", ["b"])
    files.save(files.load("s"))
    data = file_of(files, "s").read_bytes()
    assert data.endswith(b"\n}\n")
    assert STORE_LINE_PREFIX not in data
    assert json.loads(data)["messages"] == ["a", "b"]


def test_an_older_file_is_folded_to_the_current_version_on_its_first_append(
    files: SessionStore,
) -> None:
    path = file_of(files, "old")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"session_id": "old", "messages": ["a"], "input_tokens": 1,
                                "output_tokens": 2}))  # fmt: skip
    files.append("old", ["b"])
    assert json.loads(path.read_bytes().split(b"\n}\n")[0] + b"}")["schema_version"] == 3
    assert files.load("old").messages == ("a", "b")


def test_appends_fold_automatically_and_the_file_stays_bounded(files: SessionStore) -> None:
    for i in range(400):
        files.append("s", [f"message {i} " + "x" * 100])
    data = file_of(files, "s").read_bytes()
    records = data[data.index(b"\n}\n") + 3 :]
    assert STORE_LINE_PREFIX in data
    assert len(records) <= fold_threshold(len(data) - len(records)) + 200
    assert len(files.load("s").messages) == 400


def test_the_etag_of_the_bytes_is_the_etag_a_load_gives(files: SessionStore) -> None:
    for i in range(4):
        result = files.append("s", [str(i)], key=str(i))
        data = file_of(files, "s").read_bytes()
        assert content_etag(data) == files.load_with_etag("s")[1] == result.etag
    files.compact("s")
    assert content_etag(file_of(files, "s").read_bytes()) == result.etag


def _file_with_records(files: SessionStore, n: int = 3) -> tuple[Path, bytes, list[int]]:
    """A session file with ``n`` records; its bytes and where each record starts."""
    files.save(StoredSession("s", ["snap"], 1, 1))
    for i in range(n):
        files.append("s", [f"r{i}"], input_tokens=1)
    path = file_of(files, "s")
    data = path.read_bytes()
    start = data.index(b"\n}\n") + 3
    starts = [start]
    for _ in range(n - 1):
        starts.append(data.index(b"\n", starts[-1]) + 1)
    return path, data, starts


def test_a_torn_last_record_at_every_byte_is_ignored_and_cut_by_the_next_append(
    files: SessionStore,
) -> None:
    path, data, starts = _file_with_records(files)
    acknowledged = files.load("s")
    previous = StoredSession("s", acknowledged.messages[:-1], 3, 1)
    for cut in range(starts[-1], len(data)):
        path.write_bytes(data[:cut])
        loaded = files.load("s")
        assert loaded.messages == previous.messages, cut
        assert loaded.input_tokens == previous.input_tokens
    path.write_bytes(data[: len(data) - 7])
    files.append("s", ["after"])
    assert files.load("s").messages == (*previous.messages, "after")


@pytest.mark.parametrize(
    "tail", [b"\0" * 300, b"garbage without a newline", b'{"seq":4,"prev":"x"', b"\xff\xfe"]
)
def test_a_tail_without_a_newline_is_an_unfinished_append(files: SessionStore, tail: bytes) -> None:
    path, data, _ = _file_with_records(files)
    expected = files.load("s")
    path.write_bytes(data + tail)
    assert files.load("s") == expected


def _corrupts(files: SessionStore, path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with pytest.raises(CorruptSessionError):
        files.load("s")


def test_damage_to_acknowledged_records_is_refused_never_dropped(files: SessionStore) -> None:
    path, data, starts = _file_with_records(files, 4)
    lines = data[starts[0] :].splitlines(keepends=True)
    snapshot = data[: starts[0]]
    cases: dict[str, bytes] = {
        "dropped middle": snapshot + lines[0] + lines[2] + lines[3],
        "duplicated middle": snapshot + lines[0] + lines[1] + lines[1] + lines[2] + lines[3],
        "reordered": snapshot + lines[1] + lines[0] + lines[2] + lines[3],
        "garbage line at the end": data + b"garbage\n",
        "zeros then a newline": data + b"\0" * 40 + b"\n",
        "a last record cut short but with a newline": data[:-20] + b"\n",
        "fake record": data + lines[3].replace(b'"r3"', b'"r9"'),
        "garbage before an intact record": snapshot + lines[0] + b"junk\n" + lines[1],
    }
    for name, damaged in cases.items():
        path.write_bytes(damaged)
        with pytest.raises(CorruptSessionError):
            files.load("s")
        assert name


def test_every_bit_flip_in_a_record_is_caught(files: SessionStore) -> None:
    path, data, starts = _file_with_records(files, 3)
    for at in range(starts[1], starts[2] - 1):
        for bit in (0x01, 0x20, 0x80):
            damaged = bytearray(data)
            damaged[at] ^= bit
            if bytes(damaged) == data:
                continue
            path.write_bytes(bytes(damaged))
            with pytest.raises(CorruptSessionError):
                files.load("s")


def test_a_record_spliced_in_from_another_session_is_caught(files: SessionStore) -> None:
    path, data, starts = _file_with_records(files, 2)
    files.save(StoredSession("t", ["snap"], 1, 1))
    files.append("t", ["r0"], input_tokens=1)
    other = file_of(files, "t").read_bytes()
    foreign = other[other.index(b"\n}\n") + 3 :]
    _corrupts(files, path, data + foreign)
    _corrupts(files, path, data[: starts[1]] + foreign)


def test_an_append_after_damage_does_not_write(files: SessionStore) -> None:
    path, data, starts = _file_with_records(files, 3)
    damaged = data[: starts[1]] + data[starts[2] :]
    path.write_bytes(damaged)
    with pytest.raises(CorruptSessionError):
        files.append("s", ["more"])
    assert path.read_bytes() == damaged


def test_compact_writes_nothing_when_there_is_nothing_to_fold(files: SessionStore) -> None:
    files.save(StoredSession("s", ["a"], 0, 0))
    before = os.stat(file_of(files, "s"))
    files.compact("s")
    after = os.stat(file_of(files, "s"))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_compact_cuts_a_torn_tail(files: SessionStore) -> None:
    path, data, _ = _file_with_records(files, 2)
    path.write_bytes(data + b'{"seq":3')
    etag = files.compact("s")
    assert path.read_bytes().endswith(b"\n}\n")
    assert files.load_with_etag("s")[1] == etag


# --- a model of the store, by Hypothesis ------------------------------------------------

_text = st.text(max_size=20)
_operation = st.one_of(
    st.tuples(
        st.just("append"),
        st.lists(_text, max_size=3),
        st.integers(0, 2**57),
        st.sampled_from([None, "a", "b", "c", "😀" * 3]),
    ),
    st.tuples(st.just("compact")),
    st.tuples(st.just("save")),
)


@given(operations=st.lists(_operation, max_size=25))
def test_appends_compacts_and_saves_agree_with_a_model(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[object, ...]]
) -> None:
    store = SessionStore(tmp_path_factory.mktemp("model"), durable=False)
    messages: list[str] = []
    tokens = 0
    keys: dict[str, AppendResult] = {}
    for operation in operations:
        if operation[0] == "append":
            _, added, more, key = operation
            assert isinstance(added, list)
            assert isinstance(more, int)
            result = store.append("s", added, input_tokens=more, key=key)  # type: ignore[arg-type]
            if isinstance(key, str) and key in keys:
                assert result == keys[key]
                continue
            messages += added
            tokens += more
            assert result.message_count == len(messages)
            if isinstance(key, str):
                keys[key] = dataclasses.replace(result, replayed=True)
        elif operation[0] == "compact" and messages:
            store.compact("s")
        elif operation[0] == "save" and store.exists("s"):
            store.save(store.load("s"))
            keys.clear()  # a save replaces the session and forgets its keys
    if store.exists("s"):
        session, etag = store.load_with_etag("s")
        assert list(session.messages) == messages
        assert session.input_tokens == tokens
        assert etag == content_etag(store.path_of("s").read_bytes())


# --- failures of the append's system calls ------------------------------------------------


def test_a_failed_flush_is_commit_unknown_naming_the_etag_and_a_keyed_retry_is_once(
    files: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.append("s", ["a"])
    files.append("s", ["b"])  # records exist: the next append takes the flat path

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "injected: I/O error")

    monkeypatch.setattr(filesystem, "sync_data", failing)
    with pytest.raises(CommitUnknownError) as info:
        files.append("s", ["c"], key="turn-3")
    monkeypatch.undo()
    # The unflushed record was cut back off (a retry must write and flush it again);
    # the error names the etag the session would have had, had it survived a crash.
    assert info.value.etag is not None
    assert files.load("s").messages == ("a", "b")
    again = files.append("s", ["c"], key="turn-3")
    assert not again.replayed
    assert files.append("s", ["c"], key="turn-3").replayed
    assert files.load("s").messages == ("a", "b", "c")


@pytest.mark.parametrize("short", [0, 5])
def test_a_short_or_failed_write_appends_nothing(
    files: SessionStore, monkeypatch: pytest.MonkeyPatch, short: int
) -> None:
    files.append("s", ["a"])
    files.append("s", ["b"])
    before = file_of(files, "s").read_bytes()
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if short == 0:
            raise OSError(errno.ENOSPC, "injected: no space left on device")
        return real_write(fd, data[:short])

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(SessionWriteError) as info:
        files.append("s", ["c"])
    monkeypatch.undo()
    assert not isinstance(info.value, CommitUnknownError)
    assert file_of(files, "s").read_bytes() == before
    assert files.load("s").messages == ("a", "b")


def test_a_damaged_folded_snapshot_is_refused(files: SessionStore) -> None:
    # A fold records the digest of the snapshot it wrote: damage to it is noticed,
    # as damage to a snapshot that records chain to is.
    files.append("s", ["message one"], key="k")
    files.append("s", ["message two"])
    files.compact("s")
    path = file_of(files, "s")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"message one", b"message 0ne"))
    with pytest.raises(CorruptSessionError, match="digest"):
        files.load("s")


def test_compact_of_an_older_version_keeps_its_etag(files: SessionStore) -> None:
    path = file_of(files, "old")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '{"session_id": "old", "messages": ["a"], "input_tokens": 1, "output_tokens": 2}'
    )
    session, etag = files.load_with_etag("old")
    assert files.compact("old") == etag
    assert files.load_with_etag("old") == (session, etag)
    files.save(session, if_match=etag)


def test_append_messages_to_a_damaged_session_writes_nothing(files: SessionStore) -> None:
    path, data, _ = _file_with_records(files, 3)
    damaged = data.replace(b'"r1"', b'"rX"')
    path.write_bytes(damaged)
    with pytest.raises(CorruptSessionError):
        files.append_messages("s", ["more"])
    with pytest.raises(CorruptSessionError):
        files.append("s", ["more"])
    assert path.read_bytes() == damaged


# --- what an append remembers between appends (flat cost with many records) ------------


@pytest.mark.parametrize("store", ["file", "memory", "postgres"], indirect=True)
def test_update_keeps_the_keys_its_own_function_appended(store: BackendSessionStore) -> None:
    store.append("s", ["first"], key="outer")

    def fn(current: StoredSession) -> StoredSession:
        # The lock is re-entrant: the function may append to the session it updates.
        store.append("s", ["inside"], key="inner")
        return dataclasses.replace(store.load("s"), metadata={"updated": True})

    store.update("s", fn)
    assert store.append("s", ["inside"], key="inner").replayed
    assert store.append("s", ["first"], key="outer").replayed
    session = store.load("s")
    assert session.messages == ("first", "inside")
    assert session.metadata == {"updated": True}


@pytest.mark.parametrize("store", ["file", "memory", "postgres"], indirect=True)
def test_update_forgets_the_key_of_an_append_its_result_overwrites(
    store: BackendSessionStore,
) -> None:
    store.append("s", ["first"], key="outer")

    def fn(current: StoredSession) -> StoredSession:
        assert not store.append("s", ["inside"], key="inner").replayed
        # Built from the session as it was before that append: the append is overwritten.
        return dataclasses.replace(current, metadata={"updated": True})

    store.update("s", fn)
    assert store.load("s").messages == ("first",)
    retry = store.append("s", ["inside"], key="inner")
    assert not retry.replayed, "the key of an overwritten append must not claim it landed"
    assert store.load("s").messages == ("first", "inside")
    assert store.append("s", ["first"], key="outer").replayed


def _count_tail_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = filesystem.FileSystemBackend.read_tail

    def spy(self: filesystem.FileSystemBackend, session_id: str, *, max_bytes: int) -> object:
        calls.append(session_id)
        return real(self, session_id, max_bytes=max_bytes)

    monkeypatch.setattr(filesystem.FileSystemBackend, "read_tail", spy)
    return calls


def test_appends_of_one_process_do_not_read_the_records_again(
    files: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _count_tail_reads(monkeypatch)
    files.save(StoredSession("s", ["snap"], 0, 0))
    files.append("s", ["r0"], key="k0")
    assert reads == ["s"]
    results = [files.append("s", [f"r{i}"], key=f"k{i}") for i in range(1, 6)]
    assert reads == ["s"], "the appends after the first read no tail"
    # What they remembered is what the file says: keys replay, counts and etags match.
    assert files.append("s", ["r3"], key="k3") == dataclasses.replace(results[2], replayed=True)
    assert files.append("s", ["r0"], key="k0").replayed
    session, etag = files.load_with_etag("s")
    assert session.messages == ("snap", "r0", "r1", "r2", "r3", "r4", "r5")
    assert etag == results[-1].etag
    files.compact("s")
    files.append("s", ["after the fold"])
    assert reads == ["s", "s"], "a fold replaced the file: the next append reads it"


def test_an_append_after_another_process_appended_reads_the_tail_again(
    files: SessionStore,
) -> None:
    files.append("s", ["mine 0"], key="m0")
    files.append("s", ["mine 1"], key="m1")
    code = (
        "import sys; from sessionstore import SessionStore; "
        "SessionStore(sys.argv[1]).append('s', ['theirs'], key='t0')"
    )
    subprocess.run([sys.executable, "-c", code, str(files.directory)], check=True)
    third = files.append("s", ["mine 2"], key="m2")
    session, etag = files.load_with_etag("s")
    assert session.messages == ("mine 0", "mine 1", "theirs", "mine 2")
    assert etag == third.etag
    assert third.message_count == 4
    assert files.append("s", ["theirs"], key="t0").replayed


def test_an_append_after_the_last_record_was_rewritten_in_place_reads_it_again(
    files: SessionStore,
) -> None:
    path, _, _ = _file_with_records(files, 3)
    data = path.read_bytes()
    # Same inode, same size, other last line: a record of another append.
    damaged = data.replace(b'"r2"', b'"rZ"')
    with path.open("r+b") as handle:
        handle.write(damaged)
    with pytest.raises(CorruptSessionError):
        files.append("s", ["more"])
    assert path.read_bytes() == damaged


def test_appends_to_more_sessions_than_one_process_remembers_stay_exact(
    files: SessionStore,
) -> None:
    ids = [f"s{number}" for number in range(100)]  # past appendlog's 64 remembered files

    def writer(offset: int) -> None:
        for turn in range(3):
            for session_id in ids[offset::4]:
                files.append(session_id, [f"{session_id} {turn}"], key=f"{session_id}-{turn}")

    threads = [threading.Thread(target=writer, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for session_id in ids:
        assert files.load(session_id).messages == tuple(f"{session_id} {t}" for t in range(3))
        assert files.append(session_id, [f"{session_id} 1"], key=f"{session_id}-1").replayed


_APPEND_IN_A_NEW_PROCESS = """
import sys
from sessionstore import CorruptSessionError, SessionStore
try:
    SessionStore(sys.argv[1]).append(sys.argv[2], ["more"])
except CorruptSessionError as exc:
    print(exc.reason)
    sys.exit(3)
"""


def _append_in_a_new_process(files: SessionStore, session_id: str) -> int:
    return subprocess.run(
        [sys.executable, "-c", _APPEND_IN_A_NEW_PROCESS, str(files.directory), session_id],
        check=False,
        capture_output=True,
    ).returncode


@pytest.mark.parametrize("folded", [False, True], ids=["saved", "folded"])
def test_an_append_never_lands_on_a_snapshot_damaged_in_place(
    files: SessionStore, folded: bool
) -> None:
    files.save(StoredSession("s", ["hello snapshot"], 0, 0))
    files.append("s", ["r0"])
    if folded:
        files.compact("s")
        files.append("s", ["r1"])
    path = file_of(files, "s")
    damaged = path.read_bytes().replace(b"hello snapshot", b"hellO snapshot")
    path.write_bytes(damaged)
    assert _append_in_a_new_process(files, "s") == 3
    assert path.read_bytes() == damaged


def test_an_append_never_lands_on_a_file_copied_from_another_session(
    files: SessionStore,
) -> None:
    files.append("a", ["r0"])
    files.append("a", ["r1"])
    data = file_of(files, "a").read_bytes()
    file_of(files, "b").write_bytes(data)  # cp a.json b.json
    with pytest.raises(CorruptSessionError):
        files.load("b")
    assert _append_in_a_new_process(files, "b") == 3
    assert file_of(files, "b").read_bytes() == data


def test_an_append_is_stamped_when_it_is_written_not_when_it_was_called(
    files: SessionStore,
) -> None:
    from sessionstore.appendlog import Append, append_locked  # noqa: PLC0415

    files.append("s", ["first"])
    called = datetime.now(timezone.utc) - timedelta(hours=1)  # waited an hour for the lock
    written_after = datetime.now(timezone.utc)
    with files.backend.lock("s"):
        append_locked(files._target("s"), Append(("late",), 0, 0, None, called), if_match=None)
    updated_at = files.load("s").updated_at
    assert updated_at is not None
    assert updated_at >= written_after


def test_refused_appends_and_compacts_of_a_missing_session_create_no_folder(
    tmp_path: Path,
) -> None:
    store = SessionStore(tmp_path / "not" / "yet")
    with pytest.raises(ConflictError):
        store.append("s", ["x"], if_match="0" * 32)
    with pytest.raises(SessionNotFoundError):
        store.compact("s")
    assert not (tmp_path / "not").exists()
