"""Maintenance behind the CLI: inspect every file, migrate (up or down), rename, find debris.

Nothing here prints; the CLI turns the records into text or JSON. Everything
streams one file at a time (only the sorted list of names is held), so a folder
of 100,000 sessions never sits in memory at once.

The folder's layout (which names are sessions, temp files, lock files, where the
quarantine is) belongs to ``FileSystemBackend``: this module asks it, and every
destructive step (a migrate rewrite, a rename, a quarantine, a restore, a temp or
lock file removal) is a backend method that takes the session's lock, looks again
under it and acts only on a regular file with one of the store's own names.

Versions are generic over the registry in ``migrations``: ``convert`` lifts a
document to the current version with the up-steps, or lowers it to any older
version with the down-steps, and says what the older version cannot hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from xxhash import xxh3_64_hexdigest

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
    classify_name,
    describe_mode,
    quarantined_session_id,
)
from sessionstore.codec import DecodedSession, decode_document, encode, encode_folded
from sessionstore.errors import (
    ConflictError,
    CorruptSessionError,
    NotARegularFileError,
    SchemaVersionError,
    SessionNotFoundError,
    SessionReadError,
    SessionRefusedError,
    SessionStoreError,
    SessionTooLargeError,
    SessionWriteError,
)
from sessionstore.ids import is_valid_session_id
from sessionstore.migrations import Document, downgrade
from sessionstore.models import CURRENT_SCHEMA_VERSION, SEED_FIELDS, StoredSession
from sessionstore.store import BackendSessionStore

__all__ = [
    "CORRUPT",
    "CURRENT",
    "FRESH_TEMP",
    "INVALID_NAME",
    "LEFT_ALONE",
    "LOADABLE",
    "NEEDS_MIGRATION",
    "NOT_FOUND",
    "NOT_REGULAR",
    "PROBLEMS",
    "QUARANTINE_DIR_NAME",
    "RENAMED_FROM_KEY",
    "REPAIRABLE",
    "STALE_TEMP",
    "STRAY_LOCK",
    "TOO_LARGE",
    "TOO_NEW",
    "TORN_TAIL",
    "UNREADABLE",
    "UNSAFE_FOLDER",
    "Compaction",
    "Conversion",
    "Debris",
    "FileReport",
    "Quarantined",
    "compact_folder",
    "compact_store",
    "convert",
    "copy_store",
    "encode_version",
    "find_debris",
    "find_store_problems",
    "inspect_folder",
    "inspect_store",
    "list_quarantine",
    "migrate_folder",
    "migrate_store",
    "remove_debris",
    "rename_invalid",
    "restore_quarantined",
    "valid_id_for",
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
NOT_FOUND = "not-found"
"""Status of an id asked for by name (``validate ID``) that has no file or row."""

LOADABLE = frozenset({CURRENT, NEEDS_MIGRATION, REPAIRABLE})
"""Statuses of files that load."""
PROBLEMS = frozenset(
    {CORRUPT, TOO_NEW, TOO_LARGE, INVALID_NAME, NOT_REGULAR, UNREADABLE, NOT_FOUND}
)
"""Statuses of files that do not load; migrate and the library leave them untouched.
Only ``corrupt`` files are ever quarantined (by ``doctor --fix``): a too-large, too-new
or special file is not damaged."""

RENAMED_FROM_KEY = "sessionstore_renamed_from"
"""The ``metadata`` key where a renamed file keeps its old name and id (``--rename``)."""


@dataclass(frozen=True)
class FileReport:
    """What one ``*.json`` file (or row) is. ``detail`` is short: it never repeats the
    id or the path. The keys of ``as_json`` are stable."""

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
    loses: tuple[str, ...] = ()
    """Fields a migrate to an older version cannot keep (``--to``)."""
    new_id: str | None = None
    """The id an invalid-name file gets (``--rename-invalid``)."""
    records: int | None = None
    """Append records after the snapshot (not folded yet), when the file loads."""
    torn_bytes: int | None = None
    """Bytes at the end in no complete line (an append that never finished; loads
    ignore them, ``doctor --fix`` cuts them), when the file loads."""

    def as_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        out = asdict(self)
        out["loses"] = list(self.loses)
        return out


def _inspect(backend: FileSystemBackend, entry: Entry) -> tuple[FileReport, bytes | None]:
    name = entry.name
    try:
        info = backend.stat_entry(name)
    except SessionReadError as exc:
        return FileReport(name, UNREADABLE, detail=_strerror(exc)), None
    if info is None:
        return FileReport(name, NOT_FOUND, entry.session_id, detail="no such file"), None
    base: dict[str, Any] = {"size": info.st_size, "modified": info.st_mtime}
    session_id = entry.session_id
    if entry.kind != SESSION or session_id is None:
        stem = name[: -len(".json")] if name.endswith(".json") else name
        detail = f"{stem!r} is not a valid session id"
        return FileReport(name, INVALID_NAME, detail=detail, **base), None
    if not stat.S_ISREG(info.st_mode):
        detail = f"is {describe_mode(info.st_mode)}, not a regular file"
        return FileReport(name, NOT_REGULAR, session_id, detail=detail, **base), None
    try:
        data = backend.read(session_id, max_bytes=backend.max_bytes)
    except SessionTooLargeError as exc:
        return FileReport(name, TOO_LARGE, session_id, detail=_too_large(exc), **base), None
    except NotARegularFileError as exc:
        detail = str(exc).rsplit(": ", 1)[-1]
        return FileReport(name, NOT_REGULAR, session_id, detail=detail, **base), None
    except SessionReadError as exc:
        return FileReport(name, UNREADABLE, session_id, detail=_strerror(exc), **base), None
    if data is None:
        return FileReport(name, NOT_FOUND, session_id, detail="no such file"), None
    status, detail, decoded = _classify(data, session_id, backend.directory / name)
    if decoded is None:
        return FileReport(name, status, session_id, detail=detail, **base), None
    return _loaded_report(name, decoded, base), data


def _strerror(exc: SessionStoreError) -> str:
    reason = getattr(exc, "strerror", None)
    return f"cannot read it: {reason}" if reason else str(exc)


def _too_large(exc: SessionTooLargeError) -> str:
    return f"{exc.size} bytes, over --max-bytes {exc.max_bytes}; not read"


def _too_new(exc: SchemaVersionError) -> str:
    return (
        f"schema_version {exc.found_version}: written by a newer sessionstore "
        f"(this one reads up to {exc.supported_version})"
    )


def _classify(data: bytes, session_id: str, path: object) -> tuple[str, str, DecodedSession | None]:
    """``(status, detail, decoded)`` of a document's bytes; ``decoded`` when it loads."""
    try:
        decoded = decode_document(data, session_id=session_id, path=path)
    except SchemaVersionError as exc:
        return TOO_NEW, _too_new(exc), None
    except CorruptSessionError as exc:
        return CORRUPT, exc.detail, None
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
    if decoded.torn_bytes:
        torn = (
            f"torn tail of {decoded.torn_bytes} bytes: an append that never finished "
            "(loads ignore it; doctor --fix cuts it)"
        )
        detail = f"{detail}; {torn}" if detail else torn
    return FileReport(
        name,
        status,
        session.session_id,
        decoded.source_version,
        len(session.messages),
        session.input_tokens,
        session.output_tokens,
        detail=detail,
        records=decoded.records,
        torn_bytes=decoded.torn_bytes,
        **base,
    )


def _json_files(backend: FileSystemBackend, ids: Iterable[str] | None = None) -> list[Entry]:
    """Every ``*.json`` name of the folder (sessions and invalid names), sorted; or,
    with ``ids``, the entries of those sessions (present or not), in the order given."""
    if ids is not None:
        return [classify_name(f"{session_id}.json") for session_id in ids]
    return [e for e in backend.scan() if e.kind in (SESSION, _INVALID_NAME_ENTRY)]


def inspect_folder(
    directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, ids: Iterable[str] | None = None
) -> tuple[int, Iterator[FileReport]]:
    """How many ``*.json`` files ``directory`` has, and a report of each, in name order.

    With ``ids`` (valid session ids), only those sessions, in that order; one with no
    file is ``not-found``. Files over ``max_bytes`` are reported ``too-large`` without
    being read. Reads only; never writes. Raises ``SessionReadError`` when the folder
    cannot be listed.
    """
    backend = FileSystemBackend(directory, max_bytes=max_bytes)
    entries = _json_files(backend, ids)
    return len(entries), (_inspect(backend, entry)[0] for entry in entries)


# --- converting between versions ------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """What migrating one document to a version gives."""

    data: bytes | None
    """The new bytes, or None when the document is already as it should be."""
    loses: tuple[str, ...]
    """Field paths the target version cannot hold (a downgrade); empty otherwise."""
    decoded: DecodedSession


def encode_version(doc: Document, version: int) -> bytes:
    """The bytes of a document of an older ``version``, as that version's writer made them.

    Version 1 is what the original module wrote: ``json.dumps(doc, indent=2)``,
    ASCII-escaped (it read files in the locale's encoding), no final newline. Later
    versions are written like ``encode``: orjson, indented by 2, a final newline.
    """
    if version == 1:
        return json.dumps(doc, indent=2).encode("ascii")
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def convert(
    data: bytes,
    *,
    session_id: str | None,
    to_version: int = CURRENT_SCHEMA_VERSION,
    path: object = None,
) -> Conversion:
    """Migrate the document ``data`` to ``to_version``, in memory.

    To the current version: the new bytes when the stored ones are older or
    repairable. To an older version: the document is decoded (and validated) as
    the current version, then lowered with the down-steps; ``loses`` names every
    field the older version cannot hold. A document already at ``to_version`` is
    left as it is (``data`` None). The result is decoded again before it is
    returned, and must give back the same session (less what ``loses`` names).
    Raises ``CorruptSessionError`` / ``SchemaVersionError`` for a document that
    does not load, and ``ValueError`` for a version this sessionstore does not know.
    """
    if not 1 <= to_version <= CURRENT_SCHEMA_VERSION:
        msg = (
            f"schema version {to_version} is not one this sessionstore knows "
            f"(1 to {CURRENT_SCHEMA_VERSION})"
        )
        raise ValueError(msg)
    decoded = decode_document(data, session_id=session_id, path=path)
    if to_version == CURRENT_SCHEMA_VERSION:
        new = encode(decoded.session) if decoded.needs_rewrite else None
        return Conversion(new, (), decoded)
    if decoded.source_version == to_version:
        return Conversion(None, (), decoded)
    current = orjson.loads(encode(decoded.session))
    old, loses = downgrade(current, CURRENT_SCHEMA_VERSION, to_version)
    new = encode_version(old, to_version)
    back = decode_document(new, session_id=session_id, path=path).session
    kept = back == decoded.session if not loses else _seed(back) == _seed(decoded.session)
    if not kept:  # a bug in a down-step, never in the data: refuse to write
        msg = f"the version-{to_version} document of {path} does not read back as the session"
        raise RuntimeError(msg)
    return Conversion(new, loses, decoded)


def _seed(session: StoredSession) -> tuple[object, ...]:
    return tuple(getattr(session, name) for name in SEED_FIELDS)


# --- migrate a folder ------------------------------------------------------------------


def migrate_folder(
    directory: Path,
    *,
    dry_run: bool = False,
    backup: Path | None = None,
    batch_size: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
    durable: bool = True,
    ids: Iterable[str] | None = None,
    to_version: int = CURRENT_SCHEMA_VERSION,
    allow_lossy: bool = False,
    rename_invalid: bool = False,
    keep_owner: bool = True,
) -> tuple[int, Iterator[tuple[FileReport, str]]]:
    """Rewrite every file that is not at ``to_version`` (the current one by default).

    Yields ``(report, action)`` per file in name order (or in the order of ``ids``),
    where action is ``migrated``, ``would-migrate`` (dry run), ``unchanged`` (already
    at the version, or found so when re-read under its lock), ``refused`` (a
    downgrade would lose the fields in ``report.loses`` and ``allow_lossy`` is
    false), ``renamed`` / ``would-rename`` (``rename_invalid``: an invalid-name file
    given ``report.new_id``), ``conflict`` (changed into something else while
    migrating: run again) or ``skipped`` (a problem file, left untouched).

    A file is yielded as migrated only after the folder flush that makes its rename
    durable; a batch of up to ``batch_size`` files shares one flush. Each rewrite
    holds the session's lock and re-reads the file under it, so a live writer's newer
    save is never overwritten, and keeps the file's mode and (``keep_owner``) owner.
    With ``backup``, the old bytes are copied there (durably) before the rewrite;
    nothing in ``backup`` is ever followed if it is a link or opened if it is not a
    regular file, and a link at ``backup`` itself is refused. Raises
    ``SessionReadError`` when the folder cannot be listed, ``SessionWriteError`` when
    a rewrite or a backup fails (files yielded before stay migrated) and
    ``LockTimeoutError``.
    """
    backend = FileSystemBackend(directory, durable=durable, max_bytes=max_bytes)
    entries = _json_files(backend, ids)

    def run() -> Iterator[tuple[FileReport, str]]:
        pending: list[FileReport] = []
        backups = _BackupFolder(backup) if backup is not None else None
        taken: set[str] = set()
        try:
            for entry in entries:
                report, data = _inspect(backend, entry)
                if report.status == INVALID_NAME and rename_invalid:
                    yield _rename(backend, report, taken, dry_run=dry_run, keep_owner=keep_owner)
                    continue
                if data is None or report.session_id is None:
                    yield report, ("unchanged" if report.status == CURRENT else "skipped")
                    continue
                session_id = report.session_id
                plan = convert(data, session_id=session_id, to_version=to_version)
                report = dataclasses.replace(report, loses=plan.loses)
                if plan.data is None:
                    yield report, "unchanged"
                    continue
                if len(plan.data) > backend.max_bytes:
                    yield _oversized(report, len(plan.data), backend.max_bytes), "skipped"
                    continue
                if plan.loses and not allow_lossy:
                    yield report, "refused"
                    continue
                if dry_run:
                    yield report, "would-migrate"
                    continue
                outcome = _rewrite(
                    backend, session_id, to_version, backups, allow_lossy, keep_owner
                )
                if outcome is None:
                    pending.append(report)
                else:
                    yield outcome
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


def _oversized(report: FileReport, size: int, limit: int) -> FileReport:
    return dataclasses.replace(report, detail=f"would be {size} bytes, over --max-bytes {limit}")


def _rewrite(  # noqa: PLR0917  # one private call site
    backend: FileSystemBackend,
    session_id: str,
    to_version: int,
    backups: _BackupFolder | None,
    allow_lossy: bool,
    keep_owner: bool,
) -> tuple[FileReport, str] | None:
    """Rewrite one file under its lock; None when done, else what it is now and why not."""
    path = backend.location(session_id)

    def migrated(data: bytes) -> bytes | None:
        try:
            plan = convert(data, session_id=session_id, to_version=to_version, path=path)
        except SessionStoreError:
            return None  # changed into something migrate does not rewrite: left as it is
        if plan.loses and not allow_lossy:
            return None  # changed into something that would lose more: left as it is
        return plan.data

    def back_up(data: bytes, info: os.stat_result) -> None:
        if backups is not None:
            backups.save(path.name, data, info)

    try:
        if backend.rewrite(session_id, migrated, before_write=back_up, keep_owner=keep_owner):
            return None
    except (SessionRefusedError, CorruptSessionError, SchemaVersionError):
        pass  # replaced by a link, a FIFO or a larger file since it was inspected
    # Not rewritten: say what the file is now, looked at again.
    report, data = _inspect(backend, classify_name(path.name))
    if data is not None:
        try:
            if convert(data, session_id=session_id, to_version=to_version).data is None:
                return report, "unchanged"
        except SessionStoreError:
            pass
    if report.status in PROBLEMS:
        return report, "skipped"
    detail = "changed by another writer while migrating; run migrate again"
    return dataclasses.replace(report, detail=detail), "conflict"


# --- invalid names: a valid id for files the original module wrote --------------------

_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")


def valid_id_for(name: str, taken: Callable[[str], bool]) -> str:
    """A valid session id for the file ``name`` whose stem is not one, deterministic and
    free: ``taken(id)`` says whether another session has that id already.

    Letters lose their accents (``café`` -> ``cafe``), every other run of characters
    that ids cannot hold becomes ``_`` (``my.session`` -> ``my_session``); when that
    is empty, not valid or taken, the first 8 hex digits of a digest of the name are
    appended (``my_session-1a2b3c4d``), so different names never get the same id.
    """
    stem = name[: -len(".json")] if name.endswith(".json") else name
    raw = os.fsencode(stem)
    text = unicodedata.normalize("NFKD", raw.decode("utf-8", "replace"))
    base = _NOT_ID.sub("_", text.encode("ascii", "ignore").decode("ascii")).strip("_-")
    if is_valid_session_id(base) and not taken(base):
        return base
    digest = xxh3_64_hexdigest(raw)
    for length in (8, 16):
        candidate = f"{base[:119] or 'session'}-{digest[:length]}"
        if is_valid_session_id(candidate) and not taken(candidate):
            return candidate
    msg = f"no free session id for {name!r}"
    raise ValueError(msg)


def _shown(name: str) -> str:
    """``name`` as text a session may hold: bytes that are not UTF-8 written as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _renamed_from(backend: FileSystemBackend, session_id: str) -> str | None:
    """The old file name a session records in ``metadata`` (it was renamed), if any."""
    try:
        data = backend.read(session_id, max_bytes=backend.max_bytes)
        if data is None:
            return None
        record = decode_document(data, session_id=session_id).session.metadata.get(RENAMED_FROM_KEY)
    except SessionStoreError:
        return None
    return record.get("file") if isinstance(record, dict) else None


def _rename(
    backend: FileSystemBackend,
    report: FileReport,
    taken: set[str],
    *,
    dry_run: bool,
    keep_owner: bool,
) -> tuple[FileReport, str]:
    """Give one invalid-name file a valid id (or say what it would get)."""
    name = report.name
    found = backend.read_entry(name)
    if found is None:
        return report, "skipped"
    try:
        decoded = decode_document(found[0])
    except SchemaVersionError as exc:
        return dataclasses.replace(report, detail=f"{report.detail}; {_too_new(exc)}"), "skipped"
    except CorruptSessionError as exc:
        return dataclasses.replace(report, detail=f"{report.detail}; {exc.detail}"), "skipped"

    def is_taken(candidate: str) -> bool:
        if candidate in taken:
            return True
        # An earlier run that stopped half-way gave this very file the id: reuse it.
        return backend.exists(candidate) and _renamed_from(backend, candidate) != _shown(name)

    new_id = valid_id_for(name, is_taken)
    taken.add(new_id)
    session = decoded.session
    report = dataclasses.replace(
        report,
        new_id=new_id,
        schema_version=decoded.source_version,
        messages=len(session.messages),
        input_tokens=session.input_tokens,
        output_tokens=session.output_tokens,
        session_id=None,
        detail=f"{report.detail}; its id is now {new_id!r} (the old name is kept in "
        f"metadata[{RENAMED_FROM_KEY!r}])",
    )
    if dry_run:
        return report, "would-rename"

    def renamed(data: bytes) -> bytes | None:
        try:
            current = decode_document(data).session
        except SessionStoreError:
            return None
        record = {"file": _shown(name), "session_id": current.session_id}
        metadata = {**current.metadata, RENAMED_FROM_KEY: record}
        return encode(dataclasses.replace(current, session_id=new_id, metadata=metadata))

    try:
        done = backend.adopt(name, new_id, renamed, keep_owner=keep_owner)
    except ConflictError as exc:
        return dataclasses.replace(report, detail=str(exc)), "conflict"
    return report, ("renamed" if done is not None else "skipped")


def rename_invalid(
    directory: Path,
    name: str,
    *,
    dry_run: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep_owner: bool = True,
) -> tuple[FileReport, str]:
    """Give the invalid-name file ``name`` a valid id (see ``valid_id_for``): its session,
    migrated to the current version, with the new id and its old name and id kept in
    ``metadata[RENAMED_FROM_KEY]``, then the old file removed. Returns the report
    (``new_id`` set) and ``renamed``, ``would-rename``, ``skipped`` (it does not load)
    or ``conflict``. Raises ``SessionWriteError`` and ``LockTimeoutError``.
    """
    backend = FileSystemBackend(directory, max_bytes=max_bytes)
    report, _ = _inspect(backend, classify_name(name))
    if report.status != INVALID_NAME:
        return report, "skipped"
    return _rename(backend, report, set(), dry_run=dry_run, keep_owner=keep_owner)


class _BackupFolder:
    """The ``--backup`` folder: opened once without following a link, used only
    through its descriptor, and only regular files in it are ever read."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def save(self, name: str, data: bytes, like: os.stat_result | None = None) -> None:
        """Keep ``data`` as ``name`` (or ``name.<ns>`` when that name holds something
        else), durably, with the mode and (where allowed) the owner of ``like``. A
        copy already there with the same bytes is kept as is. Raises
        ``SessionWriteError``: nothing was rewritten then."""
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
            write_atomic(
                self.folder,
                target,
                data,
                dir_fd=self._fd,
                like=like,
                keep_owner=like is not None and os.geteuid() == 0,
            )
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
TORN_TAIL = "torn-tail"
"""A session file that loads but ends in bytes of no complete line: an append that
never finished (it was never acknowledged). ``doctor --fix`` cuts it, keeping the
bytes in ``.quarantine/<id>.json.<time>.torn-tail``."""
TORN_TAIL_SUFFIX = ".torn-tail"

LEFT_ALONE = {
    FRESH_TEMP: "a save may still be writing it",
    TOO_NEW: "never touched: upgrade sessionstore to read it",
    TOO_LARGE: "over --max-bytes, not damaged: use the application's max_bytes",
    NOT_REGULAR: "not a file sessionstore wrote: remove or replace it by hand",
    UNREADABLE: "check its permissions",
    INVALID_NAME: "doctor --rename gives it a valid id",
    UNSAFE_FOLDER: "remove it by hand",
}
"""Why doctor leaves a finding of each kind as it is (and what to do instead)."""


@dataclass(frozen=True)
class Debris:
    """Something ``doctor`` found. ``as_json`` has the stable keys ``kind``, ``path``,
    ``detail``; the other fields say where, for ``remove_debris``."""

    kind: str
    """``stale-temp``, ``fresh-temp``, ``stray-lock``, ``torn-tail``, ``unsafe-folder``
    (a link or a file at ``.locks`` or ``.quarantine``: never fixed by the doctor), or the status
    of a file that does not load: ``corrupt``, ``too-new``, ``too-large``,
    ``invalid-name``, ``not-a-regular-file``, ``unreadable``."""
    path: str
    detail: str
    directory: str = ""
    """The store's folder."""
    name: str = ""
    """The temp file's name, the file name of an invalid-name file, or the session id
    of any other file or of a stray lock."""
    cutoff: float = 0.0
    """For temp files: stale when last modified at or before this time."""
    schema_version: int | None = None
    """The version of a too-new file."""

    def as_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {"kind": self.kind, "path": self.path, "detail": self.detail}


def find_debris(
    directory: Path,
    *,
    grace_seconds: float = 3600.0,
    now: float | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Debris]:
    """Yield what crashed writers and damage left in ``directory``, and every file
    that does not load. Reads only.

    Temp files count only with the store's own names; those modified less than
    ``grace_seconds`` ago may belong to a writer still running (``fresh-temp``).
    Lock files count when their session has no file (``stray-lock``). Files are
    classified with ``max_bytes``: a larger file is ``too-large``, not corrupt.
    Raises ``SessionReadError`` when the folder cannot be listed.
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
        elif entry.kind == _INVALID_NAME_ENTRY:
            report, _ = _inspect(backend, entry)
            if report.status == INVALID_NAME:
                detail = f"{report.detail}; {_loads_as(backend, entry.name)}"
                yield Debris(INVALID_NAME, str(path), detail, where, entry.name)
        elif entry.kind == SESSION:
            report, _ = _inspect(backend, entry)
            if report.status in PROBLEMS and report.status != NOT_FOUND:
                yield Debris(report.status, str(path), report.detail, where, entry.session_id or "")
            elif report.torn_bytes:
                detail = (
                    f"{report.torn_bytes} bytes after its last complete line: an append "
                    "that never finished (never acknowledged; loads ignore it)"
                )
                yield Debris(TORN_TAIL, str(path), detail, where, entry.session_id or "")
    if ".locks" in unsafe:
        return
    for session_id in backend.lock_files():
        if f"{session_id}.json" not in names:
            path = backend.directory / ".locks" / f"{session_id}.lock"
            detail = f"lock file of session {session_id!r}, which has no file"
            yield Debris(STRAY_LOCK, str(path), detail, where, session_id)


def _loads_as(backend: FileSystemBackend, name: str) -> str:
    try:
        found = backend.read_entry(name)
    except SessionReadError as exc:
        return _strerror(exc)
    if found is None:
        return "not a regular file of at most --max-bytes"
    try:
        decoded = decode_document(found[0])
    except SchemaVersionError as exc:
        return _too_new(exc)
    except CorruptSessionError as exc:
        return f"does not load: {exc.detail}"
    return f"holds a version-{decoded.source_version} session: doctor --rename gives it a valid id"


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
    ``unsafe-folder``, ``too-new``, ``too-large``, ``not-a-regular-file`` or
    ``unreadable`` finding (``left alone: WHY``; invalid names: ``rename_invalid``).
    Errors are returned as ``failed: ...`` (not fixed).
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
        if item.kind == TORN_TAIL:
            cut = backend.cut_torn_tail(item.name, _torn_bytes_of(item.name, backend), clock=clock)
            if cut is not None:
                return f"cut: {cut[1]} bytes, kept in {cut[0]}", True
            return "left alone: re-read under its lock, it has no torn tail", True
    except SessionStoreError as exc:
        return f"failed: {exc}", False
    why = LEFT_ALONE.get(item.kind, "remove it by hand")
    return f"left alone: {why}", item.kind == FRESH_TEMP


def _torn_bytes_of(session_id: str, backend: FileSystemBackend) -> Callable[[bytes], int]:
    """How many torn bytes a file's bytes end in, when they load (0 when they do not:
    a damaged file is quarantined whole, never cut)."""
    path = backend.location(session_id)

    def torn(data: bytes) -> int:
        decoded = _classify(data, session_id, path)[2]
        return 0 if decoded is None else decoded.torn_bytes

    return torn


@dataclass(frozen=True)
class Quarantined:
    """A file ``doctor --fix`` moved into ``.quarantine/``."""

    name: str
    """Its name there: ``<id>.json.<UTC time>``."""
    session_id: str | None
    path: str
    size: int
    modified: float


def list_quarantine(directory: Path) -> list[Quarantined]:
    """Every regular file in ``directory/.quarantine/``, by name. Reads only.

    Raises ``SessionReadError`` (also for a link or a file at ``.quarantine``).
    """
    backend = FileSystemBackend(directory)
    where = backend.directory / QUARANTINE_DIR_NAME
    return [
        Quarantined(
            name, quarantined_session_id(name), str(where / name), info.st_size, info.st_mtime
        )
        for name, info in backend.quarantined()
    ]


def restore_quarantined(directory: Path, name: str) -> Path | None:
    """Move ``.quarantine/<name>`` back to ``<id>.json`` (see ``FileSystemBackend.restore``).

    Returns the restored path, or None when there is no such quarantined file.
    Raises ``ValueError`` for a name that is not a quarantined file's,
    ``ConflictError`` when the session has a file again, ``SessionWriteError``.
    A torn tail cut by ``doctor --fix`` (``<id>.json.<time>.torn-tail``) is not a
    session: ``ValueError``.
    """
    if name.endswith(TORN_TAIL_SUFFIX) or f"{TORN_TAIL_SUFFIX}." in name:
        msg = (
            f"{name!r} is the torn tail of an append that never finished, not a session: "
            "it cannot be restored as one (its bytes are kept for inspection)"
        )
        raise ValueError(msg)
    return FileSystemBackend(directory).restore(name)


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
            return FileReport(name, NOT_FOUND, session_id, detail="no such row"), None
        decoded = decode_document(fetched, session_id=session_id, path=where)
    except SchemaVersionError as exc:
        return FileReport(name, TOO_NEW, session_id, detail=_too_new(exc)), None
    except SessionTooLargeError as exc:
        return FileReport(name, TOO_LARGE, session_id, detail=_too_large(exc)), None
    except CorruptSessionError as exc:
        return FileReport(name, CORRUPT, session_id, detail=exc.detail), None
    except SessionReadError as exc:
        return FileReport(name, UNREADABLE, session_id, detail=str(exc)), None
    return _loaded_report(name, decoded, {"size": len(fetched)}), fetched


def _store_ids(store: BackendSessionStore, ids: Iterable[str] | None) -> list[str]:
    return store.list() if ids is None else list(ids)


def inspect_store(
    store: BackendSessionStore, *, ids: Iterable[str] | None = None
) -> tuple[int, Iterator[FileReport]]:
    """Like ``inspect_folder``, for the documents of any store (by id order, or the
    order of ``ids``; an id with no document is ``not-found``). Reads only.

    A failure to read a whole batch (the server went away) raises ``SessionReadError``.
    """
    wanted = _store_ids(store, ids)
    return len(wanted), (
        _inspect_stored(store, i, fetched)[0] for i, fetched in _fetch(store, wanted)
    )


def find_store_problems(store: BackendSessionStore) -> Iterator[Debris]:
    """``doctor`` on any store: every document that does not load, as a finding whose
    ``name`` is its id. Reads only; there is nothing else to find (no temp or lock files)."""
    _, reports = inspect_store(store)
    for report in reports:
        if report.status in PROBLEMS:
            yield Debris(report.status, report.name, report.detail, name=report.session_id or "")


def migrate_store(
    store: BackendSessionStore,
    *,
    dry_run: bool = False,
    ids: Iterable[str] | None = None,
    to_version: int = CURRENT_SCHEMA_VERSION,
    allow_lossy: bool = False,
) -> tuple[int, Iterator[tuple[FileReport, str]]]:
    """Like ``migrate_folder``, for any store: each rewrite is a compare-and-swap on the
    etag that was read, so a concurrent save is never overwritten. A document changed
    meanwhile is read again: ``unchanged`` when it is now at ``to_version``, else
    ``conflict`` (not migrated: run again), never counted as done."""
    wanted = _store_ids(store, ids)

    def outcome(session_id: str, fetched: _Fetched) -> tuple[FileReport, str]:
        report, data = _inspect_stored(store, session_id, fetched)
        if data is None:
            return report, ("unchanged" if report.status == CURRENT else "skipped")
        where = store.backend.location(session_id)
        plan = convert(data, session_id=session_id, to_version=to_version, path=where)
        report = dataclasses.replace(report, loses=plan.loses)
        if plan.data is None:
            return report, "unchanged"
        if len(plan.data) > store.max_bytes:
            return _oversized(report, len(plan.data), store.max_bytes), "skipped"
        if plan.loses and not allow_lossy:
            return report, "refused"
        if dry_run:
            return report, "would-migrate"
        try:
            if to_version == CURRENT_SCHEMA_VERSION:
                store.save(plan.decoded.session, if_match=content_etag(data))
            else:
                store.backend.write(session_id, plan.data, if_match=content_etag(data))
        except ConflictError:
            return _after_conflict(store, session_id, to_version)
        return report, "migrated"

    def run() -> Iterator[tuple[FileReport, str]]:
        for session_id, fetched in _fetch(store, wanted):
            yield outcome(session_id, fetched)

    return len(wanted), run()


def _after_conflict(
    store: BackendSessionStore, session_id: str, to_version: int
) -> tuple[FileReport, str]:
    """What a document that changed under a migrate's compare-and-swap is now."""
    try:
        fetched: _Fetched = store.backend.read(session_id, max_bytes=store.max_bytes)
    except SessionStoreError as exc:
        fetched = exc
    report, data = _inspect_stored(store, session_id, fetched)
    if data is not None:
        with contextlib.suppress(SessionStoreError):
            if convert(data, session_id=session_id, to_version=to_version).data is None:
                return report, "unchanged"
    if report.status in PROBLEMS and report.status != NOT_FOUND:
        return report, "skipped"
    detail = "changed by another writer while migrating; not migrated: run migrate again"
    return dataclasses.replace(report, detail=detail), "conflict"


def copy_store(
    source: BackendSessionStore,
    target: BackendSessionStore,
    *,
    ids: Iterable[str] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> Iterator[tuple[str, str, str]]:
    """Copy every session of ``source`` (or those of ``ids``) into ``target``, migrated
    to the current version. Reads the source only.

    Yields ``(session_id, action, detail)``. ``copied``: the target had no such
    session; it was created, read back and found equal. ``identical``: the target
    already holds an equal session (nothing written). ``refused``: the target holds a
    different session (or one that does not load); it is left as it is unless
    ``overwrite``, which replaces it (``overwritten``). With ``dry_run`` nothing is
    written: ``would-copy`` / ``would-overwrite``. ``failed``: the source does not
    load, or the copy does not read back equal. Every write is a compare-and-swap
    on what was read in the target, so a session saved there meanwhile is never lost.
    """
    for session_id in _store_ids(source, ids):
        try:
            decoded = source.load_document(session_id)
        except SessionStoreError as exc:
            yield session_id, "failed", f"does not load from the source: {exc}"
            continue
        try:
            yield (session_id, *_copy_one(decoded, target, overwrite=overwrite, dry_run=dry_run))
        except SessionStoreError as exc:
            yield session_id, "failed", str(exc)


def _copy_one(
    decoded: DecodedSession, target: BackendSessionStore, *, overwrite: bool, dry_run: bool
) -> tuple[str, str]:
    session = decoded.session
    session_id = session.session_id
    # A session with append records or a fold's store line is copied folded, with its
    # etag and its append keys: a retried append is still exactly-once in the target,
    # and an etag read from the source still matches there.
    folded = (
        target._check_size(session, encode_folded(session, etag=decoded.etag, keys=decoded.keys))
        if decoded.records or decoded.folded_store
        else None
    )
    etag: str | None = None
    existing: StoredSession | SessionStoreError | None
    existing_keys: object = None
    try:
        found = target.load_document(session_id)
        existing, etag, existing_keys = found.session, found.etag, found.keys
    except SessionNotFoundError:
        existing = None
    except (CorruptSessionError, SchemaVersionError, SessionRefusedError) as exc:
        raw = target.backend.read(session_id, max_bytes=target.max_bytes)
        etag = None if raw is None else content_etag(raw)
        existing = exc
    if existing == session and existing_keys == decoded.keys:
        return "identical", ""
    if existing is not None:
        difference = (
            f"it does not load ({type(existing).__name__})"
            if isinstance(existing, SessionStoreError)
            else _difference(existing, session)
        )
        if not overwrite:
            return "refused", (
                f"the target holds a different session ({difference}); it was left as it "
                "is: --overwrite replaces it"
            )
        if dry_run:
            return "would-overwrite", f"would replace a different session ({difference})"
        try:
            if folded is None:
                target.save(session, if_match=etag)
            else:
                target.backend.write(session_id, folded, if_match=etag)
        except ConflictError:
            return "refused", "the target changed during the copy; it was left as it is"
        return _verified(session, target, "overwritten", f"replaced ({difference})")
    if dry_run:
        return "would-copy", ""
    try:
        if folded is None:
            target.create(session)
        else:
            target.backend.create(session_id, folded)
    except ConflictError:
        return "refused", "the target got a session of this id during the copy; left as it is"
    return _verified(session, target, "copied", "")


def _verified(
    session: StoredSession, target: BackendSessionStore, action: str, detail: str
) -> tuple[str, str]:
    if target.load(session.session_id) != session:
        return "failed", "the copy does not read back equal"
    return action, detail


def _difference(found: StoredSession, wanted: StoredSession) -> str:
    """Which fields of the target's session differ from the source's, for messages."""
    parts = []
    for name in StoredSession.__dataclass_fields__:
        have, want = getattr(found, name), getattr(wanted, name)
        if have == want:
            continue
        if name == "messages":
            parts.append(f"{len(have)} messages there, {len(want)} here")
        elif isinstance(have, int | str) or have is None:
            parts.append(f"{name} {have} there, {want} here")
        else:
            parts.append(f"{name} differs")
    if len(parts) > 2:
        parts[2:] = [f"{len(parts) - 2} more field(s)"]
    return "; ".join(parts) or "differs"


# --- compact: fold append records into the snapshot -----------------------------------


@dataclass(frozen=True)
class Compaction:
    """What ``compact`` did to one session file or row."""

    report: FileReport
    """The session as found under its lock, before: ``records`` is how many were
    folded, ``size`` the bytes before."""
    action: str
    """``compacted``, ``would-compact`` (dry run), ``unchanged`` (nothing to fold),
    ``skipped`` (a problem file or row, left untouched) or ``failed``."""
    size_after: int | None = None
    """The bytes after (``compacted``, ``unchanged``)."""
    kept_tail: str | None = None
    """Where a torn tail went (a folder's ``.quarantine/``), when one was cut."""


def compact_folder(
    directory: Path,
    *,
    dry_run: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    ids: Iterable[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[int, Iterator[Compaction]]:
    """Fold the append records of every session file (or those of ``ids``), in name
    order: how many files, and what was done to each.

    Each fold holds the session's lock and looks at the file again under it. A torn
    tail is first cut with its bytes kept in ``.quarantine/`` (as ``doctor --fix``
    does), then ``store.compact`` folds (the session and its etag stay the same).
    A file of an older version has no records: ``unchanged`` (``migrate`` rewrites
    it). Problem files (corrupt, too new, links...) are ``skipped``, never touched.
    Raises ``SessionReadError`` when the folder cannot be listed.
    """
    backend = FileSystemBackend(directory, max_bytes=max_bytes)
    store = BackendSessionStore(backend, max_bytes=max_bytes)
    entries = _json_files(backend, ids)

    def run() -> Iterator[Compaction]:
        for entry in entries:
            report, data = _inspect(backend, entry)
            if data is None or report.session_id is None:
                yield _not_compacted(report)
                continue

            def look(entry: Entry = entry) -> FileReport:
                return _inspect(backend, entry)[0]

            yield _compact(store, report, look, dry_run=dry_run, backend=backend, clock=clock)

    return len(entries), run()


def compact_store(
    store: BackendSessionStore,
    *,
    dry_run: bool = False,
    ids: Iterable[str] | None = None,
) -> tuple[int, Iterator[Compaction]]:
    """Like ``compact_folder``, for any store (a torn tail is dropped by the fold: a
    store without files has no quarantine)."""
    wanted = _store_ids(store, ids)

    def run() -> Iterator[Compaction]:
        for session_id, fetched in _fetch(store, wanted):
            report, data = _inspect_stored(store, session_id, fetched)
            if data is None:
                yield _not_compacted(report)
                continue

            def look(session_id: str = session_id) -> FileReport:
                try:
                    found: _Fetched = store.backend.read(session_id, max_bytes=store.max_bytes)
                except SessionStoreError as exc:
                    found = exc
                return _inspect_stored(store, session_id, found)[0]

            yield _compact(store, report, look, dry_run=dry_run, backend=None, clock=time.time)

    return len(wanted), run()


def _not_compacted(report: FileReport) -> Compaction:
    if report.status in LOADABLE:
        return Compaction(report, "unchanged", report.size)
    return Compaction(report, "skipped")


def _foldable(report: FileReport) -> bool:
    return report.schema_version == CURRENT_SCHEMA_VERSION and bool(
        report.records or report.torn_bytes
    )


def _nothing_to_fold(report: FileReport) -> Compaction:
    if report.schema_version == CURRENT_SCHEMA_VERSION:
        detail = "nothing to fold"
    else:
        detail = f"version {report.schema_version}: no records (sessionstore migrate rewrites it)"
    return Compaction(dataclasses.replace(report, detail=detail), "unchanged", report.size)


def _compact(
    store: BackendSessionStore,
    report: FileReport,
    look: Callable[[], FileReport],
    *,
    dry_run: bool,
    backend: FileSystemBackend | None,
    clock: Callable[[], float],
) -> Compaction:
    """Fold one session that loaded when inspected; ``look()`` inspects it again."""
    if not _foldable(report):
        return _nothing_to_fold(report)
    if dry_run:
        parts = [f"would fold {report.records} record(s)"]
        if report.torn_bytes:
            where = ", kept in .quarantine/" if backend is not None else ""
            parts.append(f"would cut a torn tail of {report.torn_bytes} bytes{where}")
        return Compaction(dataclasses.replace(report, detail="; ".join(parts)), "would-compact")
    session_id = report.session_id
    assert session_id is not None  # only loaded sessions come here
    kept: tuple[Path, int] | None = None
    try:
        with store.backend.lock(session_id):
            now = look()
            if now.status not in LOADABLE:
                return Compaction(now, "skipped")
            if not _foldable(now):
                return _nothing_to_fold(now)
            if now.torn_bytes and backend is not None:
                kept = backend.cut_torn_tail(
                    session_id, _torn_bytes_of(session_id, backend), clock=clock
                )
            store.compact(session_id)
            after = store.backend.read(session_id, max_bytes=store.max_bytes)
    except SessionStoreError as exc:
        return Compaction(dataclasses.replace(report, detail=str(exc)), "failed")
    parts = [f"folded {now.records} record(s)"]
    if kept is not None:
        parts.append(f"cut a torn tail of {kept[1]} bytes, kept in {kept[0]}")
    elif now.torn_bytes:
        parts.append(f"dropped a torn tail of {now.torn_bytes} bytes (never acknowledged)")
    return Compaction(
        dataclasses.replace(now, detail="; ".join(parts)),
        "compacted",
        None if after is None else len(after),
        None if kept is None else str(kept[0]),
    )
