"""The ``sessionstore`` command, driven in-process through ``main(argv)`` (and a few
times as the installed console script)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sessionstore import SessionStore, StoredSession
from sessionstore.cli import main
from sessionstore.codec import decode_document, encode
from sessionstore.models import CURRENT_SCHEMA_VERSION

CORPUS = Path(__file__).parent / "corpus"
REFUSED = Path(__file__).parent / "corpus_refused"
SEED = Path(__file__).parent / "seed"  # a verbatim copy of ../shared/seed/seed_session_store.py
FUTURE = f"v{CURRENT_SCHEMA_VERSION + 1}-from-the-future"
"""A session written by a newer sessionstore (``copy_refused`` writes it)."""


def copy_refused(folder: Path) -> None:
    """The corpus of refused files into ``folder``: a torn and a wrong-id file, and a
    file one schema version newer than this sessionstore (written here, so it stays
    too new whatever the current version is)."""
    for path in REFUSED.iterdir():
        if not path.name.endswith("-from-the-future.json"):
            shutil.copy(path, folder / path.name)
    document = {
        "schema_version": CURRENT_SCHEMA_VERSION + 1,
        "session_id": FUTURE,
        "messages": ["a"],
        "input_tokens": 1,
        "output_tokens": 1,
        "a_field_from_the_future": {"x": 1},
    }
    (folder / f"{FUTURE}.json").write_text(json.dumps(document, indent=2) + "\n")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every regular file below ``folder`` (links not followed)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    """Seed-written and current files only: everything loads."""
    folder = tmp_path / "clean"
    shutil.copytree(CORPUS, folder)
    return folder


@pytest.fixture
def mixed(tmp_path: Path, clean: Path) -> Path:
    """The clean folder plus corrupt, too-new, junk, a symlink and a directory."""
    copy_refused(clean)
    (clean / "notes.txt").write_text("not a session")
    (clean / "bad name.json").write_text("{}")
    outside = tmp_path / "outside.json"
    outside.write_text(
        json.dumps({"session_id": "link", "messages": [], "input_tokens": 0, "output_tokens": 0})
    )
    (clean / "link.json").symlink_to(outside)
    (clean / "dir.json").mkdir()
    return clean


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, err = run(capsys, *argv, "--json")
    assert err == ""
    return code, json.loads(out)


# --- validate --------------------------------------------------------------


def test_validate_clean_folder_exits_0_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], clean: Path
) -> None:
    before = snapshot(clean)
    code, out, _ = run(capsys, "validate", "--dir", str(clean))
    assert code == 0
    assert re.search(r"^needs-migration +1  v1-seed-basic +version 1, current is 3$", out, re.M)
    assert re.search(r"^repairable +1  v1-seed-lone-surrogate ", out, re.M)
    assert f"{clean.absolute()}: 8 files: 7 needs-migration, 1 repairable\n" in out
    assert out.strip().splitlines()[-1].startswith("next: sessionstore migrate --dry-run --dir ")
    assert snapshot(clean) == before


def test_validate_mixed_folder_reports_every_kind_and_exits_1(
    capsys: pytest.CaptureFixture[str], mixed: Path
) -> None:
    before = snapshot(mixed)
    code, doc = run_json(capsys, "validate", "--dir", str(mixed))
    assert code == 1
    assert doc["ok"] is False
    status = {f["file"]: f["status"] for f in doc["items"]}
    assert status["v2-minimal.json"] == "needs-migration"
    assert status["v1-seed-basic.json"] == "needs-migration"
    assert status["v1-seed-lone-surrogate.json"] == "repairable"
    assert status["v1-torn-write.json"] == "corrupt"
    assert status[f"{FUTURE}.json"] == "too-new"
    assert status["bad name.json"] == "invalid-name"
    assert status["link.json"] == "not-a-regular-file"
    assert status["dir.json"] == "not-a-regular-file"
    assert "notes.txt" not in status
    assert doc["summary"]["total"] == len(doc["items"]) == 14
    assert doc["summary"]["corrupt"] == 2
    assert snapshot(mixed) == before


def test_validate_prints_no_progress_bar_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], clean: Path
) -> None:
    _, _, err = run(capsys, "validate", "--dir", str(clean))
    assert err == ""


# --- ls and show -------------------------------------------------------------


def test_ls_lists_every_json_file_sorted_with_problems_marked(
    capsys: pytest.CaptureFixture[str], mixed: Path
) -> None:
    code, doc = run_json(capsys, "ls", "--dir", str(mixed))
    assert code == 0
    names = [s["file"] for s in doc["items"]]
    assert names == sorted(names)
    basic = next(s for s in doc["items"] if s["file"] == "v1-seed-basic.json")
    assert (
        basic["schema_version"],
        basic["messages"],
        basic["input_tokens"],
        basic["output_tokens"],
    ) == (1, 2, 12, 34)
    assert basic["size"] == (mixed / "v1-seed-basic.json").stat().st_size
    assert {s["status"] for s in doc["items"]} >= {"corrupt", "too-new", "not-a-regular-file"}
    code, out, _ = run(capsys, "ls", "--dir", str(mixed))
    assert code == 0
    assert "v1-seed-basic" in out
    assert "14 files" in out


def test_show_prints_the_migrated_session(capsys: pytest.CaptureFixture[str], clean: Path) -> None:
    code, out, _ = run(capsys, "show", "v1-seed-basic", "--dir", str(clean))
    assert code == 0
    assert json.loads(out)["schema_version"] == 3
    assert out.encode() == encode(SessionStore(clean).load("v1-seed-basic"))


@pytest.mark.parametrize(
    ("session_id", "code"),
    [("ghost", 1), ("v1-torn-write", 1), (FUTURE, 1), ("../x", 2)],
)
def test_show_errors_name_the_session_without_traceback(
    capsys: pytest.CaptureFixture[str], mixed: Path, session_id: str, code: int
) -> None:
    result, out, err = run(capsys, "show", session_id, "--dir", str(mixed))
    assert result == code
    assert out == ""
    assert err.startswith("error: ")
    assert session_id in err


@pytest.mark.parametrize("command", ["ls", "validate", "migrate", "doctor"])
def test_missing_folder_is_an_operational_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    code, _, err = run(capsys, command, "--dir", str(tmp_path / "nope"))
    assert code == 2
    assert err == f"error: no such folder: {tmp_path / 'nope'}\n"
    assert not (tmp_path / "nope").exists()


# --- migrate -----------------------------------------------------------------


def test_migrate_rewrites_old_files_and_leaves_the_rest_byte_identical(
    capsys: pytest.CaptureFixture[str], mixed: Path
) -> None:
    store = SessionStore(mixed)
    expected = {
        sid: store.load(sid)
        for sid in ["v1-seed-basic", "v1-seed-lone-surrogate", "v2-full", "v2-minimal"]
    }
    before = snapshot(mixed)
    code, doc = run_json(capsys, "migrate", "--dir", str(mixed))
    assert code == 1, "problem files remain"
    actions = {f["file"]: f["action"] for f in doc["items"]}
    assert actions["v1-seed-basic.json"] == "migrated"
    assert actions["v1-seed-lone-surrogate.json"] == "migrated"
    assert actions["v2-full.json"] == "migrated"
    assert actions["v1-torn-write.json"] == "skipped"
    assert doc["summary"]["migrated"] == 8
    after = snapshot(mixed)
    for name in [
        "v1-torn-write.json",
        f"{FUTURE}.json",
        "bad name.json",
    ]:
        assert after[name] == before[name], name
    for sid, session in expected.items():
        data = (mixed / f"{sid}.json").read_bytes()
        decoded = decode_document(data, session_id=sid)
        assert decoded.source_version == 3
        assert not decoded.needs_rewrite
        assert decoded.session == session
        assert data == encode(session)
    assert not [n for n in os.listdir(mixed) if n.endswith(".tmp")]


def test_migrate_is_idempotent_and_exits_0_when_all_current(
    capsys: pytest.CaptureFixture[str], clean: Path
) -> None:
    assert run(capsys, "migrate", "--dir", str(clean))[0] == 0
    before = snapshot(clean)
    code, doc = run_json(capsys, "migrate", "--dir", str(clean))
    assert code == 0
    assert doc["summary"]["migrated"] == 0
    assert snapshot(clean) == before
    assert run(capsys, "validate", "--dir", str(clean))[1].count("needs-migration") == 0


@pytest.mark.parametrize("flag", ["--dry-run", "--check"])
def test_dry_run_and_check_write_nothing(
    capsys: pytest.CaptureFixture[str], clean: Path, flag: str
) -> None:
    before = snapshot(clean)
    code, out, _ = run(capsys, "migrate", flag, "--dir", str(clean))
    assert snapshot(clean) == before
    assert re.search(r"^would-migrate +1->3  v1-seed-basic$", out, re.M)
    assert code == (1 if flag == "--check" else 0)


def test_check_passes_once_migrated(capsys: pytest.CaptureFixture[str], clean: Path) -> None:
    run(capsys, "migrate", "--dir", str(clean))
    assert run(capsys, "migrate", "--check", "--dir", str(clean))[0] == 0


def test_backup_holds_the_original_bytes_of_every_rewritten_file(
    capsys: pytest.CaptureFixture[str], clean: Path, tmp_path: Path
) -> None:
    before = snapshot(clean)
    backup = tmp_path / "backup"
    assert run(capsys, "migrate", "--dir", str(clean), "--backup", str(backup))[0] == 0
    saved = {p.name: p.read_bytes() for p in backup.iterdir()}
    rewritten = {name for name in before if snapshot(clean)[name][0] != before[name][0]}
    assert set(saved) == rewritten
    assert len(rewritten) == 8
    for name, data in saved.items():
        assert data == before[name][0]


def test_backup_into_the_sessions_folder_is_refused(
    capsys: pytest.CaptureFixture[str], clean: Path
) -> None:
    before = snapshot(clean)
    code, _, err = run(capsys, "migrate", "--dir", str(clean), "--backup", str(clean))
    assert code == 2
    assert "--backup" in err
    assert snapshot(clean) == before


def _write_seed_files(folder: Path, count: int) -> dict[str, bytes]:
    sys.path.insert(0, str(SEED))
    try:
        import seed_session_store as seed  # noqa: PLC0415  # the seed is not a package
    finally:
        sys.path.remove(str(SEED))
    for i in range(count):
        seed.save_session(seed.StoredSession(f"s{i:04d}", (f"message {i}",) * 3, i, i), folder)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_migrate_killed_at_random_points_leaves_old_or_new_files_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "kill"
    folder.mkdir()
    originals = _write_seed_files(folder, 300)
    migrated = {
        name: encode(decode_document(data, session_id=name[:-5]).session)
        for name, data in originals.items()
    }
    rng = random.Random(1234)
    command = [sys.executable, "-m", "sessionstore", "migrate", "--dir", str(folder)]
    kills = int(os.environ.get("SESSIONSTORE_MIGRATE_KILLS", "5"))
    for _ in range(kills):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))  # the moment of the crash is the variable under test
        child.send_signal(signal.SIGKILL)
        child.wait()
        for name in originals:
            data = (folder / name).read_bytes()
            assert data in (originals[name], migrated[name]), f"{name} is torn"
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in folder.glob("*.json")} == migrated
    leftovers = subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionstore",
            "doctor",
            "--dir",
            str(folder),
            "--grace",
            "0",
            "--fix",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(f["status"] == "stale-temp" for f in json.loads(leftovers.stdout)["items"])
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        originals
    )
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


# --- doctor ------------------------------------------------------------------


def test_doctor_finds_and_fixes_debris_without_deleting_data(
    capsys: pytest.CaptureFixture[str], mixed: Path
) -> None:
    stale = mixed / ".v2-full.json.0123456789abcdef.tmp"
    stale.write_text("{")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = mixed / ".v2-full.json.fedcba9876543210.tmp"
    fresh.write_text("{")
    foreign = mixed / ".something.else.tmp"
    foreign.write_text("not ours")
    (mixed / ".locks").mkdir(exist_ok=True)
    (mixed / ".locks" / "leftover.lock").write_text("")
    sessions_before = {
        k: v for k, v in snapshot(mixed).items() if k.endswith(".json") and "corrupt" not in k
    }

    code, doc = run_json(capsys, "doctor", "--dir", str(mixed))
    assert code == 1
    kinds = sorted(f["status"] for f in doc["items"])
    assert kinds == [
        "corrupt",
        "corrupt",
        "fresh-temp",
        "invalid-name",
        "not-a-regular-file",
        "not-a-regular-file",
        "stale-temp",
        "stray-lock",
        "too-new",
    ]
    assert {f["action"] for f in doc["items"]} == {None}
    assert stale.exists()

    code, doc = run_json(capsys, "doctor", "--dir", str(mixed), "--fix")
    assert code == 1, "too-new, invalid-name and special files are never fixed by --fix"
    actions = {f["file"]: (f["status"], f["action"]) for f in doc["items"]}
    assert actions[f"{FUTURE}.json"] == ("too-new", "left-alone")
    assert actions["link.json"] == ("not-a-regular-file", "left-alone")
    assert actions["bad name.json"] == ("invalid-name", "left-alone")
    assert actions["v1-torn-write.json"] == ("corrupt", "quarantined")
    assert actions[stale.name] == ("stale-temp", "removed")
    assert not stale.exists()
    assert fresh.exists(), "a temp file younger than the grace period may belong to a live writer"
    assert foreign.exists(), "only store-owned names are touched"
    assert not (mixed / ".locks" / "leftover.lock").exists()
    quarantined = sorted(p.name for p in (mixed / ".quarantine").iterdir())
    assert [q.split(".json.")[0] for q in quarantined] == ["v1-torn-write", "v2-wrong-id-inside"]
    assert (mixed / ".quarantine" / quarantined[0]).read_bytes() == (
        REFUSED / "v1-torn-write.json"
    ).read_bytes()
    after = snapshot(mixed)
    for name, value in sessions_before.items():
        if name not in ("v1-torn-write.json", "v2-wrong-id-inside.json"):
            assert after[name] == value
    assert (mixed / f"{FUTURE}.json").exists(), "too-new files are data, not debris"


# --- delete, schema, help, entry points --------------------------------------


def test_delete_reports_whether_it_deleted(capsys: pytest.CaptureFixture[str], clean: Path) -> None:
    code, doc = run_json(capsys, "delete", "v2-minimal", "--dir", str(clean))
    assert code == 0
    assert doc["ok"] is True
    assert doc["items"] == [
        {
            "id": "v2-minimal",
            "file": "v2-minimal.json",
            "status": None,
            "schema_version": None,
            "action": "deleted",
            "detail": "",
        }
    ]
    code, out, _ = run(capsys, "delete", "v2-minimal", "--dir", str(clean))
    assert code == 1
    assert "nothing deleted" in out


def test_schema_export_then_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "schema", "export", "--out", str(tmp_path / "s"))[0] == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "record.v3.json",
        "session.v1.json",
        "session.v2.json",
        "session.v3.json",
    ]
    assert run(capsys, "schema", "check", str(tmp_path / "s"))[0] == 0
    (tmp_path / "s" / "session.v1.json").write_text("{}")
    code, doc = run_json(capsys, "schema", "check", str(tmp_path / "s"))
    assert code == 1
    assert doc["ok"] is False


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["history"],
        ["ls"],
        ["show"],
        ["validate"],
        ["migrate"],
        ["doctor"],
        ["delete"],
        ["setup"],
        ["copy"],
        ["schema", "export"],
        ["schema", "check"],
    ],
)
def test_every_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_console_script_and_module_entry_points(clean: Path) -> None:
    script = Path(sys.executable).parent / "sessionstore"
    for command in ([str(script)], [sys.executable, "-m", "sessionstore"]):
        done = subprocess.run(
            [*command, "validate", "--dir", str(clean), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["summary"]["total"] == 8


def test_current_files_written_by_the_library_are_left_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = SessionStore(tmp_path)
    store.save(StoredSession(session_id="fresh", messages=("x",), input_tokens=1, output_tokens=1))
    before = snapshot(tmp_path)
    assert run(capsys, "migrate", "--dir", str(tmp_path))[0] == 0
    assert snapshot(tmp_path) == before


def test_unreadable_file_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], clean: Path
) -> None:
    real_open = os.open

    def deny(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("v2-minimal.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    code, out, _ = run(capsys, "validate", "--dir", str(clean))
    assert code == 1
    assert re.search(r"^unreadable +- +v2-minimal +cannot read it: Permission denied$", out, re.M)
    assert "Permission denied" in out
    code, _, err = run(capsys, "show", "v2-minimal", "--dir", str(clean))
    assert code == 1
    assert "Permission denied" in err


def test_doctor_fix_removes_the_lock_files_of_the_old_striped_layout(
    capsys: pytest.CaptureFixture[str], clean: Path
) -> None:
    # Stores written before per-session lock files held 64 stripe-NN.lock files.
    locks = clean / ".locks"
    locks.mkdir()
    for index in range(64):
        (locks / f"stripe-{index:02d}.lock").write_text("")
    SessionStore(clean).save(StoredSession("stripe-07", ("a real session",), 0, 0))
    code, doc = run_json(capsys, "doctor", "--dir", str(clean), "--fix")
    assert code == 0
    assert [f["action"] for f in doc["items"]] == ["removed"] * 63
    assert sorted(os.listdir(locks)) == ["stripe-07.lock"]
    assert SessionStore(clean).load("stripe-07").messages == ("a real session",)
