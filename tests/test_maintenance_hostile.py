"""Maintenance commands on a hostile folder: links, FIFOs, odd names, large files, races.

Each test drives the ``sessionstore`` command in-process (``main``) or the
maintenance functions, on a folder someone tampered with, and checks that nothing
outside the store is touched, no link is followed, no FIFO is opened, no session
data is lost and no traceback or raw control character reaches the terminal.
Races are staged with hooks between the scan and the fix, never with sleeps.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionstore import SessionStore, StoredSession, maintenance
from sessionstore.cli import main
from sessionstore.codec import encode

SEED_DOC = b'{"session_id": "%s", "messages": ["old"], "input_tokens": 1, "output_tokens": 2}'
COMMANDS = [
    ["ls"],
    ["validate"],
    ["migrate"],
    ["migrate", "--dry-run"],
    ["doctor"],
    ["doctor", "--fix"],
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def make(session_id: str, *messages: str) -> StoredSession:
    return StoredSession(
        session_id=session_id, messages=messages or ("hi",), input_tokens=0, output_tokens=0
    )


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry below ``folder``: file bytes, link targets, kinds (links not followed)."""
    out: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                out[key] = "link -> " + os.readlink(path)
            elif path.is_file():
                out[key] = path.read_bytes()
            else:
                out[key] = "dir" if path.is_dir() else "special"
    return out


def finishes(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a thread; fail (not hang) when it has not returned within 20 s."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=20)  # a guard against a hang, not a wait for a race
    assert not thread.is_alive(), "the command hung"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store with a current session, an old one and a corrupt one."""
    folder = tmp_path / "store"
    store = SessionStore(folder)
    store.save(make("current"))
    (folder / "old.json").write_bytes(SEED_DOC % b"old")
    (folder / "broken.json").write_bytes(b'{"session_id": "broken", "mess')
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the store with files nobody may touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    (folder / "stripe-00.lock").write_text("looks like a lock file")
    (folder / "victim.lock").write_text("looks like a lock file too")
    return folder


# --- issue 9.3: links at .locks and .quarantine ----------------------------------------


def test_doctor_fix_never_follows_a_linked_locks_folder(
    capsys: pytest.CaptureFixture[str], store_dir: Path, outside: Path
) -> None:
    # Issue 9.3: doctor --fix followed a symlinked .locks and deleted every file there.
    os.rename(store_dir / ".locks", store_dir.parent / "real-locks")
    (store_dir / ".locks").symlink_to(outside)
    before = snapshot(outside)
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir), "--json")
    doc = json.loads(out)
    assert code == 1
    unsafe = [f for f in doc["items"] if f["status"] == "unsafe-folder"]
    assert [f["file"] for f in unsafe] == [".locks"]
    assert "symbolic link" in unsafe[0]["detail"]
    assert (unsafe[0]["action"], unsafe[0]["detail"].split("; ")[-1]) == (
        "left-alone",
        "remove it by hand",
    )
    assert snapshot(outside) == before
    assert (store_dir / ".locks").is_symlink()


def test_doctor_fix_never_moves_files_out_through_a_linked_quarantine(
    capsys: pytest.CaptureFixture[str], store_dir: Path, outside: Path
) -> None:
    # Issue 9.3: a symlinked .quarantine moved corrupt files out of the store.
    (store_dir / ".quarantine").symlink_to(outside)
    before = snapshot(outside)
    broken = (store_dir / "broken.json").read_bytes()
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir), "--json")
    doc = json.loads(out)
    assert code == 1
    actions = {f["status"]: (f["action"], f["detail"]) for f in doc["items"]}
    assert actions["unsafe-folder"][0] == "left-alone"
    assert actions["corrupt"][0] == "failed"
    assert ".quarantine is a symbolic link" in actions["corrupt"][1]
    assert (store_dir / "broken.json").read_bytes() == broken
    assert snapshot(outside) == before


def test_a_file_at_quarantine_is_reported_and_left(
    capsys: pytest.CaptureFixture[str], store_dir: Path
) -> None:
    (store_dir / ".quarantine").write_text("not a folder")
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir))
    assert code == 1
    assert re.search(
        r"^unsafe-folder +\.quarantine +\[left-alone\] is a regular file, not a folder", out, re.M
    )
    assert (store_dir / "broken.json").exists()
    assert (store_dir / ".quarantine").read_text() == "not a folder"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_command_writes_through_a_linked_locks_folder(
    capsys: pytest.CaptureFixture[str], store_dir: Path, outside: Path, command: list[str]
) -> None:
    os.rename(store_dir / ".locks", store_dir.parent / "real-locks")
    (store_dir / ".locks").symlink_to(outside)
    before = snapshot(outside)
    old = (store_dir / "old.json").read_bytes()
    code, _, err = run(capsys, *command, "--dir", str(store_dir))
    assert snapshot(outside) == before
    assert (store_dir / "old.json").read_bytes() == old, "no rewrite without a real lock"
    if command == ["migrate"]:
        assert code == 2
        assert ".locks is a symbolic link" in err
    else:
        assert code in (0, 1)


# --- issue 9.4: every destructive step re-checks under the session's lock --------------


@pytest.fixture
def between_scan_and_fix(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], object]], None]:
    """Run a hook after ``doctor`` scanned the folder and before it fixes anything."""

    def install(hook: Callable[[], object]) -> None:
        real = maintenance.find_debris

        def scan_then_hook(*args: Any, **kwargs: Any) -> Iterator[maintenance.Debris]:
            yield from real(*args, **kwargs)
            hook()

        monkeypatch.setattr(maintenance, "find_debris", scan_then_hook)

    return install


def test_doctor_fix_leaves_a_session_saved_again_after_the_scan(
    capsys: pytest.CaptureFixture[str],
    store_dir: Path,
    between_scan_and_fix: Callable[[Callable[[], object]], None],
) -> None:
    # Issue 9.4: doctor --fix scanned, then moved without the lock or a re-check: a
    # session the application saved again meanwhile went to quarantine.
    repaired = make("broken", "saved again by the application")
    between_scan_and_fix(lambda: SessionStore(store_dir).save(repaired))
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir), "--json")
    finding = next(f for f in json.loads(out)["items"] if f["status"] == "corrupt")
    assert finding["action"] == "left-alone"
    assert finding["detail"] == "re-read under its lock, it is no longer damaged"
    assert code == 0
    assert SessionStore(store_dir).load("broken") == repaired
    assert not (store_dir / ".quarantine").exists()


def test_doctor_fix_keeps_the_lock_file_of_a_session_created_after_the_scan(
    capsys: pytest.CaptureFixture[str],
    store_dir: Path,
    between_scan_and_fix: Callable[[Callable[[], object]], None],
) -> None:
    (store_dir / ".locks" / "late.lock").write_text("")
    between_scan_and_fix(lambda: SessionStore(store_dir).save(make("late")))
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir), "--json")
    finding = next(f for f in json.loads(out)["items"] if f["status"] == "stray-lock")
    assert (finding["action"], finding["detail"]) == (
        "left-alone",
        "its session has a file again",
    )
    assert (store_dir / ".locks" / "late.lock").exists()
    assert code == 0  # the corrupt file was quarantined; nothing is left to fix
    assert "broken.json" not in os.listdir(store_dir)


def test_doctor_fix_moves_a_corrupt_file_with_its_bytes_and_cleans_up(
    capsys: pytest.CaptureFixture[str], store_dir: Path
) -> None:
    broken = (store_dir / "broken.json").read_bytes()
    (store_dir / ".locks" / "gone.lock").write_text("")
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir), "--json")
    assert code == 0
    actions = {f["status"]: (f["action"], f["detail"]) for f in json.loads(out)["items"]}
    assert actions["corrupt"][0] == "quarantined"
    assert actions["corrupt"][1].startswith(f"moved to {store_dir / '.quarantine'}/broken.json.")
    assert actions["stray-lock"][0] == "removed"
    [moved] = (store_dir / ".quarantine").iterdir()
    assert moved.read_bytes() == broken
    assert sorted(os.listdir(store_dir / ".locks")) == ["current.lock"]
    code, out, _ = run(capsys, "doctor", "--dir", str(store_dir))
    assert (code, out.strip()) == (0, f"{store_dir}: nothing to fix")


def test_a_writer_racing_migrate_keeps_its_newer_save(
    capsys: pytest.CaptureFixture[str], store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = make("old", "newer, saved by the application")
    real_inspect = maintenance._inspect

    def inspect_then_save(backend: Any, entry: Any) -> Any:
        report = real_inspect(backend, entry)
        if entry.session_id == "old":
            SessionStore(store_dir).save(newer)  # between migrate's scan and its rewrite
        return report

    monkeypatch.setattr(maintenance, "_inspect", inspect_then_save)
    code, out, _ = run(capsys, "migrate", "--dir", str(store_dir), "--json")
    actions = {f["file"]: f["action"] for f in json.loads(out)["items"]}
    assert actions["old.json"] == "unchanged"
    assert SessionStore(store_dir).load("old") == newer
    assert code == 1  # broken.json is a problem file


# --- issue 9.5: too large is not corrupt; the limit is an option -----------------------


def test_too_large_files_are_never_quarantined_and_the_limit_is_an_option(
    capsys: pytest.CaptureFixture[str], store_dir: Path
) -> None:
    big = make("big", "x" * 3000)
    SessionStore(store_dir).save(big)
    with open(store_dir / "huge.json", "wb") as handle:
        handle.truncate(1 << 40)  # sparse 1 TiB: over any limit, and never read
    code, out, _ = run(capsys, "validate", "--dir", str(store_dir), "--max-bytes", "2000", "--json")
    status = {f["file"]: f["status"] for f in json.loads(out)["items"]}
    assert (status["big.json"], status["huge.json"]) == ("too-large", "too-large")
    assert code == 1
    code, out, _ = run(capsys, "validate", "--dir", str(store_dir), "--max-bytes", "9000", "--json")
    assert {f["file"]: f["status"] for f in json.loads(out)["items"]}["big.json"] == "current"
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir), "--max-bytes", "2000")
    assert re.search(r"^too-large +big\.json +\[left-alone\] ", out, re.M)
    assert re.search(r"^too-large +huge\.json +\[left-alone\] ", out, re.M)
    assert SessionStore(store_dir).load("big") == big
    assert os.stat(store_dir / "huge.json").st_size == 1 << 40
    code, out, _ = run(capsys, "show", "big", "--dir", str(store_dir), "--max-bytes", "2000")
    assert code == 1


@pytest.mark.parametrize("bad", ["0", "-5", "lots"])
def test_max_bytes_must_be_a_positive_count(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--max-bytes", bad])
    assert info.value.code == 2
    assert "positive number of bytes" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "soon"])
def test_grace_must_be_seconds(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--grace", bad])
    assert info.value.code == 2


# --- FIFOs and other special files --------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_fifos_anywhere_in_the_store_hang_nothing_and_are_left(
    capsys: pytest.CaptureFixture[str], store_dir: Path, command: list[str]
) -> None:
    os.mkfifo(store_dir / "pipe.json")
    os.mkfifo(store_dir / ".pipe.json.0123456789abcdef.tmp")
    os.mkfifo(store_dir / ".locks" / "pipe.lock")
    os.utime(store_dir / ".pipe.json.0123456789abcdef.tmp", (0, 0), follow_symlinks=False)
    grace = ["--grace", "0"] if command[0] == "doctor" else []
    code = finishes(lambda: main([*command, "--dir", str(store_dir), *grace]))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert code in (0, 1)
    for name in ("pipe.json", ".pipe.json.0123456789abcdef.tmp", ".locks/pipe.lock"):
        assert (store_dir / name).exists(), name
        assert not (store_dir / name).is_file(), name
    if command[0] == "validate":
        assert re.search(r"^not-a-regular-file +- +pipe +is a FIFO, not a regular file$", out, re.M)


def test_doctor_fix_touches_only_the_stores_own_names(
    capsys: pytest.CaptureFixture[str], store_dir: Path, tmp_path: Path
) -> None:
    old = time.time() - 7200
    foreign = {
        ".bad name.json.0123456789abcdef.tmp": b"a temp name, but not of a valid session",
        ".notes.txt.0123456789abcdef.tmp": b"not of a session file at all",
        ".current.json.0123456789ABCDEF.tmp": b"upper-case token: not ours",
    }
    for name, data in foreign.items():
        (store_dir / name).write_bytes(data)
        os.utime(store_dir / name, (old, old))
    target = tmp_path / "target.txt"
    target.write_text("keep")
    (store_dir / ".current.json.0123456789abcdef.tmp").symlink_to(target)
    (store_dir / ".locks" / "notes.txt").write_text("not a lock file")
    (store_dir / ".locks" / "-x.lock").write_text("not a valid id")
    (store_dir / ".locks" / "linked.lock").symlink_to(target)
    (store_dir / ".locks" / "folder.lock").mkdir()
    ours = store_dir / ".current.json.fedcba9876543210.tmp"
    ours.write_text("{")
    os.utime(ours, (old, old))
    code, out, _ = run(capsys, "doctor", "--fix", "--dir", str(store_dir), "--json")
    findings = json.loads(out)["items"]
    assert sorted((f["status"], Path(f["file"]).name) for f in findings) == [
        ("corrupt", "broken.json"),
        ("stale-temp", ours.name),
    ]
    assert code == 0
    assert not ours.exists()
    for name, data in foreign.items():
        assert (store_dir / name).read_bytes() == data
    assert target.read_text() == "keep"
    assert (store_dir / ".current.json.0123456789abcdef.tmp").is_symlink()
    assert sorted(os.listdir(store_dir / ".locks")) == [
        "-x.lock",
        "current.lock",
        "folder.lock",
        "linked.lock",
        "notes.txt",
    ]


# --- issue 9.21: the --backup folder --------------------------------------------------------


def test_backup_never_opens_a_fifo_in_the_backup_folder(
    capsys: pytest.CaptureFixture[str], store_dir: Path, tmp_path: Path
) -> None:
    # Issue 9.21: a FIFO at the backup's name hung migrate while it held the lock.
    backup = tmp_path / "backup"
    backup.mkdir()
    os.mkfifo(backup / "old.json")
    code = finishes(lambda: main(["migrate", "--dir", str(store_dir), "--backup", str(backup)]))
    capsys.readouterr()
    assert code == 1  # broken.json remains a problem
    [copy] = [p for p in backup.iterdir() if p.name != "old.json"]
    assert copy.name.startswith("old.json.")
    assert copy.read_bytes() == SEED_DOC % b"old"
    assert not (backup / "old.json").is_file()
    assert SessionStore(store_dir).load("old").messages == ("old",)


def test_backup_never_follows_a_link_in_the_backup_folder(
    capsys: pytest.CaptureFixture[str], store_dir: Path, tmp_path: Path
) -> None:
    # Issue 9.21: the backup read (and trusted) whatever a link there pointed at.
    backup = tmp_path / "backup"
    backup.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(SEED_DOC % b"old")  # the same bytes: the old code kept no copy
    (backup / "old.json").symlink_to(elsewhere)
    assert run(capsys, "migrate", "--dir", str(store_dir), "--backup", str(backup))[0] == 1
    copies = [p for p in backup.iterdir() if not p.is_symlink()]
    assert [p.read_bytes() for p in copies] == [SEED_DOC % b"old"]
    assert os.readlink(backup / "old.json") == str(elsewhere)
    assert elsewhere.read_bytes() == SEED_DOC % b"old"


def test_a_linked_backup_folder_is_refused_before_anything_is_rewritten(
    capsys: pytest.CaptureFixture[str], store_dir: Path, outside: Path, tmp_path: Path
) -> None:
    (tmp_path / "backup").symlink_to(outside)
    before = snapshot(outside)
    code, _, err = run(
        capsys, "migrate", "--dir", str(store_dir), "--backup", str(tmp_path / "backup")
    )
    assert code == 2
    assert "backup is a symbolic link" in err
    assert "old.json was not rewritten" in err
    assert snapshot(outside) == before
    assert (store_dir / "old.json").read_bytes() == SEED_DOC % b"old"


def test_an_identical_backup_already_there_is_kept(
    capsys: pytest.CaptureFixture[str], store_dir: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "old.json").write_bytes(SEED_DOC % b"old")
    assert run(capsys, "migrate", "--dir", str(store_dir), "--backup", str(backup))[0] == 1
    assert os.listdir(backup) == ["old.json"]


# --- issue 9.14: names that are not UTF-8 or hold control characters -------------------------


NASTY = [b"\xff\xfe.json", b"\x1b[31mred\x1b[0m.json", b"tab\there.json", b"\xe2\x80\xaeevil.json"]


@pytest.fixture
def nasty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "nasty"
    SessionStore(folder).save(make("fine"))
    for name in NASTY:
        with open(os.path.join(os.fsencode(folder), name), "wb") as handle:
            handle.write(b"{}")
    return folder


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_odd_file_names_are_escaped_never_raw_and_never_a_traceback(
    capsys: pytest.CaptureFixture[str], nasty_dir: Path, command: list[str], as_json: bool
) -> None:
    # Issue 9.14: names that are not UTF-8 raised a traceback (--json always, text on
    # a strict UTF-8 stdout); escape sequences in names reached the terminal.
    argv = [*command, "--dir", str(nasty_dir)] + (["--json"] if as_json else [])
    code, out, err = run(capsys, *argv)
    assert code in (0, 1)
    for text in (out, err):
        assert "\x1b" not in text
        assert "\t" not in text
        assert "\u202e" not in text
        text.encode("utf-8")  # no lone surrogates: printable on any UTF-8 terminal
    if command in (["ls"], ["validate"]):
        shown = json.dumps(json.loads(out)) if as_json else out
        for escaped in (r"\xff\xfe.json", r"\x1b[31mred\x1b[0m.json", r"tab\x09here.json"):
            assert escaped.replace("\\", "\\\\" if as_json else "\\") in shown, escaped
        assert r"\u202eevil.json".replace("\\", "\\\\" if as_json else "\\") in shown


def test_a_folder_name_that_is_not_utf8_is_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"dir\xff"))
    SessionStore(folder).save(make("s"))
    code, out, _ = run(capsys, "validate", "--dir", folder, "--json")
    assert code == 0
    assert json.loads(out)["store"]["location"] == str(tmp_path / "dir") + "\\xff"


def test_text_output_survives_a_stdout_that_cannot_encode_it(
    capsys: pytest.CaptureFixture[str], nasty_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (nasty_dir / "café.json").write_text("{}")
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr("sys.stdout", ascii_out)
    assert main(["validate", "--dir", str(nasty_dir)]) == 1
    ascii_out.flush()
    text = ascii_out.buffer.getvalue().decode("ascii")
    assert "caf\\xe9.json" in text


# --- issue 9.24: an unexpected error exits 2 with one line -----------------------------------


def test_an_unexpected_error_exits_2_without_a_traceback(
    capsys: pytest.CaptureFixture[str], store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 9.24: an uncaught error exited 1, which means "problems found".
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(maintenance, "inspect_folder", broken)
    code, out, err = run(capsys, "validate", "--dir", str(store_dir))
    assert code == 2
    assert out == ""
    assert err.startswith("error: unexpected RuntimeError: something nobody expected")
    assert err.count("\n") == 1


def test_migrate_rewrites_through_the_backend_under_the_lock(
    capsys: pytest.CaptureFixture[str], store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessionstore.backends.filesystem import FileSystemBackend  # noqa: PLC0415

    held: list[str] = []
    real_lock = FileSystemBackend.lock

    def lock(self: FileSystemBackend, session_id: str) -> Any:
        held.append(session_id)
        return real_lock(self, session_id)

    monkeypatch.setattr(FileSystemBackend, "lock", lock)
    run(capsys, "migrate", "--dir", str(store_dir))
    assert held == ["old"]
    assert SessionStore(store_dir).load("old").messages == ("old",)
    assert (store_dir / "old.json").read_bytes() == encode(SessionStore(store_dir).load("old"))
