"""Folder maintenance behind the CLI: inspect every file, migrate old ones, find debris.

Nothing here prints; the CLI turns the records into text or JSON. Everything
streams one file at a time (only the sorted list of names is held), so a folder
of 100,000 sessions never sits in memory at once.

The folder's layout (which names are sessions, temp files, lock files, where the
quarantine is) belongs to ``FileSystemBackend``: this module asks it, and every
destructive step (a migrate rewrite, a quarantine, a temp or lock file removal)
is a backend method that takes the session's lock, looks again under it and acts
only on a regular file with one of the store's own names.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sessionstore.atomic import open_folder, read_regular_file, write_atomic
from sessionstore.backends.base import DEFAULT_MAX_BYTES, content_etag
from sessionstore.backends.filesystem import (
    INVALID_NAME as _INVALID_NAME_ENTRY,
)
from sessionstore.backends.filesystem import (
    QUARANTINE_DIR_NAME,
    SESSION,
    TEMP,
    Entry,
    FileSystemBackend,
    describe_mode,
)
from sessionstore.codec import DecodedSession, decode_document, encode
from sessionstore.errors import (
    ConflictError,
    CorruptSessionError,
    NotARegularFileError,
    SchemaVersionError,
    SessionReadError,
    SessionRefusedError,
    SessionStoreError,
    SessionTooLargeError,
    SessionWriteError,
)
from sessionstore.store import BackendSessionStore

__all__ = [
    "CURRENT",
    "NEEDS_MIGRATION",
    "PROBLEMS",
    "QUARANTINE_DIR_NAME",
    "REPAIRABLE",
    "Debris",
    "FileReport",
    "copy_store",
    "find_debris",
    "inspect_folder",
    "inspect_store",
    "migrate_folder",
    "migrate_store",
    "remove_debris",
]

CURRENT = "current"
NEEDS_MIGRATION = "needs-migration"
REPAIRABLE = "repairable"
CORRUPT = "corrupt"
TOO_NEW = "too-new"
INVALID_NAME = "invalid-name"
NOT_REGULAR = "not-a-regular-file"
TOO_LARGE = "too-large"
UNREADABLE = "unreadable"

LOADABLE = frozenset({CURRENT, NEEDS_MIGRATION, REPAIRABLE})
"""Statuses of files that load."""
PROBLEMS = frozenset({CORRUPT, TOO_NEW, TOO_LARGE, INVALID_NAME, NOT_REGULAR, UNREADABLE})
"""Statuses of files that do not load; migrate and the library leave them untouched.
Only ``corrupt`` files are ever quarantined (by ``doctor --fix``): a too-large, too-new
or special file is not damaged."""


@dataclass(frozen=True)
class FileReport:
    """What one ``*.json`` file of a folder is. The keys of ``as_json`` are stable."""

    name: str
    status: str
    session_id: str | None = None
    schema_version: int | None = None
    messages: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    size: int | None = None
    modified: float | None = None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        """A plain dict for ``--json`` output."""
        return asdict(self)


def _inspect(backend: FileSystemBackend, entry: Entry) -> tuple[FileReport, bytes | None]:
    name = entry.name
    path = backend.directory / name
    try:
        info = backend.stat_entry(name)
    except SessionReadError as exc:
        return FileReport(name, UNREADABLE, detail=str(exc)), None
    if info is None:
        return FileReport(name, UNREADABLE, detail=f"{path}: vanished"), None
    base: dict[str, Any] = {"size": info.st_size, "modified": info.st_mtime}
    session_id = entry.session_id
    if entry.kind != SESSION or session_id is None:
        stem = name[: -len(".json")] if name.endswith(".json") else name
        detail = f"{path}: {stem!r} is not a valid session id, so no session is stored here"
        return FileReport(name, INVALID_NAME, detail=detail, **base), None
    if not stat.S_ISREG(info.st_mode):
        detail = f"{path}: is {describe_mode(info.st_mode)}, not a regular file; it is never loaded"
        return FileReport(name, NOT_REGULAR, session_id, detail=detail, **base), None
    try:
        data = backend.read(session_id, max_bytes=backend.max_bytes)
    except SessionTooLargeError as exc:
        return FileReport(name, TOO_LARGE, session_id, detail=str(exc), **base), None
    except NotARegularFileError as exc:
        return FileReport(name, NOT_REGULAR, session_id, detail=str(exc), **base), None
    except SessionReadError as exc:
        return FileReport(name, UNREADABLE, session_id, detail=str(exc), **base), None
    if data is None:
        return FileReport(name, UNREADABLE, session_id, detail=f"{path}: vanished"), None
    status, detail, decoded = _classify(data, session_id, path)
    if decoded is None:
        return FileReport(name, status, session_id, detail=detail, **base), None
    return _loaded_report(name, decoded, base), data


def _classify(data: bytes, session_id: str, path: object) -> tuple[str, str, DecodedSession | None]:
    """``(status, detail, decoded)`` of a document's bytes; ``decoded`` when it loads."""
    try:
        decoded = decode_document(data, session_id=session_id, path=path)
    except SchemaVersionError as exc:
        return TOO_NEW, str(exc), None
    except CorruptSessionError as exc:
        return CORRUPT, str(exc), None
    return CURRENT, "", decoded


def _loaded_report(name: str, decoded: DecodedSession, base: dict[str, Any]) -> FileReport:
    session = decoded.session
    if decoded.repaired_surrogates:
        status = REPAIRABLE
        detail = (
            f"version {decoded.source_version}; {decoded.repaired_surrogates} escaped lone "
            "surrogate(s) will be stored as U+FFFD"
        )
    elif decoded.source_version < session.schema_version:
        status = NEEDS_MIGRATION
        detail = f"version {decoded.source_version}, current is {session.schema_version}"
    else:
        status, detail = CURRENT, ""
    return FileReport(
        name,
        status,
        session.session_id,
        decoded.source_version,
        len(session.messages),
        session.input_tokens,
        session.output_tokens,
        detail=detail,
        **base,
    )


def _json_files(backend: FileSystemBackend) -> list[Entry]:
    """Every ``*.json`` name of the folder (sessions and invalid names), sorted."""
    return [e for e in backend.scan() if e.kind in (SESSION, _INVALID_NAME_ENTRY)]


def inspect_folder(
    directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[int, Iterator[FileReport]]:
    """How many ``*.json`` files ``directory`` has, and a report of each, in name order.

    Files over ``max_bytes`` are reported ``too-large`` without being read. Reads
    only; never writes. Raises ``SessionReadError`` when the folder cannot be listed.
    """
    backend = FileSystemBackend(directory, max_bytes=max_bytes)
    entries = _json_files(backend)
    return len(entries), (_inspect(backend, entry)[0] for entry in entries)


def migrate_folder(
    directory: Path,
    *,
    dry_run: bool = False,
    backup: Path | None = None,
    batch_size: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
    durable: bool = True,
) -> tuple[int, Iterator[tuple[FileReport, str]]]:
    """Rewrite every older-version (or repairable) file as the current version.

    Yields ``(report, action)`` per file in name order, where action is ``migrated``,
    ``would migrate`` (dry run), ``unchanged`` (already current, or changed by
    someone else since it was inspected) or ``skipped`` (a problem file, left
    untouched). A file is yielded as migrated only after the folder flush that makes
    its rename durable; a batch of up to ``batch_size`` files shares one flush. Each
    rewrite holds the session's lock and re-reads the file under it, so a live
    writer's newer save is never overwritten. With ``backup``, the old bytes are
    copied there (durably) before the rewrite; nothing in ``backup`` is ever
    followed if it is a link or opened if it is not a regular file, and a link at
    ``backup`` itself is refused. Raises ``SessionReadError`` when the folder cannot
    be listed, ``SessionWriteError`` when a rewrite or a backup fails (files yielded
    before stay migrated) and ``LockTimeoutError``.
    """
    backend = FileSystemBackend(directory, durable=durable, max_bytes=max_bytes)
    entries = _json_files(backend)

    def run() -> Iterator[tuple[FileReport, str]]:
        pending: list[FileReport] = []
        backups = _BackupFolder(backup) if backup is not None else None
        try:
            for entry in entries:
                report, _ = _inspect(backend, entry)
                if report.status not in (NEEDS_MIGRATION, REPAIRABLE):
                    yield report, ("unchanged" if report.status == CURRENT else "skipped")
                    continue
                if dry_run:
                    yield report, "would migrate"
                    continue
                assert report.session_id is not None  # loadable files have ids
                if _rewrite(backend, report.session_id, backups):
                    pending.append(report)
                else:
                    yield report, "unchanged"
                if len(pending) >= batch_size:
                    backend.sync()
                    yield from ((done, "migrated") for done in pending)
                    pending = []
        finally:
            if backups is not None:
                backups.close()
            # Even on Ctrl-C or an error, make what was renamed durable before the
            # caller hears about it.
            if pending:
                backend.sync()
        yield from ((done, "migrated") for done in pending)

    return len(entries), run()


def _rewrite(backend: FileSystemBackend, session_id: str, backups: _BackupFolder | None) -> bool:
    """Rewrite one file under its lock; False when, re-read there, it no longer needs it."""
    path = backend.location(session_id)

    def migrated(data: bytes) -> bytes | None:
        try:
            decoded = decode_document(data, session_id=session_id, path=path)
        except SessionStoreError:
            return None  # changed into something migrate does not rewrite: left as it is
        return encode(decoded.session) if decoded.needs_rewrite else None

    def back_up(data: bytes) -> None:
        if backups is not None:
            backups.save(path.name, data)

    try:
        return backend.rewrite(session_id, migrated, before_write=back_up)
    except (SessionRefusedError, CorruptSessionError, SchemaVersionError):
        return False  # replaced by a link, a FIFO or a larger file since it was inspected


class _BackupFolder:
    """The ``--backup`` folder: opened once without following a link, used only
    through its descriptor, and only regular files in it are ever read."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def save(self, name: str, data: bytes) -> None:
        """Keep ``data`` as ``name`` (or ``name.<ns>`` when that name holds something
        else), durably. A copy already there with the same bytes is kept as is.
        Raises ``SessionWriteError``: nothing was rewritten then."""
        try:
            if self._fd is None:
                self._fd = open_folder(self.folder, create=True)
            target = name
            if _lstat(name, self._fd) is not None:
                if read_regular_file(name, dir_fd=self._fd, max_bytes=len(data)) == data:
                    return
                target = f"{name}.{time.time_ns()}"
                while _lstat(target, self._fd) is not None:
                    target = f"{name}.{time.time_ns()}"
            write_atomic(self.folder, target, data, dir_fd=self._fd)
        except OSError as exc:
            raise SessionWriteError(
                f"could not back up {name} into {self.folder}: {exc.strerror or exc}; "
                f"{name} was not rewritten",
                path=self.folder / name,
                errno=exc.errno,
            ) from exc

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# --- doctor ----------------------------------------------------------------------

STALE_TEMP = "stale-temp"
FRESH_TEMP = "fresh-temp"
STRAY_LOCK = "stray-lock"
UNSAFE_FOLDER = "unsafe-folder"


@dataclass(frozen=True)
class Debris:
    """Something ``doctor`` found. ``as_json`` has the stable keys ``kind``, ``path``,
    ``detail``; the other fields say where, for ``remove_debris``."""

    kind: str
    """``stale-temp``, ``fresh-temp``, ``stray-lock``, ``corrupt`` or ``unsafe-folder``
    (a link or a file at ``.locks`` or ``.quarantine``: never fixed by the doctor)."""
    path: str
    detail: str
    directory: str = ""
    """The store's folder."""
    name: str = ""
    """The temp file's name, or the session id of a corrupt file or a stray lock."""
    cutoff: float = 0.0
    """For temp files: stale when last modified at or before this time."""

    def as_json(self) -> dict[str, Any]:
        """A plain dict for ``--json`` output."""
        return {"kind": self.kind, "path": self.path, "detail": self.detail}


def find_debris(
    directory: Path,
    *,
    grace_seconds: float = 3600.0,
    now: float | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Debris]:
    """Yield what crashed writers and damage left in ``directory``. Reads only.

    Temp files count only with the store's own names; those modified less than
    ``grace_seconds`` ago may belong to a writer still running (``fresh-temp``).
    Lock files count when their session has no file (``stray-lock``). Files are
    classified with ``max_bytes``: a larger file is too large, not corrupt, and
    never reported here. Raises ``SessionReadError`` when the folder cannot be listed.
    """
    backend = FileSystemBackend(directory, max_bytes=max_bytes)
    now = time.time() if now is None else now
    cutoff = now - grace_seconds
    where = str(backend.directory)
    unsafe = set()
    for path, detail in backend.private_folder_problems():
        unsafe.add(path.name)
        yield Debris(UNSAFE_FOLDER, str(path), detail, where, path.name)
    entries = backend.scan()
    names = {entry.name for entry in entries}
    for entry in entries:
        path = backend.directory / entry.name
        if entry.kind == TEMP:
            info = backend.stat_entry(entry.name)
            if info is None or not stat.S_ISREG(info.st_mode):
                continue  # gone, or not a file a save of ours made
            age = now - info.st_mtime
            kind = STALE_TEMP if info.st_mtime <= cutoff else FRESH_TEMP
            detail = f"temp file of an interrupted save, {age:.0f} s old"
            yield Debris(kind, str(path), detail, where, entry.name, cutoff)
        elif entry.kind == SESSION:
            report, _ = _inspect(backend, entry)
            if report.status == CORRUPT:
                yield Debris(CORRUPT, str(path), report.detail, where, entry.session_id or "")
    if ".locks" in unsafe:
        return
    for session_id in backend.lock_files():
        if f"{session_id}.json" not in names:
            path = backend.directory / ".locks" / f"{session_id}.lock"
            detail = f"lock file of session {session_id!r}, which has no file"
            yield Debris(STRAY_LOCK, str(path), detail, where, session_id)


def remove_debris(
    item: Debris,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    clock: Callable[[], float] = time.time,
) -> tuple[str, bool]:
    """Fix one finding; return what was done and whether nothing is left to fix.

    Each fix takes the session's lock and looks again first: a stale temp file is
    removed, a stray lock file removed, a corrupt file moved into ``.quarantine/``
    (its bytes kept), each only if it still is what was found. A file saved again
    meanwhile is left alone. Never deletes session data; never touches an
    ``unsafe-folder`` finding. Errors are returned as ``failed: ...`` (not fixed).
    """
    backend = FileSystemBackend(item.directory, max_bytes=max_bytes)
    try:
        if item.kind == STALE_TEMP:
            if backend.remove_temp(item.name, modified_before=item.cutoff):
                return "removed", True
            return "left alone: no longer a stale temp file", True
        if item.kind == STRAY_LOCK:
            if backend.remove_lock_file(item.name):
                return "removed", True
            return "left alone: its session has a file again", True
        if item.kind == CORRUPT:
            path = backend.location(item.name)

            def damaged(data: bytes) -> bool:
                return _classify(data, item.name, path)[0] == CORRUPT

            target = backend.quarantine(item.name, damaged, clock=clock)
            if target is not None:
                return f"moved to {target}", True
            return "left alone: re-read under its lock, it is no longer damaged", True
    except SessionStoreError as exc:
        return f"failed: {exc}", False
    if item.kind == FRESH_TEMP:
        return "left alone: a save may still be writing it", True
    return "left alone: remove it by hand", False


# --- any backend (a PostgreSQL table, memory) ---------------------------------
#
# Backends other than a folder have no file names, temp files or special files:
# every stored document has a valid id, so a report is about its content only.


READ_BATCH = 500
"""Documents read per statement by ``inspect_store``/``migrate_store`` on backends
that can read many at once (PostgreSQL)."""

_Fetched = bytes | SessionStoreError | None


def _fetch(store: BackendSessionStore, ids: list[str]) -> Iterator[tuple[str, _Fetched]]:
    """``(id, bytes | error | None)`` for every id, in order, read ``READ_BATCH`` at a
    time where the backend has ``read_many`` (else one by one). Only ids are held
    in memory, never more than one batch of documents."""
    read_many = getattr(store.backend, "read_many", None)
    for start in range(0, len(ids), READ_BATCH):
        chunk = ids[start : start + READ_BATCH]
        if read_many is not None:
            found: dict[str, _Fetched] = read_many(chunk, max_bytes=store.max_bytes)
            for session_id in chunk:
                yield session_id, found.get(session_id)
            continue
        for session_id in chunk:
            try:
                yield session_id, store.backend.read(session_id, max_bytes=store.max_bytes)
            except SessionStoreError as exc:
                yield session_id, exc


def _inspect_stored(
    store: BackendSessionStore, session_id: str, fetched: _Fetched
) -> tuple[FileReport, bytes | None]:
    where = store.backend.location(session_id)
    name = str(where)
    try:
        if isinstance(fetched, SessionStoreError):
            raise fetched
        if fetched is None:
            return FileReport(name, UNREADABLE, session_id, detail=f"{where}: vanished"), None
        decoded = decode_document(fetched, session_id=session_id, path=where)
    except SchemaVersionError as exc:
        return FileReport(name, TOO_NEW, session_id, detail=str(exc)), None
    except SessionTooLargeError as exc:
        return FileReport(name, TOO_LARGE, session_id, detail=str(exc)), None
    except CorruptSessionError as exc:
        return FileReport(name, CORRUPT, session_id, detail=str(exc)), None
    except SessionReadError as exc:
        return FileReport(name, UNREADABLE, session_id, detail=str(exc)), None
    return _loaded_report(name, decoded, {"size": len(fetched)}), fetched


def inspect_store(store: BackendSessionStore) -> tuple[int, Iterator[FileReport]]:
    """Like ``inspect_folder``, for the documents of any store (by id order). Reads only.

    A failure to read a whole batch (the server went away) raises ``SessionReadError``.
    """
    ids = store.list()
    return len(ids), (_inspect_stored(store, i, fetched)[0] for i, fetched in _fetch(store, ids))


def migrate_store(
    store: BackendSessionStore, *, dry_run: bool = False
) -> tuple[int, Iterator[tuple[FileReport, str]]]:
    """Like ``migrate_folder``, for any store: each rewrite is a compare-and-swap on the
    etag that was read, so a concurrent save is never overwritten (that document is
    reported ``unchanged`` and left for the next run)."""
    ids = store.list()

    def run() -> Iterator[tuple[FileReport, str]]:
        for session_id, fetched in _fetch(store, ids):
            report, data = _inspect_stored(store, session_id, fetched)
            if data is None or report.status not in (NEEDS_MIGRATION, REPAIRABLE):
                yield report, ("unchanged" if report.status == CURRENT else "skipped")
                continue
            if dry_run:
                yield report, "would migrate"
                continue
            session = decode_document(data, session_id=session_id).session
            try:
                store.save(session, if_match=content_etag(data))
            except ConflictError:
                yield report, "unchanged"
                continue
            yield report, "migrated"

    return len(ids), run()


def copy_store(
    source: BackendSessionStore, target: BackendSessionStore
) -> Iterator[tuple[str, str, str]]:
    """Copy every session of ``source`` into ``target``, migrated to the current version.

    Yields ``(session_id, outcome, detail)`` with outcome ``copied`` (written, read
    back and found equal) or ``failed`` (not loadable in the source, or not equal
    after the copy; nothing else about it is written). Reads the source only.
    """
    for session_id in source.list():
        try:
            session = source.load(session_id)
            target.save(session)
            if target.load(session_id) != session:
                yield session_id, "failed", "the copy does not read back equal"
                continue
        except SessionStoreError as exc:
            yield session_id, "failed", str(exc)
            continue
        yield session_id, "copied", ""
