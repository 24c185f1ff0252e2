"""3. The durability recipe, pinned by a recorded call sequence, and a real full disk."""

from __future__ import annotations

import os
import shutil
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
