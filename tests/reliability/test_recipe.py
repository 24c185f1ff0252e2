"""3. The durability recipe, pinned by a recorded call sequence, and a real full disk."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sessionstore import SessionStore, SessionWriteError
from tests.reliability.checks import (
    CRASH_ID,
    recipe_violations,
    recording,
    temp_files,
    version_session,
)
from tests.reliability.figures import record


def test_save_follows_the_durable_replace_recipe(tmp_path: Path) -> None:
    assert recipe_violations(tmp_path) == []


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SessionStore(tmp_path)
    real_write = os.write
    sizes: list[int] = []

    def trickle(fd: int, data: Any) -> int:
        written = real_write(fd, bytes(data[:7]))
        sizes.append(written)
        return written

    monkeypatch.setattr(os, "write", trickle)
    session = version_session(3)
    store.save(session)
    monkeypatch.undo()
    assert len(sizes) > 10
    assert store.load(CRASH_ID) == session


def test_delete_unlinks_then_fsyncs_the_folder(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(version_session(1))
    with recording("unlink", "open", "fsync", "close") as calls:
        assert store.delete(CRASH_ID)
    names = [c.name for c in calls if c.name != "open" or Path(c.args[0]) == tmp_path]
    unlink = names.index("unlink")
    assert calls[[c.name for c in calls].index("unlink")].args[0] == tmp_path / f"{CRASH_ID}.json"
    assert "fsync" in names[unlink:], "the unlink must be made durable before delete returns"


_ENOSPC_CHILD = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    mount = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    from sessionstore import SessionStore, SessionWriteError, StoredSession
    store = SessionStore(mount / "s")
    small = StoredSession(session_id="s", messages=("small",), input_tokens=0, output_tokens=0)
    store.save(small)
    before = (mount / "s" / "s.json").read_bytes()
    big = StoredSession(session_id="s", messages=("x" * 200_000,), input_tokens=0, output_tokens=0)
    try:
        store.save(big)
    except SessionWriteError as exc:
        import errno
        assert exc.errno == errno.ENOSPC, exc.errno
    else:
        raise SystemExit("the save into a full disk did not fail")
    assert (mount / "s" / "s.json").read_bytes() == before
    assert store.load("s") == small
    leftovers = [n for n in os.listdir(mount / "s") if n.endswith(".tmp")]
    assert leftovers == [], leftovers
    print("ENOSPC-OK")
    """
)


def test_real_enospc_on_a_small_tmpfs(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(
        [unshare, "-rm", sys.executable, "-c", _ENOSPC_CHILD, str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    refused = "Operation not permitted" in done.stderr or "permission denied" in done.stderr.lower()
    if done.returncode != 0 and "ENOSPC-OK" not in done.stdout and refused:
        pytest.skip(
            f"user namespaces or tmpfs mounts unavailable here: {done.stderr.strip()[-200:]}"
        )
    assert done.returncode == 0, done.stderr
    assert "ENOSPC-OK" in done.stdout
    record("real ENOSPC saves refused cleanly")


def test_no_temp_file_is_left_by_a_failed_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore(tmp_path)
    store.save(version_session(1))
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(SessionWriteError):
        store.save(version_session(2))
    monkeypatch.undo()
    assert temp_files(tmp_path) == []
    assert store.load(CRASH_ID) == version_session(1)


F_FULLFSYNC = 51  # its value on macOS


def _full_fsync_platform(
    monkeypatch: pytest.MonkeyPatch, fail_with: int | None = None
) -> list[Any]:
    """Make ``fcntl`` look like macOS's: record ``F_FULLFSYNC`` calls (and ``os.fsync``)."""
    calls: list[Any] = []
    monkeypatch.setattr(fcntl, "F_FULLFSYNC", F_FULLFSYNC, raising=False)
    real_fcntl = fcntl.fcntl
    real_fsync = os.fsync

    def fake_fcntl(fd: int, command: int, *args: Any) -> Any:
        if command != F_FULLFSYNC:
            return real_fcntl(fd, command, *args)
        calls.append(("F_FULLFSYNC", fd, stat.S_ISDIR(os.fstat(fd).st_mode)))
        if fail_with is not None:
            raise OSError(fail_with, os.strerror(fail_with))
        return real_fsync(fd)  # what the drive flush stands for here

    def fake_fsync(fd: int) -> None:
        calls.append(("fsync", fd, stat.S_ISDIR(os.fstat(fd).st_mode)))
        real_fsync(fd)

    monkeypatch.setattr(fcntl, "fcntl", fake_fcntl)
    monkeypatch.setattr(os, "fsync", fake_fsync)
    return calls


def test_macos_flushes_the_drive_cache_with_f_fullfsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 9.23: on macOS fsync does not flush the drive's cache; F_FULLFSYNC does.
    store = SessionStore(tmp_path)
    store.save(version_session(1))
    calls = _full_fsync_platform(monkeypatch)
    store.save(version_session(2))
    store.delete(CRASH_ID)
    assert [(name, is_dir) for name, _, is_dir in calls] == [
        ("F_FULLFSYNC", False),  # the temp file
        ("F_FULLFSYNC", True),  # the folder, after the rename
        ("F_FULLFSYNC", True),  # the folder, after the delete's unlink
    ]
    record("F_FULLFSYNC flushes checked", len(calls))


def test_linux_path_is_plain_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(fcntl, "F_FULLFSYNC", raising=False)
    store = SessionStore(tmp_path)
    store.save(version_session(1))
    with recording("fsync") as calls:
        store.save(version_session(2))
    assert [c.name for c in calls] == ["fsync", "fsync"]


def test_f_fullfsync_unsupported_falls_back_to_fsync_but_eio_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore(tmp_path)
    store.save(version_session(1))
    calls = _full_fsync_platform(monkeypatch, fail_with=errno.ENOTSUP)
    store.save(version_session(2))  # a filesystem without a full flush: fsync it is
    assert [name for name, _, _ in calls] == ["F_FULLFSYNC", "fsync", "F_FULLFSYNC", "fsync"]
    monkeypatch.undo()
    calls = _full_fsync_platform(monkeypatch, fail_with=errno.EIO)
    with pytest.raises(SessionWriteError, match="previous version is intact") as info:
        store.save(version_session(3))
    assert info.value.errno == errno.EIO
    assert [name for name, _, _ in calls] == ["F_FULLFSYNC"], "a failed flush is never retried"
    monkeypatch.undo()
    assert store.load(CRASH_ID) == version_session(2)
    assert temp_files(tmp_path) == []
