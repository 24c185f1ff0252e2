"""One ``<id>.json`` file per session in a folder: the default backend."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sessionstore.atomic import RenamedButNotSynced, remove_durably, write_atomic
from sessionstore.backends.base import content_etag
from sessionstore.errors import (
    ConflictError,
    LockTimeoutError,
    NotARegularFileError,
    SessionDeleteError,
    SessionReadError,
    SessionTooLargeError,
    SessionWriteError,
)
from sessionstore.ids import SESSION_FILE_NAME
from sessionstore.locking import StripedLocks

__all__ = ["SUFFIX", "FileSystemBackend"]

SUFFIX = ".json"

# O_NONBLOCK: opening a FIFO planted at <id>.json must not hang the reader.
# O_NOFOLLOW: a symlink at <id>.json is refused, never followed out of the folder.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
}


class FileSystemBackend:
    """Sessions as files in ``directory``; writes are atomic and, with ``durable``, fsynced."""

    def __init__(
        self, directory: Path, *, durable: bool = True, lock_timeout: float = 30.0
    ) -> None:
        self.directory = directory
        self.durable = durable
        self._locks = StripedLocks(directory, timeout=lock_timeout, durable=durable)

    @property
    def description(self) -> str:
        return str(self.directory)

    def location(self, session_id: str) -> Path:
        return self.directory / f"{session_id}{SUFFIX}"

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        with ExitStack() as stack:
            try:
                stack.enter_context(self._locks.hold(session_id))
            except TimeoutError as exc:
                raise LockTimeoutError(
                    f"session {session_id!r} in {self.directory}: {exc.strerror or exc}; "
                    "another writer holds it (raise lock_timeout, or find the stuck process)",
                    session_id=session_id,
                    path=self._locks.path_for(session_id),
                ) from exc
            except OSError as exc:
                raise SessionWriteError(
                    f"session {session_id!r} ({self.location(session_id)}): cannot open "
                    f"lock file {self._locks.path_for(session_id)}: {exc.strerror or exc}; "
                    "nothing was changed",
                    session_id=session_id,
                    path=self.location(session_id),
                    errno=exc.errno,
                ) from exc
            yield

    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        path = self.location(session_id)
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotARegularFileError(
                    f"session {session_id!r} in {path}: is a symbolic link; sessionstore does "
                    "not follow links out of its folder",
                    session_id=session_id,
                    path=path,
                ) from None
            raise self._read_error(session_id, path, exc) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
                raise NotARegularFileError(
                    f"session {session_id!r} in {path}: is {kind}, not a regular file",
                    session_id=session_id,
                    path=path,
                )
            if info.st_size > max_bytes:
                raise _too_large(session_id, path, info.st_size, max_bytes)
            data = _read_at_most(fd, info.st_size, max_bytes)
        except OSError as exc:
            raise self._read_error(session_id, path, exc) from exc
        finally:
            os.close(fd)
        if len(data) > max_bytes:
            # The file grew after fstat; still refuse rather than read on.
            raise _too_large(session_id, path, len(data), max_bytes)
        return data

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        path = self.location(session_id)
        with self.lock(session_id):
            if if_match is not None:
                current = self.read(session_id, max_bytes=2**63)
                found = None if current is None else content_etag(current)
                if found != if_match:
                    raise ConflictError(
                        f"session {session_id!r} in {path} changed since it was read "
                        f"(expected etag {if_match}, found {found or 'no session'}); "
                        "nothing written",
                        session_id=session_id,
                        path=path,
                    )
            self._write(session_id, path, data)
        return content_etag(data)

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
                    f"deleted: {exc}",
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
            raise SessionWriteError(
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

    def __repr__(self) -> str:
        return f"FileSystemBackend({str(self.directory)!r}, durable={self.durable})"


def _too_large(session_id: str, path: Path, size: int, max_bytes: int) -> SessionTooLargeError:
    return SessionTooLargeError(
        f"session {session_id!r} in {path}: is {size} bytes, over the store's max_bytes "
        f"of {max_bytes}; it was not read (open it with a larger max_bytes)",
        session_id=session_id,
        path=path,
        size=size,
        max_bytes=max_bytes,
    )


def _read_at_most(fd: int, expected: int, max_bytes: int) -> bytes:
    """Read to end of file, but never more than ``max_bytes + 1`` bytes."""
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
