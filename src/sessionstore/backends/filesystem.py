"""One ``<id>.json`` file per session in a folder: the default backend.

This module is the one place that knows the folder's layout:

- ``<id>.json``: a session (``SESSION_FILE_NAME``); other ``*.json`` names are not sessions;
- ``.<id>.json.<16 hex>.tmp``: a temp file of a save in progress, or left by a crash;
- ``.locks/<id>.lock``: the lock file of a session (see ``locking``);
- ``.quarantine/<id>.json.<UTC time>``: a damaged file moved aside by ``sessionstore doctor``.

Besides the ``Backend`` methods it offers what maintenance needs (``scan``,
``rewrite``, ``quarantine``, ``remove_temp``, ``remove_lock_file``...). Each
destructive one takes the session's lock, looks at the file again under it,
acts only on a regular file with one of the names above, never follows a link,
and works relative to folder descriptors opened without following links.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sessionstore.atomic import (
    TEMP_NAME,
    RenamedButNotSynced,
    full_fsync,
    open_folder,
    read_at_most,
    remove_durably,
    sync_data,
    write_atomic,
)
from sessionstore.backends.base import DEFAULT_MAX_BYTES, content_etag
from sessionstore.errors import (
    CommitUnknownError,
    ConflictError,
    LockTimeoutError,
    NotARegularFileError,
    SessionDeleteError,
    SessionReadError,
    SessionTooLargeError,
    SessionWriteError,
)
from sessionstore.ids import SESSION_FILE_NAME
from sessionstore.locking import LOCK_DIR_NAME, LOCK_SUFFIX, SessionLocks, check_lock_timeout
from sessionstore.records import CURRENT_PREFIX, FileTail, walk_to_snapshot_end

__all__ = [
    "INVALID_NAME",
    "OTHER",
    "QUARANTINE_DIR_NAME",
    "SESSION",
    "SUFFIX",
    "TEMP",
    "Entry",
    "FileSystemBackend",
    "classify_name",
    "describe_mode",
    "quarantined_session_id",
]

SUFFIX = ".json"
QUARANTINE_DIR_NAME = ".quarantine"
"""Subfolder of the store where ``doctor --fix`` moves damaged files."""

SESSION = "session"
"""Entry kind: ``<id>.json`` with a valid id."""
INVALID_NAME = "invalid-name"
"""Entry kind: a ``*.json`` name whose stem is not a valid id (never a session)."""
TEMP = "temp"
"""Entry kind: a temp file name of a save of a valid id."""
OTHER = "other"
"""Entry kind: anything else (``.locks``, ``.quarantine``, foreign files)."""

# O_NONBLOCK: opening a FIFO planted at <id>.json must not hang the reader.
# O_NOFOLLOW: a symlink at <id>.json is refused, never followed out of the folder.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LOCATIONS_KEPT = 1024
"""How many sessions' paths ``location`` remembers (then it starts again)."""
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
}


@dataclass(frozen=True)
class Entry:
    """One name in the store's folder, classified by name only (nothing is opened).

    ``name`` is as ``os.listdir`` gives it: bytes that are not UTF-8 are kept as
    lone surrogates (``surrogateescape``), so show it escaped. ``session_id`` is the
    id of a session file, or of the session a temp file was saving.
    """

    name: str
    kind: str
    session_id: str | None = None


def describe_mode(mode: int) -> str:
    """What a file of ``mode`` is, for messages (``a regular file``, ``a FIFO``...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


class FileSystemBackend:
    """Sessions as files in ``directory``; writes are atomic and, with ``durable``, fsynced.

    ``directory`` is made absolute once, here: a later ``os.chdir`` moves neither
    the data nor the locks. ``lock_timeout`` bounds the wait for a session's lock
    (a finite number of seconds >= 0, or ``None`` to wait without bound);
    ``max_bytes`` bounds what a conditional write reads of the current file.
    Raises ``ValueError`` for a bad ``lock_timeout`` or ``max_bytes``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        durable: bool = True,
        lock_timeout: float | None = 30.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if type(max_bytes) is not int or max_bytes < 1:
            msg = f"max_bytes must be a positive int, not {max_bytes!r}"
            raise ValueError(msg)
        self.directory = Path(directory).absolute()
        self._path = os.fspath(self.directory)
        self._locations: dict[str, Path] = {}
        self.durable = durable
        self.max_bytes = max_bytes
        self._locks = SessionLocks(
            self.directory, timeout=check_lock_timeout(lock_timeout), durable=durable
        )

    @property
    def description(self) -> str:
        return str(self.directory)

    def location(self, session_id: str) -> Path:
        # Remembered (a pathlib join costs about a tenth of loading a small session,
        # and the store asks on every load); ``Path`` objects are immutable.
        path = self._locations.get(session_id)
        if path is None:
            if len(self._locations) >= _LOCATIONS_KEPT:
                self._locations.clear()
            path = self._locations[session_id] = self.directory / f"{session_id}{SUFFIX}"
        return path

    @property
    def lock_timeout(self) -> float | None:
        """Seconds a write waits for a session's lock (``None``: without bound)."""
        return self._locks.timeout

    def lock(self, session_id: str) -> contextlib.AbstractContextManager[None]:
        """Hold the session's lock (re-entrant per thread, shared by every store object
        and process on this folder). When the outermost hold ends and the session has
        no file, its lock file is removed too. Raises ``LockTimeoutError`` and
        ``SessionWriteError`` (the lock file cannot be opened: a link at ``.locks``,
        a read-only folder, no descriptors left)."""
        return self._hold(session_id, discard_if=lambda: not self._exists_quietly(session_id))

    @contextmanager
    def _hold(
        self, session_id: str, *, discard_if: Callable[[], bool] | None = None
    ) -> Iterator[None]:
        held = self._locks.hold(session_id, discard_if=discard_if)
        try:
            held.__enter__()
        except TimeoutError as exc:
            raise LockTimeoutError(
                f"session {session_id!r} in {self.directory}: {exc.strerror or exc}; "
                "another writer holds it (raise lock_timeout, or find the stuck process)",
                session_id=session_id,
                path=self._locks.path_for(session_id),
            ) from exc
        except OSError as exc:
            raise SessionWriteError(
                f"session {session_id!r} ({self.location(session_id)}): cannot lock it: "
                f"{exc.strerror or exc} (lock file {self._locks.path_for(session_id)}); "
                "nothing was changed",
                session_id=session_id,
                path=self.location(session_id),
                errno=exc.errno,
            ) from exc
        try:
            yield
        except BaseException as exc:
            if not held.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            held.__exit__(None, None, None)

    def _open_session_file(
        self, session_id: str, max_bytes: int
    ) -> tuple[int, os.stat_result] | None:
        """The session file's descriptor (never through a link) and its ``fstat``; None
        when there is no file. Raises ``NotARegularFileError``, ``SessionTooLargeError``
        (past ``max_bytes``) and ``SessionReadError``; the descriptor is closed then."""
        # A plain string path (pathlib's joins cost more than the read of a small
        # file); the ``Path`` is made only for an error.
        try:
            fd = os.open(f"{self._path}/{session_id}{SUFFIX}", _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._open_error(session_id, self.location(session_id), exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
                self._regular_file_info(session_id, self.location(session_id), fd, max_bytes)
        except OSError as exc:
            _close_quietly(fd)
            raise self._read_error(session_id, self.location(session_id), exc) from exc
        except BaseException:
            _close_quietly(fd)
            raise
        return fd, info

    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        opened = self._open_session_file(session_id, max_bytes)
        if opened is None:
            return None
        fd, info = opened
        try:
            size = info.st_size
            # One read() of the size fstat gave and one byte more: exactly that size
            # back is the whole file; anything else (it grew or shrank meanwhile, a
            # short read) reads on to the end, as ``read_at_most`` does.
            data = os.read(fd, size + 1)
            if len(data) != size:
                data += read_at_most(fd, 0, max_bytes - len(data))
        except OSError as exc:
            raise self._read_error(session_id, self.location(session_id), exc) from exc
        finally:
            _close_quietly(fd)
        if len(data) > max_bytes:
            # The file grew after fstat; still refuse rather than read on.
            raise _too_large(session_id, self.location(session_id), len(data), max_bytes)
        return data

    def read_tail(self, session_id: str, *, max_bytes: int) -> FileTail | None:
        """The end of the session's file, for an append: its first bytes, and its last
        bytes back to the line before the snapshot's closing brace (the records, a
        fold's store line). None when there is no file. Raises what ``read`` raises."""
        opened = self._open_session_file(session_id, max_bytes)
        if opened is None:
            return None
        fd, info = opened
        try:
            size = info.st_size
            chunk = 1 << 16
            data, offset = b"", size
            found, lines, pos = -1, 0, -1
            if size <= chunk:
                # A small file: one pread of all of it (the head is its start).
                data = os.pread(fd, size, 0)
                head = data[: len(CURRENT_PREFIX)]
                if head == CURRENT_PREFIX:
                    offset = 0
                    found, lines, _ = walk_to_snapshot_end(data, data.rfind(b"\n") + 1)
                else:
                    data = b""
            else:
                head = os.pread(fd, len(CURRENT_PREFIX), 0)
            if head == CURRENT_PREFIX:
                # Back a chunk at a time (each twice the last) to the snapshot's end,
                # walking only the lines each new chunk completes.
                while offset > 0:
                    step = min(chunk, offset)
                    offset -= step
                    piece = os.pread(fd, step, offset)
                    data = piece + data
                    if pos >= 0:
                        pos += len(piece)
                    else:
                        pos = data.rfind(b"\n") + 1
                        if pos == 0:
                            pos = -1  # no complete line yet
                    if pos >= 0:
                        found, lines, pos = walk_to_snapshot_end(data, pos, lines)
                    if found >= 0 and (offset == 0 or data.rfind(b"\n", 0, found) >= 0):
                        break
                    chunk *= 2
        except OSError as exc:
            raise self._read_error(session_id, self.location(session_id), exc) from exc
        finally:
            _close_quietly(fd)
        return FileTail(size, (info.st_dev, info.st_ino), head, data, offset, found, lines)

    def append_record(
        self, session_id: str, line: bytes, *, identity: object, size: int, keep: int
    ) -> object:
        """Add ``line`` at the end of the session's file with one ``write()`` on an
        ``O_APPEND`` descriptor, after cutting the file to ``keep`` bytes (a torn tail),
        then fdatasync (with ``durable``). The caller holds the lock and read the file
        at ``size`` bytes (and ``identity``, when not None). Returns the file's stamp
        after the append (see ``unchanged_since``). Raises ``SessionWriteError``
        (nothing added: the file is cut back to ``keep``) and ``CommitUnknownError``
        when the flush fails (the record may or may not survive a crash: retry with
        the same key)."""
        path = self.location(session_id)
        try:
            fd = os.open(path, _APPEND_FLAGS)
        except OSError as exc:
            raise self._append_error(session_id, path, exc) from exc
        try:
            self._append(session_id, path, fd, line, identity=identity, size=size, keep=keep)
            try:
                return _stamp(os.fstat(fd))
            except OSError:
                return None  # appended all the same; the next append reads the tail
        finally:
            _close_quietly(fd)

    def unchanged_since(self, session_id: str, stamp: object, tail: bytes) -> bool:
        """True when the session's file has the ``stamp`` an append returned (the same
        inode, size, modification and change times) and still ends with ``tail``:
        nobody wrote it since, so its state need not be read again. The change time
        is set by the kernel on every write, truncation or rename of the file and
        cannot be set back by anyone. False when it differs or is gone; raises what
        ``read`` raises."""
        if stamp is None:
            return False
        opened = self._open_session_file(session_id, sys.maxsize)
        if opened is None:
            return False
        fd, info = opened
        try:
            return (
                _stamp(info) == stamp and os.pread(fd, len(tail), info.st_size - len(tail)) == tail
            )
        except OSError as exc:
            raise self._read_error(session_id, self.location(session_id), exc) from exc
        finally:
            _close_quietly(fd)

    def _append(
        self,
        session_id: str,
        path: Path,
        fd: int,
        line: bytes,
        *,
        identity: object,
        size: int,
        keep: int,
    ) -> None:
        try:
            info = os.fstat(fd)
        except OSError as exc:
            raise self._append_error(session_id, path, exc) from exc
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_size != size
            or (identity is not None and (info.st_dev, info.st_ino) != identity)
        ):
            raise SessionWriteError(
                f"session {session_id!r}: {path} changed while its lock was held (a "
                "writer that does not take sessionstore's lock?); nothing was appended",
                session_id=session_id,
                path=path,
            )
        try:
            if keep < size:
                os.ftruncate(fd, keep)
            written = os.write(fd, line)
        except OSError as exc:
            raise self._append_error(session_id, path, exc) from exc
        if written != len(line):
            # A short write (a full disk): take the partial record back off. Were that
            # to fail too, the partial line is a torn tail that loads ignore.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, keep)
            raise SessionWriteError(
                f"session {session_id!r}: could not append to {path}: only {written} of "
                f"{len(line)} bytes were written (disk full?); nothing was appended",
                session_id=session_id,
                path=path,
                errno=errno.ENOSPC,
            )
        if not self.durable:
            return
        try:
            sync_data(fd)
        except OSError as exc:
            # The kernel may have dropped the unflushed pages and will not report it
            # again: take the record back off, so that a retry with the same key writes
            # and flushes it anew instead of replaying bytes that never reached the disk.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, keep)
            raise CommitUnknownError(
                f"session {session_id!r}: appended to {path} but could not flush it "
                f"({exc.strerror or exc}); the append may not survive a crash: retry it "
                "with the same key",
                session_id=session_id,
                path=path,
                errno=exc.errno,
            ) from exc

    def _append_error(self, session_id: str, path: Path, exc: OSError) -> SessionWriteError:
        return SessionWriteError(
            f"session {session_id!r}: could not append to {path}: {exc.strerror or exc}; "
            "nothing was appended",
            session_id=session_id,
            path=path,
            errno=exc.errno,
        )

    def _regular_file_info(
        self, session_id: str, path: Path, fd: int, max_bytes: int
    ) -> os.stat_result:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(
                f"session {session_id!r} in {path}: is {describe_mode(info.st_mode)}, "
                "not a regular file",
                session_id=session_id,
                path=path,
            )
        if info.st_size > max_bytes:
            raise _too_large(session_id, path, info.st_size, max_bytes)
        return info

    def _open_error(
        self, session_id: str, path: Path, exc: OSError
    ) -> NotARegularFileError | SessionReadError:
        """The store's error for a failed open of the session's file."""
        if exc.errno == errno.ELOOP:
            return NotARegularFileError(
                f"session {session_id!r} in {path}: is a symbolic link; sessionstore does "
                "not follow links out of its folder",
                session_id=session_id,
                path=path,
            )
        if exc.errno == errno.ENXIO:
            # open() of a Unix socket fails with ENXIO before fstat could tell.
            return NotARegularFileError(
                f"session {session_id!r} in {path}: is a socket, not a regular file",
                session_id=session_id,
                path=path,
            )
        error = self._read_error(session_id, path, exc)
        error.__cause__ = exc
        return error

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        path = self.location(session_id)
        with self.lock(session_id):
            if if_match is not None:
                self._check_etag(session_id, path, if_match)
            self._write(session_id, path, data)
        return content_etag(data)

    def _check_etag(self, session_id: str, path: Path, if_match: str) -> None:
        """Raise ``ConflictError`` unless the stored file has the etag ``if_match``.

        Reads at most ``max_bytes`` of it: every etag this store hands out names a
        document of at most that size, so a larger file cannot match and is not read.
        """
        try:
            current = self.read(session_id, max_bytes=self.max_bytes)
        except SessionTooLargeError as exc:
            raise ConflictError(
                f"session {session_id!r} in {path} is not the version that was read "
                f"(expected etag {if_match}): the file is now {exc.size} bytes, over "
                f"max_bytes of {self.max_bytes}, so it was not read; nothing written",
                session_id=session_id,
                path=path,
            ) from exc
        found = None if current is None else content_etag(current)
        if found != if_match:
            raise ConflictError(
                f"session {session_id!r} in {path} changed since it was read "
                f"(expected etag {if_match}, found {found or 'no session'}); "
                "nothing written",
                session_id=session_id,
                path=path,
            )

    def create(self, session_id: str, data: bytes) -> str:
        path = self.location(session_id)
        with self.lock(session_id):
            # Every writer of this store holds the lock, so nobody can create the
            # file between this check and the replace.
            if self.exists(session_id):
                raise ConflictError(
                    f"session {session_id!r} already exists in {path}; nothing written",
                    session_id=session_id,
                    path=path,
                )
            self._write(session_id, path, data)
        return content_etag(data)

    def delete(self, session_id: str) -> bool:
        path = self.location(session_id)
        if not self.exists(session_id):
            # Nothing to delete: answer without creating lock files in a folder
            # that may not even exist.
            return False
        with self.lock(session_id):
            try:
                remove_durably(path, durable=self.durable)
            except FileNotFoundError:
                return False
            except RenamedButNotSynced as exc:
                raise SessionDeleteError(
                    f"session {session_id!r}: {path} was removed but {exc.strerror}; the "
                    "deletion may not survive a crash",
                    session_id=session_id,
                    path=path,
                    errno=exc.errno,
                ) from exc
            except OSError as exc:
                raise SessionDeleteError(
                    f"session {session_id!r} exists in {self.directory} but could not be "
                    f"deleted: {path}: {exc.strerror or exc}",
                    session_id=session_id,
                    path=path,
                    errno=exc.errno,
                ) from exc
        return True

    def exists(self, session_id: str) -> bool:
        try:
            os.lstat(self.location(session_id))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._read_error(session_id, self.location(session_id), exc) from exc
        return True

    def _exists_quietly(self, session_id: str) -> bool:
        # For deciding whether a lock file may go (after every write: a plain string
        # path, no pathlib work). When in doubt, it stays.
        try:
            os.lstat(f"{self._path}/{session_id}{SUFFIX}")
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True
        return True

    def list_ids(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise SessionReadError(
                f"cannot list sessions in {self.directory}: {exc.strerror}",
                path=self.directory,
                errno=exc.errno,
            ) from exc
        # One regex over every name (the id rules plus the suffix), in C: no
        # per-name slicing and double matching in Python.
        return sorted([match[1] for match in map(SESSION_FILE_NAME.fullmatch, names) if match])

    def _write(self, session_id: str, path: Path, data: bytes) -> None:
        try:
            write_atomic(self.directory, path.name, data, durable=self.durable)
        except RenamedButNotSynced as exc:
            raise CommitUnknownError(
                f"session {session_id!r}: {path} was replaced but {exc.strerror}; the new "
                "version may not survive a crash",
                session_id=session_id,
                path=path,
                errno=exc.errno,
            ) from exc
        except OSError as exc:
            raise SessionWriteError(
                f"session {session_id!r}: could not write {path}: {exc.strerror or exc}; "
                "the previous version is intact",
                session_id=session_id,
                path=path,
                errno=exc.errno,
            ) from exc

    def _read_error(self, session_id: str, path: Path, exc: OSError) -> SessionReadError:
        return SessionReadError(
            f"session {session_id!r}: could not read {path}: {exc.strerror or exc}",
            session_id=session_id,
            path=path,
            errno=exc.errno,
        )

    # -- maintenance: the folder as a whole ------------------------------------------

    def scan(self) -> list[Entry]:
        """Every name in the folder, sorted and classified by name. Opens no file.

        Raises ``SessionReadError`` when the folder cannot be listed.
        """
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise SessionReadError(
                f"cannot read the folder {self.directory}: {exc.strerror or exc}",
                path=self.directory,
                errno=exc.errno,
            ) from exc
        return [classify_name(name) for name in sorted(names)]

    def stat_entry(self, name: str) -> os.stat_result | None:
        """``lstat`` of ``name`` in the folder (links not followed); None if it is gone.

        Raises ``SessionReadError``.
        """
        path = self.directory / name
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SessionReadError(
                f"cannot read {path}: {exc.strerror or exc}", path=path, errno=exc.errno
            ) from exc

    def private_folder_problems(self) -> list[tuple[Path, str]]:
        """``(path, what is wrong)`` for ``.locks`` or ``.quarantine`` when either is
        something other than a real folder (a symbolic link, a file). The store
        refuses to use them then; they are never followed or changed."""
        problems = []
        for name in (LOCK_DIR_NAME, QUARANTINE_DIR_NAME):
            info = self.stat_entry(name)
            if info is not None and not stat.S_ISDIR(info.st_mode):
                problems.append(
                    (
                        self.directory / name,
                        f"is {describe_mode(info.st_mode)}, not a folder; sessionstore never "
                        "follows or uses it: remove it (the store creates a real folder "
                        "again when it needs one)",
                    )
                )
        return problems

    def lock_files(self) -> list[str]:
        """Sorted ids whose regular lock file is in ``.locks`` (``[]`` when there is no
        ``.locks``). Other entries there are not the store's and are left out.

        Raises ``SessionReadError``, also when ``.locks`` is a link or not a folder.
        """
        try:
            dir_fd = open_folder(self.directory / LOCK_DIR_NAME)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SessionReadError(
                f"cannot read the lock folder {self.directory / LOCK_DIR_NAME}: "
                f"{exc.strerror or exc}",
                path=self.directory / LOCK_DIR_NAME,
                errno=exc.errno,
            ) from exc
        try:
            ids = []
            for name in sorted(os.listdir(dir_fd)):
                stem = name[: -len(LOCK_SUFFIX)]
                if not name.endswith(LOCK_SUFFIX) or not SESSION_FILE_NAME.fullmatch(stem + SUFFIX):
                    continue
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    ids.append(stem)
            return ids
        except OSError as exc:
            raise SessionReadError(
                f"cannot read the lock folder {self.directory / LOCK_DIR_NAME}: "
                f"{exc.strerror or exc}",
                path=self.directory / LOCK_DIR_NAME,
                errno=exc.errno,
            ) from exc
        finally:
            os.close(dir_fd)

    def sync(self) -> None:
        """Flush the folder, making earlier renames durable (see ``rewrite``).

        Raises ``SessionWriteError``.
        """
        if not self.durable:
            return
        try:
            fd = os.open(self.directory, _DIR_FLAGS)
            try:
                full_fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SessionWriteError(
                f"could not flush the folder {self.directory}: {exc.strerror or exc}; the "
                "files rewritten since the last flush may not survive a crash",
                path=self.directory,
                errno=exc.errno,
            ) from exc

    # -- maintenance: destructive steps, each under the session's lock ---------------

    def rewrite(
        self,
        session_id: str,
        transform: Callable[[bytes], bytes | None],
        *,
        before_write: Callable[[bytes, os.stat_result], None] | None = None,
        keep_owner: bool = True,
    ) -> bool:
        """Under the session's lock, re-read its file and replace it with
        ``transform(current bytes)``; True when rewritten.

        Nothing is written when the file is gone or ``transform`` returns None.
        ``before_write(old bytes, old lstat)`` runs first (a backup). The new file
        keeps the old one's mode and, with ``keep_owner``, its owner and group (run
        as root, a rewrite must not lock the application's user out). The rename is
        not flushed here: call ``sync`` before reporting the rewrite as done (a batch
        of rewrites shares one flush). Raises ``SessionWriteError`` (the old file is
        intact; also when its owner cannot be kept), ``LockTimeoutError`` and the
        read errors of ``read``.
        """
        path = self.location(session_id)
        with self.lock(session_id):
            current = self.read(session_id, max_bytes=self.max_bytes)
            if current is None:
                return False
            new = transform(current)
            if new is None:
                return False
            info = self.stat_entry(path.name)
            if info is None:
                return False
            if before_write is not None:
                before_write(current, info)
            try:
                write_atomic(
                    self.directory,
                    path.name,
                    new,
                    durable=self.durable,
                    sync_directory=False,
                    like=info,
                    keep_owner=keep_owner,
                )
            except OSError as exc:
                raise SessionWriteError(
                    f"session {session_id!r}: could not rewrite {path}: "
                    f"{exc.strerror or exc}{_owner_hint(exc, info)}; the old file is intact",
                    session_id=session_id,
                    path=path,
                    errno=exc.errno,
                ) from exc
        return True

    def read_entry(self, name: str) -> tuple[bytes, os.stat_result] | None:
        """The bytes and ``lstat`` of the folder entry ``name`` (any ``*.json`` name, an
        invalid id too) when it is a regular file of at most ``max_bytes``; None when
        it is gone, not a regular file or larger. Raises ``SessionReadError``."""
        with self._folder_fd(name, "read") as dir_fd:
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENXIO):
                    return None
                raise self._read_error(name, self.directory / name, exc) from exc
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
                    return None
                data = read_at_most(fd, info.st_size, self.max_bytes)
            except OSError as exc:
                raise self._read_error(name, self.directory / name, exc) from exc
            finally:
                os.close(fd)
        return (data, info) if len(data) <= self.max_bytes else None

    def adopt(
        self,
        name: str,
        session_id: str,
        transform: Callable[[bytes], bytes | None],
        *,
        keep_owner: bool = True,
    ) -> Path | None:
        """Give the file ``name`` (a ``*.json`` name that is not a valid id) the id
        ``session_id``: under that id's lock, write ``transform(its bytes)`` as
        ``<session_id>.json`` (keeping mode and, with ``keep_owner``, owner) and then
        remove ``name``; return the new path, or None when nothing was done (the file
        is gone or changed, not a regular file, or ``transform`` returned None).

        If ``<session_id>.json`` already holds exactly the bytes ``transform`` makes
        (an earlier run stopped between the two steps), only ``name`` is removed. A
        different session there raises ``ConflictError``. The new file is flushed
        before the old name goes, so a crash leaves the data under one name or both,
        never none. Raises ``SessionWriteError`` and ``LockTimeoutError``.
        """
        path = self.location(session_id)
        with self.lock(session_id), self._folder_fd(session_id, "rename") as dir_fd:
            found = self.read_entry(name)
            if found is None:
                return None
            data, info = found
            new = transform(data)
            if new is None:
                return None
            existing = self.read(session_id, max_bytes=self.max_bytes)
            if existing is not None and existing != new:
                raise ConflictError(
                    f"cannot give {self.directory / name} the id {session_id!r}: {path} "
                    "already holds another session; nothing was changed",
                    session_id=session_id,
                    path=path,
                )
            try:
                if existing is None:
                    write_atomic(
                        self.directory,
                        path.name,
                        new,
                        durable=self.durable,
                        dir_fd=dir_fd,
                        like=info,
                        keep_owner=keep_owner,
                    )
                if _same_file(name, dir_fd, info):
                    os.unlink(name, dir_fd=dir_fd)
                    if self.durable:
                        full_fsync(dir_fd)
            except OSError as exc:
                raise SessionWriteError(
                    f"could not give {self.directory / name} the id {session_id!r}: "
                    f"{exc.strerror or exc}{_owner_hint(exc, info)}; {name} is intact",
                    session_id=session_id,
                    path=path,
                    errno=exc.errno,
                ) from exc
        return path

    def quarantined(self) -> list[tuple[str, os.stat_result]]:
        """The regular files in ``.quarantine/`` (name and ``lstat``), sorted by name;
        ``[]`` when there is no quarantine. Raises ``SessionReadError``, also when
        ``.quarantine`` is a link or not a folder."""
        where = self.directory / QUARANTINE_DIR_NAME
        try:
            dir_fd = open_folder(where)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SessionReadError(
                f"cannot read the quarantine {where}: {exc.strerror or exc}",
                path=where,
                errno=exc.errno,
            ) from exc
        try:
            out = []
            for name in sorted(os.listdir(dir_fd)):
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    out.append((name, info))
            return out
        except OSError as exc:
            raise SessionReadError(
                f"cannot read the quarantine {where}: {exc.strerror or exc}",
                path=where,
                errno=exc.errno,
            ) from exc
        finally:
            os.close(dir_fd)

    def restore(self, name: str) -> Path | None:
        """Move ``.quarantine/<name>`` (named ``<id>.json.<time>`` by ``quarantine``) back
        to ``<id>.json``, under that session's lock, only when no file has that name;
        return the restored path, or None when ``name`` is not a quarantined file.

        Raises ``ValueError`` for a name that does not start with ``<valid id>.json.``,
        ``ConflictError`` when the session has a file again (nothing moved), and
        ``SessionWriteError`` and ``LockTimeoutError``.
        """
        session_id = quarantined_session_id(name)
        if session_id is None:
            msg = f"{name!r} is not a name doctor --fix gives a quarantined file (<id>.json.<time>)"
            raise ValueError(msg)
        path = self.location(session_id)
        with self.lock(session_id), self._folder_fd(session_id, "restore") as dir_fd:
            try:
                with self._open_private(QUARANTINE_DIR_NAME, dir_fd) as source_fd:
                    info = os.stat(name, dir_fd=source_fd, follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode):
                        return None
                    if self.exists(session_id):
                        raise ConflictError(
                            f"session {session_id!r} has a file again ({path}); "
                            f"{name} stays in quarantine",
                            session_id=session_id,
                            path=path,
                        )
                    os.rename(name, path.name, src_dir_fd=source_fd, dst_dir_fd=dir_fd)
                    if self.durable:
                        full_fsync(dir_fd)
                        full_fsync(source_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise self._maintenance_error(session_id, "restore", path, exc) from exc
        return path

    def quarantine(
        self,
        session_id: str,
        is_damaged: Callable[[bytes], bool],
        *,
        clock: Callable[[], float] = time.time,
    ) -> Path | None:
        """Move the session's file into ``.quarantine/`` if, re-read under the session's
        lock, it is still a regular file of at most ``max_bytes`` and ``is_damaged``
        says so; return where it went, or None when it was left in place.

        The file keeps its bytes; its new name is ``<id>.json.<UTC time>``. Both
        folders are flushed before this returns. A link or a non-folder at
        ``.quarantine`` is refused, never followed. Raises ``SessionWriteError``
        and ``LockTimeoutError``.
        """
        name = f"{session_id}{SUFFIX}"
        path = self.directory / name
        with self.lock(session_id), self._folder_fd(session_id, "quarantine") as dir_fd:
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENXIO):
                    return None  # gone, or not a file of ours to move
                raise self._maintenance_error(session_id, "quarantine", path, exc) from exc
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
                    return None  # not a file, or too large to judge: never "damaged"
                data = read_at_most(fd, info.st_size, self.max_bytes)
            except OSError as exc:
                raise self._maintenance_error(session_id, "quarantine", path, exc) from exc
            finally:
                os.close(fd)
            if len(data) > self.max_bytes or not is_damaged(data):
                return None
            try:
                with self._open_private(QUARANTINE_DIR_NAME, dir_fd) as target_fd:
                    if not _same_file(name, dir_fd, info):
                        return None
                    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
                    target = _free_name(f"{name}.{stamp}", target_fd)
                    os.rename(name, target, src_dir_fd=dir_fd, dst_dir_fd=target_fd)
                    if self.durable:
                        # The new name first, then the removal of the old one: a
                        # crash in between leaves the file in both places, never in none.
                        full_fsync(target_fd)
                        full_fsync(dir_fd)
            except OSError as exc:
                raise self._maintenance_error(session_id, "quarantine", path, exc) from exc
        return self.directory / QUARANTINE_DIR_NAME / target

    def remove_temp(self, name: str, *, modified_before: float) -> bool:
        """Remove the temp file ``name`` of an interrupted save; True when removed.

        Only a name of the store's own temp pattern for a valid id, only a regular
        file, only if last modified at or before ``modified_before`` (seconds since the
        epoch), checked under that session's lock (a save in progress holds it).
        Raises ``SessionWriteError`` and ``LockTimeoutError``.
        """
        entry = classify_name(name)
        if entry.kind != TEMP or entry.session_id is None:
            return False
        session_id = entry.session_id
        with self.lock(session_id), self._folder_fd(session_id, "remove") as dir_fd:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or info.st_mtime > modified_before:
                    return False
                os.unlink(name, dir_fd=dir_fd)
                if self.durable:
                    full_fsync(dir_fd)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise self._maintenance_error(
                    session_id, "remove", self.directory / name, exc
                ) from exc
        return True

    def remove_lock_file(self, session_id: str) -> bool:
        """Remove the lock file of a session that has no file; True when removed.

        Taken under that lock, like every removal of a lock file, so a writer never
        holds a lock on a removed file. Raises ``SessionWriteError`` and
        ``LockTimeoutError``.
        """
        removed: list[bool] = []

        def absent() -> bool:
            removed.append(not self._exists_quietly(session_id))
            return removed[-1]

        with self._hold(session_id, discard_if=absent):
            pass
        return bool(removed and removed[0])

    @contextmanager
    def _folder_fd(self, session_id: str, action: str) -> Iterator[int]:
        try:
            fd = os.open(self.directory, _DIR_FLAGS)
        except OSError as exc:
            raise self._maintenance_error(session_id, action, self.directory, exc) from exc
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _open_private(self, name: str, dir_fd: int) -> Iterator[int]:
        fd = open_folder(name, dir_fd=dir_fd, create=True, durable=self.durable)
        try:
            yield fd
        finally:
            os.close(fd)

    def _maintenance_error(
        self, session_id: str, action: str, path: Path, exc: OSError
    ) -> SessionWriteError:
        return SessionWriteError(
            f"session {session_id!r}: could not {action} {path}: {exc.strerror or exc}; "
            "it was left as it was",
            session_id=session_id,
            path=path,
            errno=exc.errno,
        )

    def __repr__(self) -> str:
        return f"FileSystemBackend({str(self.directory)!r}, durable={self.durable})"

    def cut_torn_tail(
        self,
        session_id: str,
        torn_bytes: Callable[[bytes], int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> tuple[Path, int] | None:
        """Cut a torn tail (an append that never finished) off the session's file.

        Under the session's lock, the file is re-read and ``torn_bytes(its bytes)``
        says how many bytes at its end belong to no complete line (0: nothing to
        cut). Those bytes are first kept, flushed, as
        ``.quarantine/<id>.json.<UTC time>.torn-tail``; then the file is truncated to
        its last complete line and fsynced. Returns where the bytes went and how
        many, or None when the file was left as it was (gone, a link or not a regular
        file, over ``max_bytes``, changed while read, nothing torn). Works relative to
        the folder's descriptor and never follows a link. Raises
        ``SessionWriteError`` (the file is intact, or cut with its bytes kept) and
        ``LockTimeoutError``.
        """
        name = f"{session_id}{SUFFIX}"
        path = self.directory / name
        with self.lock(session_id), self._folder_fd(session_id, "cut") as dir_fd:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
                    return None  # not a file of ours, or too large to judge
                flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(name, flags, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENXIO):
                    return None
                raise self._maintenance_error(
                    session_id, "cut the torn tail of", path, exc
                ) from exc
            try:
                opened = os.fstat(fd)
                if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                    info.st_dev,
                    info.st_ino,
                ):
                    return None  # replaced between the look and the open
                data = read_at_most(fd, opened.st_size, self.max_bytes)
                cut = torn_bytes(data) if len(data) == opened.st_size else 0
                if not 0 < cut <= len(data):
                    return None
                keep = len(data) - cut
                with self._open_private(QUARANTINE_DIR_NAME, dir_fd) as target_fd:
                    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
                    target = _free_name(f"{name}.{stamp}.torn-tail", target_fd)
                    # The cut bytes are on disk (file and name) before the file loses them.
                    write_atomic(
                        self.directory / QUARANTINE_DIR_NAME,
                        target,
                        data[keep:],
                        durable=self.durable,
                        dir_fd=target_fd,
                        like=opened,
                        keep_owner=False,
                    )
                os.ftruncate(fd, keep)
                if self.durable:
                    full_fsync(fd)
            except OSError as exc:
                raise self._maintenance_error(
                    session_id, "cut the torn tail of", path, exc
                ) from exc
            finally:
                os.close(fd)
        return self.directory / QUARANTINE_DIR_NAME / target, cut


def classify_name(name: str) -> Entry:
    """The kind of the folder entry ``name`` (see ``Entry``), from its name alone."""
    match = SESSION_FILE_NAME.fullmatch(name)
    if match:
        return Entry(name, SESSION, match[1])
    if name.endswith(SUFFIX):
        return Entry(name, INVALID_NAME)
    temp = TEMP_NAME.fullmatch(name)
    if temp:
        target = SESSION_FILE_NAME.fullmatch(temp["target"])
        if target:
            return Entry(name, TEMP, target[1])
    return Entry(name, OTHER)


def quarantined_session_id(name: str) -> str | None:
    """The session id of a quarantined file's name (``<id>.json.<time>[.<n>]``), or None."""
    stem, sep, _ = name.partition(SUFFIX + ".")
    if not sep or not SESSION_FILE_NAME.fullmatch(stem + SUFFIX):
        return None
    return stem


def _owner_hint(exc: OSError, info: os.stat_result) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES) and info.st_uid != os.geteuid():
        return (
            f" (the file belongs to uid {info.st_uid}: run as that user or as root, "
            "or let its owner change with --force)"
        )
    return ""


def _same_file(name: str, dir_fd: int, seen: os.stat_result) -> bool:
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino)


def _free_name(base: str, dir_fd: int) -> str:
    # Only a holder of the session's lock moves its file here, so no one else can
    # take the name between this check and the rename.
    target, counter = base, 0
    while True:
        try:
            os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return target
        counter += 1
        target = f"{base}.{counter}"


def _stamp(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a file's bytes unchanged: its identity, size, mtime and ctime."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _close_quietly(fd: int) -> None:
    """Close a descriptor nothing was written through, or whose writes were flushed
    (or failed, and that error is the one reported): Linux frees it even when
    ``close()`` reports an error, and nothing is left to lose."""
    with contextlib.suppress(OSError):
        os.close(fd)


def _too_large(session_id: str, path: Path, size: int, max_bytes: int) -> SessionTooLargeError:
    return SessionTooLargeError(
        f"session {session_id!r} in {path}: is {size} bytes, over the store's max_bytes "
        f"of {max_bytes}; it was not read (open it with a larger max_bytes)",
        session_id=session_id,
        path=path,
        size=size,
        max_bytes=max_bytes,
    )
