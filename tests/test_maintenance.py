"""Maintenance over any store (inspect, migrate with compare-and-swap, copy with verification),
and the folder backend's maintenance methods."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sessionstore import CorruptSessionError, MemorySessionStore, SessionStore, StoredSession
from sessionstore.backends.filesystem import (
    INVALID_NAME,
    OTHER,
    SESSION,
    TEMP,
    Entry,
    FileSystemBackend,
    classify_name,
)
from sessionstore.codec import decode_document, encode
from sessionstore.maintenance import (
    copy_store,
    find_debris,
    inspect_store,
    migrate_store,
    remove_debris,
)

CORPUS = Path(__file__).parent / "corpus"


def seed_doc(session_id: str) -> bytes:
    return json.dumps(
        {"session_id": session_id, "messages": ["a"], "input_tokens": 1, "output_tokens": 2}
    ).encode()


def memory_with_old_documents() -> MemorySessionStore:
    store = MemorySessionStore()
    for session_id in ["old1", "old2"]:
        store.backend.write(session_id, seed_doc(session_id))
    store.save(StoredSession(session_id="new", messages=(), input_tokens=0, output_tokens=0))
    store.backend.write("bad", b"{ torn")
    store.backend.write("future", b'{"schema_version": 9}')
    return store


def test_inspect_store_reports_each_document() -> None:
    total, reports = inspect_store(memory_with_old_documents())
    status = {r.session_id: r.status for r in reports}
    assert total == 5
    assert status == {
        "bad": "corrupt",
        "future": "too-new",
        "new": "current",
        "old1": "needs-migration",
        "old2": "needs-migration",
    }


def test_migrate_store_rewrites_old_documents_and_leaves_others() -> None:
    store = memory_with_old_documents()
    before = {i: store.backend.read(i, max_bytes=10**6) for i in ["new", "bad", "future"]}
    _, results = migrate_store(store)
    actions = {r.session_id: action for r, action in results}
    assert actions == {
        "bad": "skipped",
        "future": "skipped",
        "new": "unchanged",
        "old1": "migrated",
        "old2": "migrated",
    }
    for session_id, data in before.items():
        assert store.backend.read(session_id, max_bytes=10**6) == data
    migrated = store.backend.read("old1", max_bytes=10**6)
    assert migrated is not None
    assert decode_document(migrated, session_id="old1").source_version == 3


def test_migrate_store_dry_run_writes_nothing() -> None:
    store = memory_with_old_documents()
    old = store.backend.read("old1", max_bytes=10**6)
    _, results = migrate_store(store, dry_run=True)
    assert {a for _, a in results} >= {"would-migrate"}
    assert store.backend.read("old1", max_bytes=10**6) == old


def test_migrate_store_never_overwrites_a_concurrent_save(monkeypatch: pytest.MonkeyPatch) -> None:
    store = memory_with_old_documents()
    newer = StoredSession(session_id="old2", messages=("newer",), input_tokens=5, output_tokens=5)
    real_read = store.backend.read

    def read_then_race(session_id: str, *, max_bytes: int) -> bytes | None:
        data = real_read(session_id, max_bytes=max_bytes)
        if session_id == "old2" and data == seed_doc("old2"):
            # A live writer saves right after migrate has read the old document.
            store.backend.write("old2", encode(newer))
        return data

    monkeypatch.setattr(store.backend, "read", read_then_race)
    _, results = migrate_store(store)
    outcome = {report.session_id: action for report, action in results}
    assert outcome["old1"] == "migrated"
    assert outcome["old2"] == "unchanged"
    assert store.load("old2") == newer


def test_copy_store_copies_and_verifies_every_session(tmp_path: Path) -> None:
    source = SessionStore(CORPUS)
    target = MemorySessionStore()
    outcomes = list(copy_store(source, target))
    assert [o for _, o, _ in outcomes] == ["copied"] * 8
    assert target.list() == source.list()
    for session_id in source.list():
        assert target.load(session_id) == source.load(session_id)
    back = SessionStore(tmp_path / "back")
    assert {o for _, o, _ in copy_store(target, back)} == {"copied"}
    assert back.load("v2-full") == source.load("v2-full")


def test_copy_store_reports_documents_it_cannot_load() -> None:
    source = memory_with_old_documents()
    target = MemorySessionStore()
    outcomes = {session_id: outcome for session_id, outcome, _ in copy_store(source, target)}
    assert outcomes == {
        "bad": "failed",
        "future": "failed",
        "new": "copied",
        "old1": "copied",
        "old2": "copied",
    }
    assert target.list() == ["new", "old1", "old2"]


# --- the folder backend's maintenance methods: the layout in one place ------------------


@pytest.mark.parametrize(
    ("name", "kind", "session_id"),
    [
        ("chat-1.json", SESSION, "chat-1"),
        ("CON.json", INVALID_NAME, None),
        ("bad name.json", INVALID_NAME, None),
        (".hidden.json", INVALID_NAME, None),
        (".chat-1.json.0123456789abcdef.tmp", TEMP, "chat-1"),
        (".bad name.json.0123456789abcdef.tmp", OTHER, None),
        (".chat-1.json.0123456789ABCDEF.tmp", OTHER, None),
        (".notes.txt.0123456789abcdef.tmp", OTHER, None),
        (".locks", OTHER, None),
        (".quarantine", OTHER, None),
        ("notes.txt", OTHER, None),
    ],
)
def test_names_are_classified_in_one_place(name: str, kind: str, session_id: str | None) -> None:
    assert classify_name(name) == Entry(name, kind, session_id)


@pytest.fixture
def backend(tmp_path: Path) -> FileSystemBackend:
    store = SessionStore(tmp_path)
    store.save(StoredSession(session_id="ok", messages=("m",), input_tokens=0, output_tokens=0))
    (tmp_path / "bad.json").write_bytes(b"{ torn")
    return FileSystemBackend(tmp_path)


def _damaged(data: bytes) -> bool:
    try:
        decode_document(data)
    except CorruptSessionError:
        return True
    return False


def test_quarantine_moves_only_what_is_still_damaged_under_the_lock(
    backend: FileSystemBackend, tmp_path: Path
) -> None:
    assert backend.quarantine("ok", _damaged) is None  # valid: stays
    assert backend.quarantine("absent", _damaged) is None
    target = backend.quarantine("bad", _damaged, clock=lambda: 0.0)
    assert target == tmp_path / ".quarantine" / "bad.json.19700101T000000Z"
    assert target.read_bytes() == b"{ torn"
    assert not (tmp_path / "bad.json").exists()
    (tmp_path / "bad.json").write_bytes(b"{ torn again")
    again = backend.quarantine("bad", _damaged, clock=lambda: 0.0)
    assert again == tmp_path / ".quarantine" / "bad.json.19700101T000000Z.1"
    assert sorted(os.listdir(tmp_path / ".locks")) == ["ok.lock"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "too large"])
def test_quarantine_never_moves_what_it_cannot_judge(
    backend: FileSystemBackend, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "odd.json"
    if kind == "symlink":
        path.symlink_to(tmp_path / "bad.json")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "wb") as handle:
            handle.truncate(backend.max_bytes + 1)
    assert backend.quarantine("odd", lambda data: True) is None
    assert os.path.lexists(path)
    assert not (tmp_path / ".quarantine").exists()


def test_remove_temp_only_removes_old_regular_temp_files_of_the_store(
    backend: FileSystemBackend, tmp_path: Path
) -> None:
    old, now = 1000.0, time.time()
    ours = tmp_path / ".ok.json.0123456789abcdef.tmp"
    ours.write_text("{")
    os.utime(ours, (old, old))
    fresh = tmp_path / ".ok.json.fedcba9876543210.tmp"
    fresh.write_text("{")
    foreign = tmp_path / ".bad name.json.0123456789abcdef.tmp"
    foreign.write_text("{")
    os.utime(foreign, (old, old))
    link = tmp_path / ".ok.json.00000000000000aa.tmp"
    link.symlink_to(tmp_path / "bad.json")
    assert backend.remove_temp(fresh.name, modified_before=now - 3600) is False
    assert backend.remove_temp(foreign.name, modified_before=now) is False
    assert backend.remove_temp(link.name, modified_before=now + 10) is False
    assert backend.remove_temp(ours.name, modified_before=now - 3600) is True
    assert backend.remove_temp(ours.name, modified_before=now - 3600) is False  # gone
    assert (fresh.exists(), foreign.exists(), link.is_symlink()) == (True, True, True)
    assert (tmp_path / "bad.json").read_bytes() == b"{ torn"


def test_remove_lock_file_keeps_the_lock_file_of_an_existing_session(
    backend: FileSystemBackend, tmp_path: Path
) -> None:
    (tmp_path / ".locks" / "gone.lock").write_text("")
    assert backend.remove_lock_file("ok") is False
    assert backend.remove_lock_file("gone") is True
    assert sorted(os.listdir(tmp_path / ".locks")) == ["ok.lock"]
    assert backend.lock_files() == ["ok"]


def test_a_writer_saving_between_scan_and_fix_wins(tmp_path: Path) -> None:
    # Issue 9.4, through the maintenance functions: the fix re-checks under the lock.
    store = SessionStore(tmp_path)
    (tmp_path / "s.json").write_bytes(b"{ torn")
    [item] = list(find_debris(tmp_path))
    assert item.kind == "corrupt"
    repaired = StoredSession(session_id="s", messages=("saved",), input_tokens=0, output_tokens=0)
    store.save(repaired)
    assert remove_debris(item) == (
        "left alone: re-read under its lock, it is no longer damaged",
        True,
    )
    assert store.load("s") == repaired
