"""Atomic, durable file replacement and link-proof folders. Knows nothing of sessions.

The recipe, each step for a reason:

1. create a temp file *in the target folder* (``os.replace`` is atomic only within
   one filesystem), exclusive (never reuse or follow someone else's file), mode 0600,
   named ``.<name>.<random>.tmp`` so it never matches ``*.json`` in a listing;
2. write every byte (``os.write`` may write less than asked);
3. flush the file to stable storage (``full_fsync``), so the data is on disk before
   the name points at it (without it a crash can leave the new name on an empty file);
4. ``os.replace`` onto the target: readers see the old file or the new, never a mix;
5. flush the folder, so the rename itself survives a crash;
6. only then return. Any failure before step 4 removes the temp file and leaves
   the target untouched; a failed flush is reported, never retried.

Folders the caller does not fully trust (a backup folder, the store's own hidden
folders) are opened with ``open_folder``: never through a symbolic link at their
last name, and then used only through their descriptor (``dir_fd``), so a link
swapped in later cannot redirect a write.

Every system call goes through the ``os`` and ``fcntl`` modules so tests can inject faults.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
from pathlib import Path

__all__ = [
    "TEMP_NAME",
    "RenamedButNotSynced",
    "fsync_directory",
    "full_fsync",
    "make_directory",
    "open_folder",
    "read_regular_file",
    "remove_durably",
    "sync_data",
    "write_atomic",
]

TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<token>[0-9a-f]{16})\.tmp$")
"""Matches the names of the temp files ``write_atomic`` creates (and may leave after a crash)."""

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_ATTEMPTS = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at the name must not hang the open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# errnos for which F_FULLFSYNC is "not supported here" (a network or FUSE filesystem):
# the plain fsync is then all the platform offers. Anything else (EIO) is a real failure.
_NO_FULLFSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOTTY})


def full_fsync(fd: int) -> None:
    """Flush ``fd`` to stable storage. Raises ``OSError``; never retries a failed flush.

    On macOS ``fsync`` only hands the data to the drive, whose cache may still
    lose it on power loss; ``fcntl(F_FULLFSYNC)`` asks the drive to flush its
    cache too. Where ``fcntl`` has no ``F_FULLFSYNC`` (Linux), this is ``os.fsync``.
    """
    command = getattr(fcntl, "F_FULLFSYNC", None)
    if command is None:
        os.fsync(fd)
        return
    try:
        fcntl.fcntl(fd, command)
    except OSError as exc:
        if exc.errno not in _NO_FULLFSYNC:
            raise
        # The filesystem has no full flush at all (nothing was attempted): fsync
        # is the strongest flush it offers.
        os.fsync(fd)


def sync_data(fd: int) -> None:
    """Flush ``fd``'s data (and the size it needs) to stable storage: ``fdatasync``, or
    ``F_FULLFSYNC`` where the platform has it. Raises ``OSError``; never retries."""
    if getattr(fcntl, "F_FULLFSYNC", None) is not None or not hasattr(os, "fdatasync"):
        full_fsync(fd)
    else:
        os.fdatasync(fd)


def fsync_directory(directory: Path | str) -> None:
    """Flush the folder's entries (creations, renames, deletions) to disk. Raises ``OSError``."""
    fd = os.open(directory, _DIR_FLAGS)
    try:
        full_fsync(fd)
    finally:
        os.close(fd)


def make_directory(directory: Path, *, durable: bool = True) -> None:
    """Create ``directory`` (mode 0700) and its missing parents; a no-op if it exists.

    With ``durable``, the parent of every folder created is flushed so the new
    folder survives a crash (without it, a power loss can forget the folder and
    every file saved in it). Raises ``OSError``.
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
        _follow_parent_owner(folder, os.stat(folder.parent))
        if durable:
            fsync_directory(folder.parent)


def _follow_parent_owner(
    name: Path | str, parent: os.stat_result, *, dir_fd: int | None = None
) -> None:
    """Give a folder just created the owner and group of the folder it is in, when
    running as root: a store folder, ``.locks`` or ``.quarantine`` that ``sudo
    sessionstore ...`` creates must stay usable by the application's own user."""
    if os.geteuid() != 0 or (parent.st_uid, parent.st_gid) == (0, 0):
        return
    os.chown(name, parent.st_uid, parent.st_gid, dir_fd=dir_fd, follow_symlinks=False)


def open_folder(
    name: Path | str, *, dir_fd: int | None = None, create: bool = False, durable: bool = True
) -> int:
    """Open the folder ``name`` (relative to ``dir_fd`` when given) and return its descriptor.

    Never follows a symbolic link at ``name`` itself: a link, or anything else that
    is not a folder, raises ``OSError`` (``ELOOP`` or ``ENOTDIR``) whose ``strerror``
    says what is there. With ``create``, a missing folder is created (mode 0700;
    with ``durable`` its parent is flushed, and missing parents of a path are
    created too). The caller closes the descriptor. Raises ``OSError``.
    """
    flags = _DIR_FLAGS | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_folder(name, dir_fd, exc) from None
        raise
    if dir_fd is None:
        make_directory(Path(name), durable=durable)
    else:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass  # another process made it first
        else:
            _follow_parent_owner(name, os.fstat(dir_fd), dir_fd=dir_fd)
            if durable:
                full_fsync(dir_fd)
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_folder(name, dir_fd, exc) from None
        raise


def _not_a_folder(name: Path | str, dir_fd: int | None, cause: OSError) -> OSError:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        what = "not a folder"
    else:
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
    text = f"{name} is {what}; it is never followed or used as a folder (remove it)"
    return OSError(cause.errno, text)


def read_regular_file(name: str, *, dir_fd: int, max_bytes: int) -> bytes | None:
    """The bytes of ``name`` in the folder ``dir_fd``, when it is a regular file of at
    most ``max_bytes``; ``None`` when it is absent, a link, a FIFO, a folder, a device
    or larger. Never follows a link and never blocks on a FIFO. Raises ``OSError``."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENXIO):
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        data = read_at_most(fd, info.st_size, max_bytes)
    finally:
        os.close(fd)
    # The file may have grown after fstat: still refuse rather than read on.
    return data if len(data) <= max_bytes else None


def read_at_most(fd: int, expected: int, max_bytes: int) -> bytes:
    """Read ``fd`` to its end, but never more than ``max_bytes + 1`` bytes (so a
    caller can tell a file that grew past the limit)."""
    limit = max_bytes + 1
    chunks = []
    total = 0
    want = min(expected + 1, limit)
    while total < limit:
        chunk = os.read(fd, want)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = min(1 << 20, limit - total)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def write_atomic(
    directory: Path,
    name: str,
    data: bytes,
    *,
    durable: bool = True,
    sync_directory: bool = True,
    dir_fd: int | None = None,
    like: os.stat_result | None = None,
    keep_owner: bool = True,
) -> None:
    """Replace ``directory/name`` with ``data``, atomically and (with ``durable``) durably.

    Returns only when the new content and the rename are on disk. On a failure
    before the rename, raises the ``OSError`` and the old file is intact with no
    temp file left. A failure of the final folder flush raises ``RenamedButNotSynced``
    (the new content is in place but may not survive a crash). ``durable=False``
    skips both flushes: still atomic, not crash-safe. ``sync_directory=False`` leaves
    the folder flush to the caller (a batch of writes may share one); until then
    the rename is not durable, so do not report the write as done before it.
    With ``dir_fd`` (a descriptor of ``directory`` from ``open_folder``), every
    call is made relative to it and ``directory`` only names it in messages.
    With ``like`` (the ``lstat`` of the file being replaced), the new file gets its
    mode and, with ``keep_owner``, its owner and group before the rename; a
    ``PermissionError`` then (not root, another user's file) leaves the old file.
    """
    temp, fd = _create_temp(directory, name, durable=durable, dir_fd=dir_fd)
    try:
        try:
            if like is not None:
                _take_owner_and_mode(fd, like, keep_owner=keep_owner)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                full_fsync(fd)
        finally:
            os.close(fd)
        if dir_fd is None:
            os.replace(temp, f"{directory}/{name}")
        else:
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        # BaseException too: a KeyboardInterrupt must not leave the temp file behind.
        _unlink_quietly(temp, dir_fd)
        raise
    if durable and sync_directory:
        try:
            if dir_fd is None:
                fsync_directory(directory)
            else:
                full_fsync(dir_fd)
        except OSError as exc:
            raise RenamedButNotSynced(exc) from exc


def _take_owner_and_mode(fd: int, like: os.stat_result, *, keep_owner: bool) -> None:
    # Owner first: chown may clear set-id bits that the chmod then puts back.
    if keep_owner:
        mine = os.fstat(fd)
        if (mine.st_uid, mine.st_gid) != (like.st_uid, like.st_gid):
            os.fchown(fd, like.st_uid, like.st_gid)
    os.fchmod(fd, stat.S_IMODE(like.st_mode))


def _create_temp(
    directory: Path, name: str, *, durable: bool, dir_fd: int | None = None
) -> tuple[str, int]:
    """Create a fresh temp file next to ``name``; return its path (or, with ``dir_fd``,
    its name in that folder) and descriptor."""
    for _ in range(_TEMP_ATTEMPTS):
        token = secrets.token_hex(8)
        if dir_fd is not None:
            temp = f".{name}.{token}.tmp"
            try:
                return temp, os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
        # Plain strings: a save builds its paths once, without pathlib's parsing.
        temp = f"{directory}/.{name}.{token}.tmp"
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
    """Unlink ``path``, then flush its folder. Raises ``FileNotFoundError`` if absent,
    ``OSError`` if it cannot be removed, ``RenamedButNotSynced`` if the flush failed."""
    os.unlink(path)
    if durable:
        try:
            fsync_directory(path.parent)
        except OSError as exc:
            raise RenamedButNotSynced(exc) from exc


class RenamedButNotSynced(OSError):
    """The rename or unlink happened, but flushing the folder failed afterwards."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, f"folder fsync failed after the change: {cause.strerror}")


def _unlink_quietly(path: str | Path, dir_fd: int | None = None) -> None:
    # Best effort: the original error is the one worth reporting.
    with contextlib.suppress(OSError):
        os.unlink(path, dir_fd=dir_fd)
