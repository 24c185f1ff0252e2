"""Regressions found by hostile review of 0.2.0: copy, drop-in error shapes, compact, DSN hints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from sessionstore import SessionDeleteError, SessionNotFoundError, SessionStore, StoredSession
from sessionstore.cli import main
from sessionstore.cli.stores import Redactor
from sessionstore.maintenance import copy_store

SEED = Path(__file__).parent / "seed" / "seed_session_store.py"


def _seed() -> Any:
    """The original module, loaded from its file under its own name."""
    spec = importlib.util.spec_from_file_location("seed_session_store_review", SEED)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_copy_keeps_the_etag_and_the_append_keys(tmp_path: Path) -> None:
    source, target = SessionStore(tmp_path / "a"), SessionStore(tmp_path / "b")
    source.save(StoredSession("s", ["hi"], 1, 0))
    first = source.append("s", ["turn-1"], key="turn-1")
    etag = source.load_with_etag("s")[1]
    assert [action for _, action, _ in copy_store(source, target)] == ["copied"]
    assert target.load_with_etag("s") == source.load_with_etag("s")
    assert target.load_with_etag("s")[1] == etag
    again = target.append("s", ["turn-1"], key="turn-1")
    assert again.replayed
    assert again.etag == first.etag
    assert target.load("s").messages == ("hi", "turn-1")
    assert [action for _, action, _ in copy_store(source, target)] == ["identical"]
    target.append("s", ["turn-2"], key="turn-2")
    assert [action for _, action, _ in copy_store(source, target)] == ["refused"]


def test_a_second_copy_is_identical_only_with_the_same_keys(tmp_path: Path) -> None:
    source, target = SessionStore(tmp_path / "a"), SessionStore(tmp_path / "b")
    source.append("s", ["x"], key="k")
    list(copy_store(source, target))
    assert [action for _, action, _ in copy_store(source, target)] == ["identical"]


@pytest.mark.parametrize(
    "args",
    [
        (13, "no way, read-only mount"),
        (13, "Permission denied", "/x/s.json"),
        (5, "I/O error", "/x/s.json", None, "/y"),
    ],
)
def test_session_delete_error_constructs_like_the_originals(args: tuple[object, ...]) -> None:
    seed = _seed()
    original = seed.SessionDeleteError(*args)
    ours = SessionDeleteError(*args)
    for name in ("errno", "strerror", "filename", "filename2", "args"):
        assert getattr(ours, name) == getattr(original, name), name
    assert str(ours) == str(original)
    assert SessionNotFoundError().args == seed.SessionNotFoundError().args == ()


def test_compact_counts_only_the_records_it_folded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SessionStore(tmp_path)
    for session_id, count in (("a", 3), ("b", 1)):
        store.save(StoredSession(session_id, ["hi"], 1, 0))
        for i in range(count):
            store.append(session_id, [f"m{i}"], key=f"k{i}")
    with (tmp_path / "a.json").open("ab") as file:
        file.write(b'{"seq":4,"pre')  # a torn tail, which compact cuts into .quarantine
    (tmp_path / ".quarantine").symlink_to(tmp_path / "elsewhere")  # so a fails
    assert main(["compact", "--dir", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    actions = {item["id"]: item["action"] for item in report["items"]}
    assert actions == {"a": "failed", "b": "compacted"}
    assert report["summary"]["records"] == 1


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("'host=db user=app password=s3cret'", "'host=db user=app password=***'"),
        ("'postgresql://app@db/x?password=s3cret'", "'postgresql://app@db/x?password=***'"),
        ("password='se cret' host=db", "password=*** host=db"),
    ],
)
def test_a_redacted_dsn_keeps_its_shell_quotes(dsn: str, shown: str) -> None:
    redact = Redactor()
    redact.add_dsn(dsn.strip("'"))
    line = f"next: sessionstore compact --dsn {dsn}"
    assert redact(line) == f"next: sessionstore compact --dsn {shown}"
