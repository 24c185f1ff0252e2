"""Atomic, durable file replacement. Knows nothing of sessions.

The recipe, each step for a reason:

1. create a temp file *in the target folder* (``os.replace`` is atomic only within
   one filesystem), exclusive (never reuse or follow someone else's file), mode 0600,
   named ``.<name>.<random>.tmp`` so it never matches ``*.json`` in a listing;
2. write every byte (``os.write`` may write less than asked);
3. ``fsync`` the file, so the data is on disk before the name points at it
   (without it a crash can leave the new name on an empty file);
4. ``os.replace`` onto the target: readers see the old file or the new, never a mix;
5. ``fsync`` the folder, so the rename itself survives a crash;
6. only then return. Any failure before step 4 removes the temp file and leaves
   the target untouched; a failed fsync is reported, never retried.

Every system call goes through the ``os`` module so tests can inject faults.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path

__all__ = ["TEMP_NAME", "fsync_directory", "make_directory", "remove_durably", "write_atomic"]

TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<token>[0-9a-f]{16})\.tmp$")
"""Matches the names of the temp files ``write_atomic`` creates (and may leave after a crash)."""

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_ATTEMPTS = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def fsync_directory(directory: Path) -> None:
    """Flush the folder's entries (creations, renames, deletions) to disk. Raises ``OSError``."""
    fd = os.open(directory, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(directory: Path, *, durable: bool = True) -> None:
    """Create ``directory`` (mode 0700) and its missing parents; a no-op if it exists.

    With ``durable``, the parent of every folder created is fsynced so the new
    folder survives a crash. Raises ``OSError``.
    """
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        if durable:
            fsync_directory(folder.parent)


def write_atomic(
    directory: Path,
    name: str,
    data: bytes,
    *,
    durable: bool = True,
    sync_directory: bool = True,
) -> None:
    """Replace ``directory/name`` with ``data``, atomically and (with ``durable``) durably.

    Returns only when the new content and the rename are on disk. On a failure
    before the rename, raises the ``OSError`` and the old file is intact with no
    temp file left. A failure of the final folder fsync raises ``RenamedButNotSynced``
    (the new content is in place but may not survive a crash). ``durable=False``
    skips both fsyncs: still atomic, not crash-safe. ``sync_directory=False`` leaves
    the folder fsync to the caller (a batch of writes may share one); until then
    the rename is not durable, so do not report the write as done before it.
    """
    temp, fd = _create_temp(directory, name, durable=durable)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, f"{directory}/{name}")
    except BaseException:
        # BaseException too: a KeyboardInterrupt must not leave the temp file behind.
        _unlink_quietly(temp)
        raise
    if durable and sync_directory:
        try:
            fsync_directory(directory)
        except OSError as exc:
            raise RenamedButNotSynced(exc) from exc


def _create_temp(directory: Path, name: str, *, durable: bool) -> tuple[str, int]:
    """Create a fresh temp file next to ``name``; return its path and descriptor."""
    for _ in range(_TEMP_ATTEMPTS):
        # Plain strings: a save builds its paths once, without pathlib's parsing.
        temp = f"{directory}/.{name}.{secrets.token_hex(8)}.tmp"
        try:
            return temp, os.open(temp, _TEMP_FLAGS, 0o600)
        except FileNotFoundError:
            make_directory(directory, durable=durable)
            return temp, os.open(temp, _TEMP_FLAGS, 0o600)
        except FileExistsError:
            # Something (a crashed writer's leftover, or a planted link) holds this
            # name: O_EXCL refused to touch it; try another random name.
            continue
    msg = f"no free temp file name in {directory} after {_TEMP_ATTEMPTS} attempts"
    raise FileExistsError(errno.EEXIST, msg)


def remove_durably(path: Path, *, durable: bool = True) -> None:
    """Unlink ``path``, then fsync its folder. Raises ``FileNotFoundError`` if absent,
    ``OSError`` if it cannot be removed, ``RenamedButNotSynced`` if the fsync failed."""
    os.unlink(path)
    if durable:
        try:
            fsync_directory(path.parent)
        except OSError as exc:
            raise RenamedButNotSynced(exc) from exc


class RenamedButNotSynced(OSError):
    """The rename or unlink happened, but fsyncing the folder failed afterwards."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, f"folder fsync failed after the change: {cause.strerror}")


def _unlink_quietly(path: str | Path) -> None:
    # Best effort: the original error is the one worth reporting.
    with contextlib.suppress(OSError):
        os.unlink(path)
