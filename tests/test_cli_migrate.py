"""``sessionstore migrate`` beyond the defaults: ``--to`` an older version (down-steps
and what they lose), named ids, ``--rename-invalid``, and the owner and mode of
rewritten files (issue 11.7)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from sessionstore import SessionStore, StoredSession
from sessionstore.cli import main
from sessionstore.codec import decode_document, encode
from sessionstore.maintenance import RENAMED_FROM_KEY, convert
from sessionstore.migrations import DOWN_STEPS, STEPS, V1_EXTRA_KEY, downgrade, upgrade
from sessionstore.models import CURRENT_SCHEMA_VERSION
from sessionstore.testing.strategies import sessions, v1_documents

CORPUS = Path(__file__).parent / "corpus"
SEED = Path(__file__).parent / "seed"


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    document: dict[str, Any] = json.loads(out)
    return code, document


def seed_module() -> Any:
    if "seed_session_store" in sys.modules:
        return sys.modules["seed_session_store"]
    sys.path.insert(0, str(SEED))
    try:
        import seed_session_store  # noqa: PLC0415  # the seed is not a package
    finally:
        sys.path.remove(str(SEED))
    return seed_session_store


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


# --- the registry: every version has its way down -----------------------------------


def test_every_version_above_1_has_a_down_step_and_every_version_below_current_an_up_step() -> None:
    assert set(STEPS) == set(range(1, CURRENT_SCHEMA_VERSION))
    assert set(DOWN_STEPS) == set(range(2, CURRENT_SCHEMA_VERSION + 1))


@given(v1_documents())
def test_down_undoes_up_for_every_version_1_document(doc: dict[str, Any]) -> None:
    back, lost = downgrade(upgrade(doc, 1), CURRENT_SCHEMA_VERSION, 1)
    assert lost == ()
    assert back == {k: v for k, v in doc.items() if k != "schema_version"}


@given(sessions())
def test_a_downgrade_keeps_the_seed_fields_and_names_everything_else(
    session: StoredSession,
) -> None:
    plan = convert(encode(session), session_id=session.session_id, to_version=1)
    assert plan.data is not None
    assert plan.data.isascii(), "the original module read files in the locale's encoding"
    seed_fields = json.loads(plan.data)
    assert list(seed_fields)[:4] == ["session_id", "messages", "input_tokens", "output_tokens"]
    back = decode_document(plan.data, session_id=session.session_id)
    assert back.source_version == 1
    assert back.session.messages == session.messages
    expected = [k for k in ("created_at", "updated_at") if getattr(session, k) is not None]
    expected += [f"metadata.{k}" for k in session.metadata if k != V1_EXTRA_KEY]
    extra = session.metadata.get(V1_EXTRA_KEY)
    if V1_EXTRA_KEY in session.metadata and not isinstance(extra, dict):
        expected.append(f"metadata.{V1_EXTRA_KEY}")
    assert sorted(plan.loses) == sorted(expected)
    if not plan.loses:
        assert back.session == session


# --- migrate --to 1: a rollback to the original module ------------------------------


@pytest.fixture
def rich(tmp_path: Path) -> Path:
    """Sessions the way sessionstore 0.1 writes them, one with fields v1 cannot hold."""
    folder = tmp_path / "rich"
    store = SessionStore(folder)
    when = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    store.save(StoredSession("plain", ("hello", "déjà vu 🚀"), 3, 5))
    store.save(StoredSession("dated", ("hi",), 1, 1, created_at=when, metadata={"team": "a"}))
    store.save(StoredSession("extras", ("x",), 0, 0, metadata={V1_EXTRA_KEY: {"title": "t"}}))
    return folder


def test_downgrade_refuses_to_lose_fields_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], rich: Path
) -> None:
    before = files(rich)
    code, document = run_json(capsys, "migrate", "--to", "1", "--dir", str(rich))
    assert code == 1
    assert files(rich) == before, "nothing is written unless nothing is lost, anywhere"
    [item] = document["items"]
    assert (item["id"], item["action"]) == ("dated", "refused")
    assert item["loses"] == ["created_at", "metadata.team"]
    code = main(["migrate", "--to", "1", "--dir", str(rich)])
    out = capsys.readouterr().out
    assert "refused" in out
    assert "loses created_at, metadata.team" in out
    assert "next: sessionstore migrate --to 1 --allow-lossy" in out


def test_downgrade_dry_run_shows_what_each_file_would_lose(
    capsys: pytest.CaptureFixture[str], rich: Path
) -> None:
    before = files(rich)
    code, document = run_json(capsys, "migrate", "--to", "1", "--dry-run", "--dir", str(rich))
    assert code == 1  # a real run would refuse
    assert files(rich) == before
    actions = {i["id"]: (i["action"], i.get("loses", [])) for i in document["items"]}
    assert actions == {
        "dated": ("refused", ["created_at", "metadata.team"]),
        "extras": ("would-migrate", []),
        "plain": ("would-migrate", []),
    }
    code, document = run_json(
        capsys, "migrate", "--to", "1", "--dry-run", "--allow-lossy", "--dir", str(rich)
    )
    assert code == 0
    assert {i["action"] for i in document["items"]} == {"would-migrate"}


def test_downgrade_with_allow_lossy_writes_what_the_original_module_reads(
    capsys: pytest.CaptureFixture[str], rich: Path
) -> None:
    code, document = run_json(capsys, "migrate", "--to", "1", "--allow-lossy", "--dir", str(rich))
    assert code == 0
    assert document["summary"]["migrated"] == 3
    seed = seed_module()
    plain = (rich / "plain.json").read_bytes()
    assert plain == json.dumps(
        {
            "session_id": "plain",
            "messages": ["hello", "déjà vu 🚀"],
            "input_tokens": 3,
            "output_tokens": 5,
        },
        indent=2,
    ).encode("ascii")
    assert seed.load_session("plain", rich) == seed.StoredSession(
        "plain", ("hello", "déjà vu 🚀"), 3, 5
    )
    assert json.loads((rich / "extras.json").read_bytes())["title"] == "t"
    assert seed.load_session("dated", rich).messages == ("hi",)
    assert main(["status", "--dir", str(rich), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["by_version"] == {"1": 3}
    assert main(["migrate", "--to", "1", "--dir", str(rich)]) == 0, "idempotent"
    capsys.readouterr()


def test_seed_files_go_up_and_back_down_to_their_original_bytes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "seeded"
    folder.mkdir()
    seed = seed_module()
    for i in range(5):
        seed.save_session(seed.StoredSession(f"s{i}", (f"message {i}", "é"), i, 2 * i), folder)
    original = files(folder)
    assert main(["migrate", "--dir", str(folder)]) == 0
    assert files(folder) != original
    assert main(["migrate", "--to", "1", "--dir", str(folder)]) == 0
    assert files(folder) == original
    capsys.readouterr()


# --- named ids ---------------------------------------------------------------------


def test_migrate_and_validate_only_the_named_ids(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "c"
    shutil.copytree(CORPUS, folder)
    before = files(folder)
    code, document = run_json(
        capsys, "migrate", "v1-seed-basic", "v1-seed-empty", "--dir", str(folder)
    )
    assert code == 0
    assert [(i["id"], i["action"]) for i in document["items"]] == [
        ("v1-seed-basic", "migrated"),
        ("v1-seed-empty", "migrated"),
    ]
    after = files(folder)
    assert {n for n in after if after[n] != before[n]} == {
        "v1-seed-basic.json",
        "v1-seed-empty.json",
    }
    code, document = run_json(capsys, "validate", "v1-seed-basic", "ghost", "--dir", str(folder))
    assert code == 1
    assert [(i["id"], i["status"]) for i in document["items"]] == [
        ("v1-seed-basic", "current"),
        ("ghost", "not-found"),
    ]
    assert main(["validate", "../x", "--dir", str(folder)]) == 2
    assert "not a valid session id: '../x'" in capsys.readouterr().err


# --- invalid names -----------------------------------------------------------------

LONG = "x" * 130


@pytest.fixture
def odd_names(tmp_path: Path) -> Path:
    folder = tmp_path / "odd"
    folder.mkdir()
    seed = seed_module()
    for name in ("my.session", "café", "has space", LONG, "a_b_c"):
        seed.save_session(seed.StoredSession(name, (f"from {name}",), 1, 2), folder)
    (folder / "a.b.c.json").write_bytes((folder / "a_b_c.json").read_bytes())  # a clash
    return folder


def test_invalid_names_are_counted_then_renamed_to_valid_ids(
    capsys: pytest.CaptureFixture[str], odd_names: Path
) -> None:
    code, document = run_json(capsys, "status", "--dir", str(odd_names))
    assert document["summary"]["invalid_name"] == 5
    assert SessionStore(odd_names).list() == ["a_b_c"], "invisible to the library"
    code, dry = run_json(
        capsys, "migrate", "--rename-invalid", "--dry-run", "--dir", str(odd_names)
    )
    planned = {i["file"]: i["new_id"] for i in dry["items"] if i["action"] == "would-rename"}
    code, done = run_json(capsys, "migrate", "--rename-invalid", "--dir", str(odd_names))
    assert code == 0
    renamed = {i["file"]: i["new_id"] for i in done["items"] if i["action"] == "renamed"}
    assert renamed == planned, "the dry run names the ids the real run gives"
    assert renamed["my.session.json"] == "my_session"
    assert renamed["café.json"] == "cafe"
    assert renamed["has space.json"] == "has_space"
    long_id = renamed[f"{LONG}.json"]
    assert (long_id[:120], len(long_id)) == (f"{'x' * 119}-", 128), "cut, then the digest"
    assert renamed["a.b.c.json"].startswith("a_b_c-"), "a taken id gets the name's digest"
    store = SessionStore(odd_names)
    assert sorted(store.list()) == sorted([*renamed.values(), "a_b_c"])
    session = store.load("cafe")
    assert session.messages == ("from café",)
    assert session.metadata[RENAMED_FROM_KEY] == {"file": "café.json", "session_id": "café"}
    assert main(["validate", "--dir", str(odd_names)]) == 0
    capsys.readouterr()
    code, again = run_json(capsys, "migrate", "--rename-invalid", "--dir", str(odd_names))
    assert (code, again["summary"]["renamed"]) == (0, 0)


def test_a_rename_interrupted_between_its_two_steps_finishes_on_the_next_run(
    capsys: pytest.CaptureFixture[str], odd_names: Path
) -> None:
    assert main(["migrate", "--rename-invalid", "--dir", str(odd_names)]) == 0
    capsys.readouterr()
    # As if the old name's removal had not happened: put the old file back.
    seed = seed_module()
    seed.save_session(seed.StoredSession("my.session", ("from my.session",), 1, 2), odd_names)
    code, document = run_json(capsys, "migrate", "--rename-invalid", "--dir", str(odd_names))
    assert code == 0
    [item] = [i for i in document["items"] if i["action"] == "renamed"]
    assert item["new_id"] == "my_session", "the same id again, not a second copy"
    assert not (odd_names / "my.session.json").exists()
    assert not list(odd_names.glob("my_session-*.json"))


def test_rename_invalid_names_no_ids(capsys: pytest.CaptureFixture[str], odd_names: Path) -> None:
    assert main(["migrate", "a_b_c", "--rename-invalid", "--dir", str(odd_names)]) == 2
    assert "--rename-invalid works on the whole folder" in capsys.readouterr().err


# --- issue 11.7: owner and mode ------------------------------------------------------

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_migrate_as_root_keeps_owner_group_and_mode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Issue 11.7: migrate run with sudo left files and the lock folder owned by root,
    # mode 0600: the application's own user was locked out.
    folder = tmp_path / "app"
    shutil.copytree(CORPUS, folder)
    os.chown(folder, NOBODY, NOBODY)
    for index, path in enumerate(sorted(folder.iterdir())):
        os.chown(path, NOBODY, NOBODY + (index % 2))
        os.chmod(path, 0o640 if index % 2 else 0o604)
    before = {p.name: os.stat(p) for p in folder.iterdir()}
    backup = tmp_path / "backup"
    assert main(["migrate", "--dir", str(folder), "--backup", str(backup)]) == 0
    capsys.readouterr()
    for path in folder.glob("*.json"):
        info, old = os.stat(path), before[path.name]
        assert (info.st_uid, info.st_gid, info.st_mode) == (old.st_uid, old.st_gid, old.st_mode)
    assert decode_document((folder / "v1-seed-basic.json").read_bytes()).source_version == 3
    locks = folder / ".locks"
    assert (locks.stat().st_uid, locks.stat().st_gid) == (NOBODY, NOBODY)
    for lock in locks.iterdir():
        assert (lock.stat().st_uid, lock.stat().st_gid) == (NOBODY, NOBODY)
    for copy in backup.iterdir():
        old = before[copy.name]
        assert (copy.stat().st_uid, copy.stat().st_mode) == (old.st_uid, old.st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_lock_files_made_by_root_follow_the_folders_owner(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    store = SessionStore(folder)
    store.save(StoredSession("s", ("m",), 0, 0))
    with store.backend.lock("other"):
        held = folder / ".locks" / "other.lock"
        assert (held.stat().st_uid, held.stat().st_gid) == (NOBODY, NOBODY)
    assert (folder / ".locks").stat().st_uid == NOBODY
    (folder / "torn.json").write_text("{ torn")
    assert main(["doctor", "--fix", "--dir", str(folder)]) == 0
    quarantine = folder / ".quarantine"
    assert (quarantine.stat().st_uid, quarantine.stat().st_gid) == (NOBODY, NOBODY)


def test_a_user_who_does_not_own_the_folder_needs_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    shutil.copytree(CORPUS, folder)
    before = files(folder)
    owner = folder.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1234)
    assert main(["migrate", "--dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"you are uid {owner + 1234} but {folder} belongs to uid {owner}" in err
    assert "--force" in err
    assert files(folder) == before
    assert main(["migrate", "--dry-run", "--dir", str(folder)]) == 0, "a dry run writes nothing"
    assert main(["migrate", "--force", "--dir", str(folder)]) == 0
    capsys.readouterr()
