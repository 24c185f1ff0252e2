"""Folder maintenance behind the CLI: inspect every file, migrate old ones, find debris.

Nothing here prints; the CLI turns the records into text or JSON. Everything
streams one file at a time (only the sorted list of names is held), so a folder
of 100,000 sessions never sits in memory at once.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sessionstore.atomic import TEMP_NAME, fsync_directory, make_directory, write_atomic
from sessionstore.backends.base import content_etag
from sessionstore.backends.filesystem import SUFFIX
from sessionstore.codec import DecodedSession, decode_document, encode
from sessionstore.errors import (
    ConflictError,
    CorruptSessionError,
    NotARegularFileError,
    SchemaVersionError,
    SessionReadError,
    SessionStoreError,
    SessionTooLargeError,
    SessionWriteError,
)
from sessionstore.ids import is_valid_session_id
from sessionstore.locking import LOCK_DIR_NAME, STRIPES
from sessionstore.store import DEFAULT_MAX_BYTES, BackendSessionStore, SessionStore

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
    "quarantine",
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
"""Statuses of files that do not load; migrate and the library leave them untouched."""

QUARANTINE_DIR_NAME = ".quarantine"
_STRIPE_NAME = re.compile(r"^stripe-(\d{2})\.lock$")


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


def _inspect(directory: Path, name: str, max_bytes: int) -> tuple[FileReport, bytes | None]:
    path = directory / name
    session_id = name[: -len(SUFFIX)]
    try:
        info = os.lstat(path)
    except OSError as exc:
        return FileReport(name, UNREADABLE, detail=f"{path}: {exc.strerror}"), None
    base: dict[str, Any] = {"size": info.st_size, "modified": info.st_mtime}
    if not is_valid_session_id(session_id):
        detail = f"{path}: {session_id!r} is not a valid session id, so no session is stored here"
        return FileReport(name, INVALID_NAME, detail=detail, **base), None
    if not stat.S_ISREG(info.st_mode):
        detail = f"{path}: is not a regular file (a link, folder or device); it is never loaded"
        return FileReport(name, NOT_REGULAR, session_id, detail=detail, **base), None
    store = SessionStore(directory, max_bytes=max_bytes)
    try:
        data = store.backend.read(session_id, max_bytes=max_bytes)
        if data is None:
            return FileReport(name, UNREADABLE, session_id, detail=f"{path}: vanished"), None
        decoded = decode_document(data, session_id=session_id, path=path)
    except SchemaVersionError as exc:
        return FileReport(name, TOO_NEW, session_id, detail=str(exc), **base), None
    except SessionTooLargeError as exc:
        return FileReport(name, TOO_LARGE, session_id, detail=str(exc), **base), None
    except NotARegularFileError as exc:
        return FileReport(name, NOT_REGULAR, session_id, detail=str(exc), **base), None
    except CorruptSessionError as exc:
        return FileReport(name, CORRUPT, session_id, detail=str(exc), **base), None
    except SessionReadError as exc:
        return FileReport(name, UNREADABLE, session_id, detail=str(exc), **base), None
    return _loaded_report(name, decoded, base), data


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


def inspect_folder(
    directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[int, Iterator[FileReport]]:
    """How many ``*.json`` files ``directory`` has, and a report of each, in name order.

    Reads only; never writes. Raises ``SessionReadError`` when the folder cannot be listed.
    """
    names = _list(directory)

    def reports() -> Iterator[FileReport]:
        for name in names:
            yield _inspect(directory, name, max_bytes)[0]

    return len(names), reports()


def _list(directory: Path, suffix: str = SUFFIX) -> list[str]:
    """Sorted names of the entries of ``directory`` ending in ``suffix``."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entry.name for entry in entries if entry.name.endswith(suffix))
    except OSError as exc:
        raise SessionReadError(
            f"cannot read the folder {directory}: {exc.strerror or exc}",
            path=directory,
            errno=exc.errno,
        ) from exc


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
    ``would migrate`` (dry run), ``unchanged`` (already current) or ``skipped``
    (a problem file, left untouched). A file is yielded as migrated only after the
    folder fsync that makes its rename durable; a batch of up to ``batch_size``
    files shares one fsync. Each rewrite holds the session's lock and re-reads
    the file under it, so a live writer's newer save is never overwritten. With
    ``backup``, the old bytes are copied there (durably) before the rewrite.
    Raises ``SessionReadError`` when the folder cannot be listed and
    ``SessionWriteError`` when a rewrite fails (files yielded before stay migrated).
    """
    names = _list(directory)
    store = SessionStore(directory, max_bytes=max_bytes, durable=durable)

    def run() -> Iterator[tuple[FileReport, str]]:
        pending: list[FileReport] = []
        try:
            for name in names:
                report, _ = _inspect(directory, name, max_bytes)
                if report.status not in (NEEDS_MIGRATION, REPAIRABLE):
                    yield report, ("unchanged" if report.status == CURRENT else "skipped")
                    continue
                if dry_run:
                    yield report, "would migrate"
                    continue
                assert report.session_id is not None  # loadable files have ids
                if _rewrite(store, report.session_id, backup, durable=durable):
                    pending.append(report)
                else:
                    yield report, "unchanged"
                if len(pending) >= batch_size:
                    _sync(directory, durable=durable)
                    yield from ((done, "migrated") for done in pending)
                    pending = []
        finally:
            # Even on Ctrl-C or an error, make what was renamed durable before the
            # caller hears about it.
            if pending:
                _sync(directory, durable=durable)
        yield from ((done, "migrated") for done in pending)

    return len(names), run()


def _rewrite(store: SessionStore, session_id: str, backup: Path | None, *, durable: bool) -> bool:
    """Rewrite one file under its lock; False when it no longer needs it."""
    backend = store.backend
    with backend.lock(session_id):
        path = store.path_of(session_id)
        data = backend.read(session_id, max_bytes=store.max_bytes)
        if data is None:
            return False
        decoded = decode_document(data, session_id=session_id, path=path)
        if not decoded.needs_rewrite:
            return False
        if backup is not None:
            _backup(backup, path.name, data)
        try:
            write_atomic(
                store.directory,
                path.name,
                encode(decoded.session),
                durable=durable,
                sync_directory=False,
            )
        except OSError as exc:
            raise SessionWriteError(
                f"session {session_id!r}: could not rewrite {path}: {exc.strerror or exc}; "
                "the old file is intact",
                session_id=session_id,
                path=path,
                errno=exc.errno,
            ) from exc
    return True


def _backup(folder: Path, name: str, data: bytes) -> None:
    try:
        make_directory(folder)
        target = name
        existing = folder / target
        if existing.exists():
            if existing.read_bytes() == data:
                return
            target = f"{name}.{time.time_ns()}"
        write_atomic(folder, target, data)
    except OSError as exc:
        raise SessionWriteError(
            f"could not back up {name} into {folder}: {exc.strerror or exc}; nothing rewritten",
            path=folder / name,
            errno=exc.errno,
        ) from exc


def _sync(directory: Path, *, durable: bool) -> None:
    if durable:
        fsync_directory(directory)


@dataclass(frozen=True)
class Debris:
    """Something ``doctor`` found: a stale temp file, a stray lock file or a corrupt file."""

    kind: str
    """``stale-temp``, ``fresh-temp``, ``stray-lock`` or ``corrupt``."""
    path: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        """A plain dict for ``--json`` output."""
        return asdict(self)


def find_debris(
    directory: Path, *, grace_seconds: float = 3600.0, now: float | None = None
) -> Iterator[Debris]:
    """Yield what crashed writers and damage left in ``directory``. Reads only.

    Temp files count only with the store's own names; those younger than
    ``grace_seconds`` belong to a writer that may still be running (``fresh-temp``).
    Raises ``SessionReadError`` when the folder cannot be listed.
    """
    now = time.time() if now is None else now
    for name in _list(directory, suffix=""):
        path = directory / name
        match = TEMP_NAME.match(name)
        if match and match["target"].endswith(SUFFIX):
            try:
                age = now - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            kind = "stale-temp" if age >= grace_seconds else "fresh-temp"
            yield Debris(kind, str(path), f"temp file of an interrupted save, {age:.0f} s old")
        elif name.endswith(SUFFIX):
            report, _ = _inspect(directory, name, DEFAULT_MAX_BYTES)
            if report.status == CORRUPT:
                yield Debris("corrupt", str(path), report.detail)
    lock_dir = directory / LOCK_DIR_NAME
    if lock_dir.is_dir():
        for name in sorted(os.listdir(lock_dir)):
            match = _STRIPE_NAME.match(name)
            if not match or int(match[1]) >= STRIPES:
                yield Debris(
                    "stray-lock", str(lock_dir / name), "not a lock file sessionstore uses"
                )


def remove_debris(item: Debris) -> str:
    """Fix one finding: remove a stale temp or stray lock file, quarantine a corrupt file.

    Returns what was done. Never deletes a session file. Raises ``OSError``.
    """
    path = Path(item.path)
    if item.kind in ("stale-temp", "stray-lock"):
        path.unlink(missing_ok=True)
        fsync_directory(path.parent)
        return "removed"
    if item.kind == "corrupt":
        return f"moved to {quarantine(path)}"
    return "left alone"


def quarantine(path: Path, *, clock: Callable[[], float] = time.time) -> Path:
    """Move ``path`` into ``<folder>/.quarantine/`` with a UTC timestamp in its name.

    The bytes are kept as they are. Raises ``OSError``.
    """
    folder = path.parent / QUARANTINE_DIR_NAME
    make_directory(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    target = folder / f"{path.name}.{stamp}"
    counter = 1
    while target.exists():
        target = folder / f"{path.name}.{stamp}.{counter}"
        counter += 1
    os.rename(path, target)
    fsync_directory(folder)
    fsync_directory(path.parent)
    return target


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
