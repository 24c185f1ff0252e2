"""9. Deliberately broken variants of the write path: each is caught by a check.

Every variant is a monkeypatched replacement of one piece of the real code. The
same check passes on the real code (other tests) and must report a violation
on the variant, so the tests that use these checks cannot pass vacuously.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sessionstore import atomic
from sessionstore.backends import filesystem
from tests.reliability.checks import crash_violations, lost_update_violations, recipe_violations
from tests.reliability.figures import record


def _in_place(self: Any, session_id: str, path: Path, data: bytes) -> None:
    # What json.dump into the target does: truncate, then write piece by piece.
    with open(path, "wb", buffering=0) as handle:
        for start in range(0, len(data), 4096):
            handle.write(data[start : start + 4096])


def _no_file_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    real = atomic.write_atomic

    def variant(directory: Path, name: str, data: bytes, **kw: Any) -> None:
        real_fsync = os.fsync
        folder_fd: list[int] = []

        def only_folders(fd: int) -> None:
            # Skip fsyncs of regular files; keep the folder's.
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                folder_fd.append(fd)
                real_fsync(fd)

        with pytest.MonkeyPatch.context() as inner:
            inner.setattr(os, "fsync", only_folders)
            real(directory, name, data, **kw)

    monkeypatch.setattr(filesystem, "write_atomic", variant)


def _no_folder_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "fsync_directory", lambda directory: None)


def _ack_before_folder_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    real = atomic.write_atomic
    deferred: list[Path] = []

    def variant(directory: Path, name: str, data: bytes, **kw: Any) -> None:
        # Sync the folder of the *previous* save, then return before syncing this one.
        for folder in deferred:
            atomic.fsync_directory(folder)
        deferred.clear()
        real(directory, name, data, **{**kw, "sync_directory": False})
        deferred.append(directory)

    monkeypatch.setattr(filesystem, "write_atomic", variant)


def _temp_elsewhere(monkeypatch: pytest.MonkeyPatch, elsewhere: Path) -> None:
    def variant(directory: Path, name: str, *, durable: bool) -> tuple[Path, int]:
        temp = elsewhere / f".{name}.{secrets.token_hex(8)}.tmp"
        return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    monkeypatch.setattr(atomic, "_create_temp", variant)


def _fixed_temp_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def variant(directory: Path, name: str, *, durable: bool) -> tuple[Path, int]:
        temp = directory / f".{name}.0000000000000000.tmp"
        return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    monkeypatch.setattr(atomic, "_create_temp", variant)


def _lock_the_data_file(monkeypatch: pytest.MonkeyPatch) -> None:
    held: set[str] = set()

    @contextmanager
    def variant(self: Any, session_id: str) -> Iterator[None]:
        if session_id in held:  # re-entrant, like the real lock
            yield
            return
        try:
            fd = os.open(self.location(session_id), os.O_RDONLY)
        except FileNotFoundError:
            yield  # nothing to lock yet
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.add(session_id)
            yield
        finally:
            held.discard(session_id)
            os.close(fd)

    monkeypatch.setattr(filesystem.FileSystemBackend, "lock", variant)


Variant = Callable[[pytest.MonkeyPatch, Path], None]

VARIANTS: dict[str, tuple[Variant, str]] = {
    "in-place write": (
        lambda mp, tmp: mp.setattr(filesystem.FileSystemBackend, "_write", _in_place),
        "crash",
    ),
    "no file fsync": (lambda mp, tmp: _no_file_fsync(mp), "recipe"),
    "no folder fsync": (lambda mp, tmp: _no_folder_fsync(mp), "recipe"),
    "temp in another folder": (lambda mp, tmp: _temp_elsewhere(mp, tmp), "recipe"),
    "fixed temp name": (lambda mp, tmp: _fixed_temp_name(mp), "recipe"),
    "locking the data file": (lambda mp, tmp: _lock_the_data_file(mp), "lost updates"),
    "ack before the folder fsync": (lambda mp, tmp: _ack_before_folder_fsync(mp), "recipe"),
}


def _run_check(check: str, folder: Path) -> list[str]:
    if check == "crash":
        return crash_violations(folder, 200, seed=7, payload=4000).violations
    if check == "recipe":
        return recipe_violations(folder)
    return lost_update_violations(folder, 4, 30)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_broken_variant_is_caught(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install, check = VARIANTS[variant]
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    install(monkeypatch, tmp_path / "elsewhere")
    violations = _run_check(check, tmp_path / "store")
    record("broken variants caught", 1 if violations else 0)
    assert violations, f"the {check} check did not notice the variant {variant!r}"


@pytest.mark.parametrize("check", ["crash", "recipe", "lost updates"])
def test_the_same_checks_pass_on_the_real_code(check: str, tmp_path: Path) -> None:
    assert _run_check(check, tmp_path) == []
