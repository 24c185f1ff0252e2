"""Maintenance over any store: inspect, migrate with compare-and-swap, copy with verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sessionstore import MemorySessionStore, SessionStore, StoredSession
from sessionstore.codec import decode_document, encode
from sessionstore.maintenance import copy_store, inspect_store, migrate_store

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
    assert decode_document(migrated, session_id="old1").source_version == 2


def test_migrate_store_dry_run_writes_nothing() -> None:
    store = memory_with_old_documents()
    old = store.backend.read("old1", max_bytes=10**6)
    _, results = migrate_store(store, dry_run=True)
    assert {a for _, a in results} >= {"would migrate"}
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
