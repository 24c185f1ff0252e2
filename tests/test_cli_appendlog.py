"""The command on version-3 files with append records: ``validate``/``status`` report
records and torn tails, ``doctor --fix`` cuts a torn tail into the quarantine,
``compact`` folds, ``migrate`` leaves such files alone and ``--to`` folds first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sessionstore import SessionStore, StoredSession, maintenance
from sessionstore.backends.filesystem import FileSystemBackend
from sessionstore.cli import main
from sessionstore.codec import decode_document
from sessionstore.errors import SessionWriteError

TORN = b'{"seq":3,"prev":"0123'


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    document: dict[str, Any] = json.loads(out)
    assert document["ok"] is (code == 0)
    return code, document


def items(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in document["items"]}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """``log``: two records; ``torn``: one record and a torn tail; ``plain``: no records."""
    folder = tmp_path / "store"
    sessions = SessionStore(folder)
    for session_id in ("log", "torn", "plain"):
        sessions.save(StoredSession(session_id, ("hello",), 1, 1))
    sessions.append("log", ["one"], input_tokens=2, key="k1")
    sessions.append("log", ["two"], output_tokens=3, key="k2")
    sessions.append("torn", ["one"], key="t1")
    with (folder / "torn.json").open("ab") as file:
        file.write(TORN)
    return folder


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.json")}


def test_validate_and_status_report_records_and_torn_tails(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    before = files(store)
    code, document = run_json(capsys, "validate", "--dir", str(store))
    assert code == 0, "a torn tail is an append that never finished: the session loads"
    found = items(document)
    assert (found["log"]["status"], found["log"]["records"], found["log"]["torn_bytes"]) == (
        "current",
        2,
        0,
    )
    assert (found["torn"]["records"], found["torn"]["torn_bytes"]) == (1, len(TORN))
    assert (found["plain"]["records"], found["plain"]["torn_bytes"]) == (0, 0)
    assert (document["summary"]["records"], document["summary"]["torn_tails"]) == (3, 1)

    assert main(["validate", "--dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"torn tail of {len(TORN)} bytes: an append that never finished" in out
    assert "log" not in out.split(), "a file with records is current: nothing to say"
    assert out.splitlines()[-1] == f"next: sessionstore doctor --fix --dir {store}"

    assert main(["status", "--dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "  version 3:        3  current" in out
    assert "  records:          3  appended, not folded yet" in out
    assert "  torn tails:       1  file(s) end in an append that never finished" in out
    assert files(store) == before, "validate and status write nothing"


def test_doctor_fix_cuts_a_torn_tail_and_keeps_its_bytes_in_the_quarantine(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    session, etag = SessionStore(store).load_with_etag("torn")
    whole = (store / "torn.json").read_bytes()
    code, document = run_json(capsys, "doctor", "--dir", str(store))
    assert code == 1
    [finding] = document["items"]
    assert (finding["id"], finding["file"], finding["status"]) == ("torn", "torn.json", "torn-tail")
    assert (store / "torn.json").read_bytes() == whole, "doctor without --fix writes nothing"

    code, document = run_json(capsys, "doctor", "--fix", "--dir", str(store))
    assert code == 0
    [finding] = document["items"]
    assert (finding["status"], finding["action"]) == ("torn-tail", "cut")
    assert document["summary"]["cut"] == 1
    assert (store / "torn.json").read_bytes() == whole[: -len(TORN)]
    [kept] = (store / ".quarantine").iterdir()
    assert kept.name.startswith("torn.json.")
    assert kept.name.endswith(".torn-tail")
    assert kept.read_bytes() == TORN
    assert SessionStore(store).load_with_etag("torn") == (session, etag)
    assert run_json(capsys, "doctor", "--dir", str(store))[1]["items"] == []

    code, listed = run_json(capsys, "doctor", "--list-quarantine", "--dir", str(store))
    assert [item["id"] for item in listed["items"]] == ["torn"]
    SessionStore(store).delete("torn")
    assert main(["doctor", "--restore", kept.name, "--dir", str(store)]) == 2
    assert "not a session" in capsys.readouterr().err
    assert not (store / "torn.json").exists(), "a torn tail is never restored as a session"


def test_the_fix_looks_again_under_the_lock(store: Path) -> None:
    [finding] = maintenance.find_debris(store)
    SessionStore(store).compact("torn")  # the fold rewrote the file without the tail
    folded = (store / "torn.json").read_bytes()
    text, resolved = maintenance.remove_debris(finding)
    assert (text, resolved) == ("left alone: re-read under its lock, it has no torn tail", True)
    assert (store / "torn.json").read_bytes() == folded
    assert not (store / ".quarantine").exists()


def test_a_damaged_file_is_never_cut(store: Path) -> None:
    backend = FileSystemBackend(store)
    data = (store / "log.json").read_bytes()
    damaged = data.replace(b'"one"', b'"One"') + TORN  # a record no longer matches its hash
    (store / "log.json").write_bytes(damaged)
    kinds = {(f.kind, f.name) for f in maintenance.find_debris(store)}
    assert ("corrupt", "log") in kinds
    assert backend.cut_torn_tail("log", lambda _: 0) is None
    assert (store / "log.json").read_bytes() == damaged


def test_cutting_never_follows_links(store: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_bytes((store / "torn.json").read_bytes())
    (store / "torn.json").unlink()
    (store / "torn.json").symlink_to(outside)
    backend = FileSystemBackend(store)
    assert backend.cut_torn_tail("torn", lambda data: len(TORN)) is None
    assert outside.read_bytes().endswith(TORN)
    assert {f.kind for f in maintenance.find_debris(store)} == {"not-a-regular-file"}

    (store / "torn.json").unlink()
    os.rename(outside, store / "torn.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store / ".quarantine").symlink_to(elsewhere)
    whole = (store / "torn.json").read_bytes()
    with pytest.raises(SessionWriteError):
        backend.cut_torn_tail("torn", lambda data: len(TORN))
    assert (store / "torn.json").read_bytes() == whole, "nothing cut: its bytes had nowhere to go"
    assert list(elsewhere.iterdir()) == []


def test_compact_folds_records_and_reports_each_session(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    sessions = SessionStore(store)
    loaded = {i: sessions.load_with_etag(i) for i in ("log", "torn", "plain")}
    before = files(store)
    (store / "broken.json").write_bytes(b"{ not json")

    code, dry = run_json(capsys, "compact", "--dry-run", "--dir", str(store))
    assert code == 1, "a corrupt file is reported, not touched"
    assert dry["dry_run"] is True
    assert {i: item["action"] for i, item in items(dry).items()} == {
        "broken": "skipped",
        "log": "would-compact",
        "plain": "unchanged",
        "torn": "would-compact",
    }
    assert {n: d for n, d in files(store).items() if n != "broken.json"} == before

    code, document = run_json(capsys, "compact", "--dir", str(store))
    assert code == 1
    found = items(document)
    assert found["broken"]["action"] == "skipped"
    assert (store / "broken.json").read_bytes() == b"{ not json"
    log = found["log"]
    assert (log["action"], log["records"], log["size"]) == ("compacted", 2, len(before["log.json"]))
    assert log["size_after"] == (store / "log.json").stat().st_size
    assert found["torn"]["action"] == "compacted"
    assert "cut a torn tail" in found["torn"]["detail"]
    assert [p.read_bytes() for p in (store / ".quarantine").iterdir()] == [TORN]
    assert (found["plain"]["action"], found["plain"]["size_after"]) == (
        "unchanged",
        len(before["plain.json"]),
    )
    assert (document["summary"]["compacted"], document["summary"]["records"]) == (2, 3)
    for session_id, (session, etag) in loaded.items():
        assert sessions.load_with_etag(session_id) == (session, etag), "a fold keeps the etag"
        assert decode_document((store / f"{session_id}.json").read_bytes()).records == 0
    replay = sessions.append("log", ["two"], output_tokens=3, key="k2")
    assert replay.replayed, "the append keys survive the fold"

    assert main(["compact", "log", "plain", "--dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"{store.absolute()}: 2 files: 2 unchanged"


def test_compact_output_for_people(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    assert main(["compact", "--dir", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ACTION", "RECORDS", "BEFORE", "AFTER", "ID", "DETAIL"]
    assert lines[1].split()[:2] == ["compacted", "2"]
    assert lines[1].split()[4:] == ["log", "folded", "2", "record(s)"]
    assert lines[-1].startswith(f"{store.absolute()}: 3 files: 2 compacted, 1 unchanged; ")
    assert "3 record(s) folded" in lines[-1]


def test_migrate_leaves_current_files_with_records_alone(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    before = files(store)
    code, document = run_json(capsys, "migrate", "--dir", str(store))
    assert code == 0
    assert {item["action"] for item in document["items"]} == {"unchanged"}
    assert files(store) == before


@pytest.mark.parametrize("version", [2, 1])
def test_migrate_down_folds_the_records_first(
    capsys: pytest.CaptureFixture[str], store: Path, version: int
) -> None:
    sessions = SessionStore(store)
    expected = {i: sessions.load(i) for i in ("log", "torn", "plain")}
    code, document = run_json(
        capsys, "migrate", "--to", str(version), "--allow-lossy", "--dir", str(store)
    )
    assert code == 0
    assert {item["action"] for item in document["items"]} == {"migrated"}
    for session_id, session in expected.items():
        data = (store / f"{session_id}.json").read_bytes()
        decoded = decode_document(data, session_id=session_id)
        assert decoded.source_version == version
        assert decoded.records == 0
        if version == 2:
            assert decoded.session == session, "the step 3 -> 2 loses nothing"
        assert decoded.session.messages == session.messages
        assert (decoded.session.input_tokens, decoded.session.output_tokens) == (
            session.input_tokens,
            session.output_tokens,
        )
