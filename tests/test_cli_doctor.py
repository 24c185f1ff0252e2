"""``sessionstore doctor`` on what ``validate`` reports: invalid names (``--rename``),
too-new and special files (reported, never touched), and the quarantine
(``--list-quarantine``, ``--restore``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sessionstore import SessionStore, StoredSession
from sessionstore.cli import main
from sessionstore.maintenance import RENAMED_FROM_KEY
from tests.test_cli import FUTURE, copy_refused

REFUSED = Path(__file__).parent / "corpus_refused"
SEED_DOC = '{"session_id": "%s", "messages": ["m"], "input_tokens": 1, "output_tokens": 2}'


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    document: dict[str, Any] = json.loads(out)
    return code, document


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    SessionStore(folder).save(StoredSession("fine", ("m",), 0, 0))
    (folder / "my.session.json").write_text(SEED_DOC % "my.session")
    (folder / "torn name.json").write_text("{ torn")
    copy_refused(folder)
    (folder / "v2-wrong-id-inside.json").unlink()
    os.mkfifo(folder / "pipe.json")
    return folder


def test_doctor_reports_what_validate_reports_and_touches_none_of_it_without_asking(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    before = sorted(os.listdir(store))
    code, document = run_json(capsys, "doctor", "--dir", str(store))
    assert code == 1
    found = {i["file"]: (i["status"], i["action"]) for i in document["items"]}
    assert found == {
        "my.session.json": ("invalid-name", None),
        "torn name.json": ("invalid-name", None),
        f"{FUTURE}.json": ("too-new", None),
        "v1-torn-write.json": ("corrupt", None),
        "pipe.json": ("not-a-regular-file", None),
    }
    details = {i["file"]: i["detail"] for i in document["items"]}
    assert "doctor --rename gives it a valid id" in details["my.session.json"]
    assert "does not load" in details["torn name.json"]
    assert "upgrade sessionstore" in details[f"{FUTURE}.json"]
    assert sorted(os.listdir(store)) == before
    assert main(["doctor", "--dir", str(store)]) == 1
    assert (
        capsys.readouterr().out.splitlines()[-1] == f"next: sessionstore doctor --fix --dir {store}"
    )


def test_doctor_rename_gives_invalid_names_valid_ids_and_records_it(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    future = (store / f"{FUTURE}.json").read_bytes()
    code, document = run_json(capsys, "doctor", "--rename", "--dir", str(store))
    assert code == 1  # the too-new, corrupt and special files remain
    renamed = {i["file"]: (i["action"], i.get("new_id")) for i in document["items"]}
    assert renamed["my.session.json"] == ("renamed", "my_session")
    assert renamed["torn name.json"][0] == "skipped", "a file that does not load keeps its name"
    session = SessionStore(store).load("my_session")
    assert session.metadata[RENAMED_FROM_KEY] == {
        "file": "my.session.json",
        "session_id": "my.session",
    }
    assert not (store / "my.session.json").exists()
    assert (store / "torn name.json").read_text() == "{ torn"
    assert (store / f"{FUTURE}.json").read_bytes() == future, "too-new: never touched"
    assert (store / "pipe.json").exists()


def test_quarantine_can_be_listed_and_restored(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    torn = (store / "v1-torn-write.json").read_bytes()
    assert main(["doctor", "--fix", "--dir", str(store)]) == 1
    capsys.readouterr()
    code, document = run_json(capsys, "doctor", "--list-quarantine", "--dir", str(store))
    assert code == 0
    [item] = document["items"]
    assert (item["id"], item["status"]) == ("v1-torn-write", "in-quarantine")
    name = item["file"].split("/", 1)[1]
    assert name.startswith("v1-torn-write.json.")

    SessionStore(store).save(StoredSession("v1-torn-write", ("saved again",), 0, 0))
    code, document = run_json(capsys, "doctor", "--restore", name, "--dir", str(store))
    assert code == 1
    assert document["items"][0]["action"] == "refused", "never over a session's file"
    assert SessionStore(store).load("v1-torn-write").messages == ("saved again",)

    SessionStore(store).delete("v1-torn-write")
    code, document = run_json(capsys, "doctor", "--restore", name, "--dir", str(store))
    assert code == 0
    assert document["items"][0]["action"] == "restored"
    assert (store / "v1-torn-write.json").read_bytes() == torn
    assert run_json(capsys, "doctor", "--list-quarantine", "--dir", str(store))[1]["items"] == []
    assert main(["doctor", "--restore", "../../etc/passwd", "--dir", str(store)]) == 2
    assert "not a name doctor --fix gives" in capsys.readouterr().err
