"""The session store: ids, validation, migration and concurrency over any backend,
plus the seed-compatible functions.

Policy lives here once for every backend: ids are checked before a backend is
touched, every document is encoded and decoded by ``codec``, and read-modify-write
runs under the backend's per-session lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessionstore.backends.base import DEFAULT_MAX_BYTES, Backend, content_etag
from sessionstore.backends.filesystem import FileSystemBackend
from sessionstore.backends.memory import MemoryBackend
from sessionstore.codec import DecodedSession, decode, decode_document, encode, encode_folded
from sessionstore.errors import (
    CommitUnknownError,
    InvalidSessionIdDeleteError,
    InvalidSessionIdError,
    InvalidSessionIdLoadError,
    SessionDeleteError,
    SessionNotFoundError,
    SessionStoreError,
    SessionTooLargeError,
    TransientDeleteError,
    TransientError,
)
from sessionstore.ids import validate_session_id
from sessionstore.models import MAX_TOKENS, StoredSession, check_text, session_adapter

if TYPE_CHECKING:
    from sessionstore.appendlog import AppendResult, Target

from sessionstore.records import MAX_KEY_LENGTH, KeyResult

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SESSION_DIR",
    "BackendSessionStore",
    "MemorySessionStore",
    "SessionStore",
    "delete_session",
    "list_sessions",
    "load_session",
    "save_session",
    "session_exists",
]

DEFAULT_SESSION_DIR = Path(".port_sessions")
"""The folder the seed-compatible functions use when given none."""


class _KeyedAppends:
    """How many keyed appends this process has started (any store, any session): an
    ``update`` whose function made one re-reads the keys before it writes."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1


_KEYED = _KeyedAppends()


class BackendSessionStore:
    """Validated, versioned sessions over any ``Backend``.

    ``SessionStore`` (files), ``MemorySessionStore`` and the PostgreSQL store are
    this class over their backends; use it directly to run your own backend.
    """

    def __init__(self, backend: Backend, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if type(max_bytes) is not int or max_bytes < 1:
            msg = f"max_bytes must be a positive int, not {max_bytes!r}"
            raise ValueError(msg)
        self.backend = backend
        self.max_bytes = max_bytes

    def save(self, session: StoredSession, *, if_match: str | None = None) -> str:
        """Store ``session`` atomically (replacing any earlier version) and return its etag.

        With ``if_match``, store only if the stored document still has that etag (from
        ``load_with_etag`` or an earlier ``save``), else raise ``ConflictError`` and
        write nothing. The session is validated again first (``ValueError`` for a value
        that cannot be stored, nothing written). Raises ``InvalidSessionIdError``
        before touching storage, ``SessionTooLargeError`` when the document would be
        over ``max_bytes``, and ``SessionWriteError`` when the write fails (the old
        version is then intact).
        """
        session = _validated(session)
        data = self._encode(session)
        with _naming_the_etag(content_etag(data)):
            return self.backend.write(session.session_id, data, if_match=if_match)

    def create(self, session: StoredSession) -> str:
        """Store ``session`` only if no session has its id; return the etag.

        Raises ``ConflictError`` (nothing written) when the id is taken, and what
        ``save`` raises. After a ``CommitUnknownError``, the session exists if its etag
        is the error's ``etag``: a retried create would then be a conflict.
        """
        session = _validated(session)
        data = self._encode(session)
        with _naming_the_etag(content_etag(data)):
            return self.backend.create(session.session_id, data)

    def _encode(self, session: StoredSession) -> bytes:
        return self._check_size(session, encode(session))

    def _check_size(self, session: StoredSession, data: bytes) -> bytes:
        if len(data) > self.max_bytes:
            location = self.backend.location(session.session_id)
            raise SessionTooLargeError(
                f"session {session.session_id!r} would be {len(data)} bytes, over the store's "
                f"max_bytes of {max_bytes_text(self.max_bytes)}; nothing was written to {location}",
                session_id=session.session_id,
                path=location,
                size=len(data),
                max_bytes=self.max_bytes,
            )
        return data

    def load(self, session_id: str) -> StoredSession:
        """Return the stored session, migrated in memory to the current schema version.

        Never writes. Raises ``SessionNotFoundError`` (``InvalidSessionIdLoadError``,
        also an ``InvalidSessionIdError``, for an id no session can have),
        ``CorruptSessionError`` (damaged), ``SchemaVersionError`` (newer),
        ``SessionTooLargeError`` / ``NotARegularFileError`` (refused) or ``SessionReadError``.
        """
        # No etag here: digesting the bytes costs more than decoding them.
        return self._load_bytes(session_id)[0]

    def load_with_etag(self, session_id: str) -> tuple[StoredSession, str]:
        """Like ``load``, and also return the etag to pass to ``save(if_match=...)``
        or ``append(if_match=...)``."""
        decoded = self._decode(session_id)
        return decoded.session, decoded.etag

    def _load_bytes(self, session_id: str) -> tuple[StoredSession, bytes]:
        validate_session_id(session_id, error=InvalidSessionIdLoadError)
        data = self._read(session_id)
        location = self.backend.location(session_id)
        return decode(data, session_id=session_id, path=location), data

    def load_document(self, session_id: str) -> DecodedSession:
        """The decoded document, for tools: the session with its etag, the version it was
        stored in, its append records and torn tail, and the append keys it remembers.
        Raises what ``load`` raises."""
        return self._decode(session_id)

    def _decode(self, session_id: str) -> DecodedSession:
        validate_session_id(session_id, error=InvalidSessionIdLoadError)
        data = self._read(session_id)
        return decode_document(data, session_id=session_id, path=self.backend.location(session_id))

    def exists(self, session_id: str) -> bool:
        """True when a document is stored under ``session_id``, whether or not it loads."""
        validate_session_id(session_id)
        return self.backend.exists(session_id)

    def delete(self, session_id: str) -> bool:
        """Remove the session. True if this call removed it, False if it did not exist.

        Idempotent and race-safe. Every failure is a ``SessionDeleteError`` (what the
        original module's callers catch): ``InvalidSessionIdDeleteError`` (also an
        ``InvalidSessionIdError``) for an id the store cannot hold, and
        ``TransientDeleteError`` (also a ``TransientError``) for I/O errors, lock
        timeouts and lost connections.
        """
        validate_session_id(session_id, error=InvalidSessionIdDeleteError)
        with delete_errors(session_id):
            return self.backend.delete(session_id)

    def list(self) -> list[str]:
        """The ids of every stored session, sorted. Temp and lock files never appear."""
        return self.backend.list_ids()

    def update(
        self,
        session_id: str,
        fn: Callable[[StoredSession], StoredSession],
    ) -> StoredSession:
        """Read, apply ``fn``, write: under the session's exclusive lock, so no update is lost.

        ``fn`` gets the current session and returns the new one (same id). Returns what
        was stored. Raises ``SessionNotFoundError`` if there is no such session,
        ``LockTimeoutError`` if the lock is not had in time, and whatever ``fn`` raises
        (nothing is written then).
        """
        validate_session_id(session_id)
        with self.backend.lock(session_id):
            decoded = self._decode(session_id)
            keyed_before = _KEYED.count
            new = fn(decoded.session)
            if not isinstance(new, StoredSession):
                msg = f"update function returned {type(new).__name__}, not StoredSession"
                raise TypeError(msg)
            new = _validated(new)
            if new.session_id != session_id:
                msg = (
                    f"update function changed the session id from {session_id!r} "
                    f"to {new.session_id!r}"
                )
                raise ValueError(msg)
            # The append keys stay remembered, so a retried append is still exactly-once:
            # with those of fn's own keyed appends whose messages new still holds.
            keys = (
                decoded.keys
                if _KEYED.count == keyed_before
                else self._keys_now(session_id, decoded, new)
            )
            data = encode_folded(new, etag=None, keys=keys) if keys else encode(new)
            self.backend.write(session_id, self._check_size(new, data))
        return new

    def _keys_now(
        self, session_id: str, before: DecodedSession, new: StoredSession
    ) -> dict[str, KeyResult]:
        """The append keys to keep when ``update`` writes ``new``, under the session's
        lock, after its function made keyed appends (the lock is re-entrant), maybe to
        this session: those remembered before, and each key added since whose append's
        messages ``new`` still holds (its first ``message_count`` messages are the
        stored ones). A key whose append ``new`` overwrites is forgotten, as ``save``
        forgets keys, so that its retry adds the messages again."""
        try:
            data = self.backend.read(session_id, max_bytes=self.max_bytes)
            if data is None or data == before.stored:
                return before.keys
            now = decode_document(data, session_id=session_id)
        except SessionStoreError:
            # fn left it unreadable or the connection broke: the write that follows
            # replaces it, or reports the failure as a write's.
            return before.keys
        stored = now.session.messages
        return {
            key: result
            for key, result in now.keys.items()
            if key in before.keys
            or new.messages[: result.message_count] == stored[: result.message_count]
        }

    def append(  # the signature: messages and five options
        self,
        session_id: str,
        messages: Iterable[str],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        key: str | None = None,
        if_match: str | None = None,
    ) -> AppendResult:
        """Append ``messages`` and add the token counts; return the new etag and totals.

        Creates the session when missing. Costs the same at any session size: one
        record line at the end of the file, written with one ``write()`` and one
        fdatasync. With ``key`` (a non-empty string of at most 256 characters), the
        append happens exactly once: a retry with the same key after a crash, a lost
        reply or a timeout adds nothing and returns the first append's result (with
        ``replayed=True``); the latest 1000 keys of a session are remembered, across
        folds and ``update`` (a ``save`` replaces the session and forgets them). With
        ``if_match``, append only if the session still has that etag, else raise
        ``ConflictError`` (nothing written; a missing session never matches). Raises
        ``TypeError``/``ValueError`` for bad arguments (nothing written),
        ``SessionTooLargeError`` when the session would pass ``max_bytes``,
        ``CommitUnknownError`` when the flush failed (retry with the same key), and
        what ``load`` and ``save`` raise.
        """
        validate_session_id(session_id)
        added = _checked_messages(messages)
        _check_token_argument("input_tokens", input_tokens)
        _check_token_argument("output_tokens", output_tokens)
        if key is not None:
            _check_key(key)
        if if_match is not None and type(if_match) is not str:
            msg = f"if_match must be an etag string or None, not {if_match!r}"
            raise TypeError(msg)
        # The append log's policy loads with the first append (import sessionstore stays lean).
        from sessionstore import appendlog  # noqa: PLC0415

        now = datetime.now(timezone.utc)
        append = appendlog.Append(added, input_tokens, output_tokens, key, now)
        if key is not None:
            _KEYED.add()
        target = self._target(session_id)
        appendlog.refuse_if_missing(target, if_match)
        return appendlog.append_session(target, append, if_match=if_match, lock=self.backend.lock)

    def compact(self, session_id: str) -> str:
        """Fold the session's append records into one snapshot; return its etag.

        The session does not change, and neither does its etag: an etag read before
        the fold still matches after it. The remembered append keys are kept. Writes
        nothing when there is nothing to fold (an older schema version is rewritten
        as the current one). Raises what ``load`` and ``save`` raise.
        """
        validate_session_id(session_id)
        from sessionstore import appendlog  # noqa: PLC0415  # see append

        target = self._target(session_id)
        if not self.backend.exists(session_id):
            # Without taking the lock, which would create the store's folders.
            raise appendlog.not_found(target)
        with self.backend.lock(session_id):
            return appendlog.fold_locked(target)

    def _target(self, session_id: str) -> Target:
        from sessionstore.appendlog import Target  # noqa: PLC0415  # see append

        return Target(self.backend, session_id, self.max_bytes, self._check_size)

    def append_messages(
        self,
        session_id: str,
        messages: Iterable[str],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> StoredSession:
        """Append ``messages`` and add the token counts, under the session's lock.

        Creates the session when missing (setting ``created_at``); always sets
        ``updated_at``. Returns what was stored. Raises ``ValueError`` for values the
        model refuses and for token counts that are not ints >= 0 (nothing written),
        and the errors of ``load`` and ``save``.
        """
        validate_session_id(session_id)
        if isinstance(messages, str | bytes):
            msg = "messages must be an iterable of strings, not a single string"
            raise TypeError(msg)
        added = tuple(messages)
        _check_token_argument("input_tokens", input_tokens)
        _check_token_argument("output_tokens", output_tokens)
        try:
            _checked_messages(added)
        except ValueError:
            self._refuse_as_the_model_does(session_id, added)
            raise
        from sessionstore import appendlog  # noqa: PLC0415  # see append

        now = datetime.now(timezone.utc)
        append = appendlog.Append(added, input_tokens, output_tokens, None, now)
        with self.backend.lock(session_id):
            # Load first: a session that cannot be loaded (damaged, too new) is refused
            # before anything is written, not after.
            if self.backend.exists(session_id):
                self.load(session_id)
            appendlog.append_locked(self._target(session_id), append, if_match=None)
            return self.load(session_id)

    def _refuse_as_the_model_does(self, session_id: str, added: tuple[object, ...]) -> None:
        """Raise the model's own ``ValidationError`` for messages it refuses, with the
        indexes they would have in the session (``append_messages``' contract)."""
        try:
            current = self.load(session_id)
        except SessionNotFoundError:
            current = StoredSession(session_id, (), 0, 0)
        every: tuple[Any, ...] = (*current.messages, *added)
        StoredSession(
            session_id=session_id,
            messages=every,
            input_tokens=current.input_tokens,
            output_tokens=current.output_tokens,
            created_at=current.created_at,
            updated_at=current.updated_at,
        )

    def _read(self, session_id: str) -> bytes:
        data = self.backend.read(session_id, max_bytes=self.max_bytes)
        if data is None:
            location = self.backend.location(session_id)
            raise SessionNotFoundError(
                f"session {session_id!r} not found in {self.backend.description} (no {location})",
                session_id=session_id,
                path=location,
            )
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r})"


class SessionStore(BackendSessionStore):
    """Sessions as ``<directory>/<id>.json`` files, one per session.

    Writes are atomic (temp file, ``os.replace``) and, with ``durable=True``, fsynced
    (file and folder) before they return. ``durable=False`` skips the fsyncs: still
    atomic for readers, but a crash or power loss may lose recent saves; use it for
    tests and caches only. Documents over ``max_bytes`` are refused on load.
    ``lock_timeout`` bounds the wait for a session's lock (``LockTimeoutError``);
    ``None`` waits without bound. The backend makes ``directory`` absolute once, so
    a later ``os.chdir`` moves nothing. Raises ``ValueError`` for a ``lock_timeout``
    that is not a finite number >= 0 or ``None``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_SESSION_DIR,
        *,
        durable: bool = True,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float | None = 30.0,
    ) -> None:
        self.directory = Path(directory)
        self.durable = durable
        backend = FileSystemBackend(
            self.directory, durable=durable, lock_timeout=lock_timeout, max_bytes=max_bytes
        )
        super().__init__(backend, max_bytes=max_bytes)

    def path_of(self, session_id: str) -> Path:
        """The file that holds ``session_id``. Raises ``InvalidSessionIdError``."""
        return self.directory / f"{validate_session_id(session_id)}.json"


class MemorySessionStore(BackendSessionStore):
    """Sessions held in memory, with the same validation and errors; for tests and caches."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(MemoryBackend(), max_bytes=max_bytes)


def _checked_messages(messages: Iterable[str]) -> tuple[str, ...]:
    """``messages`` as a tuple of valid text; ``TypeError``/``ValueError`` otherwise."""
    if isinstance(messages, str | bytes):
        msg = "messages must be an iterable of strings, not a single string"
        raise TypeError(msg)
    added = tuple(messages)
    for index, message in enumerate(added):
        if type(message) is not str:
            msg = f"messages[{index}] is a {type(message).__name__}, not a str"
            raise ValueError(msg)
        check_text(message, f"messages[{index}]")
    return added


def _check_key(key: object) -> None:
    if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH:
        msg = f"key must be a non-empty str of at most {MAX_KEY_LENGTH} characters, not {key!r}"
        raise ValueError(msg)
    check_text(key, "key")


_FIELD_NAMES = tuple(StoredSession.__dataclass_fields__)


def _validated(session: StoredSession) -> StoredSession:
    """A freshly validated copy of ``session``, whose id follows the id rules.

    Whatever built the instance (``object.__new__``, a later change to its
    ``metadata`` dict, a subclass), what gets written is checked here. A subclass's
    own fields would be lost, so they are refused. Raises ``TypeError``,
    ``ValueError`` (``pydantic.ValidationError``) or ``InvalidSessionIdError``.
    """
    if not isinstance(session, StoredSession):
        msg = f"expected a StoredSession, got {type(session).__name__}"
        raise TypeError(msg)
    fields = vars(session)
    validate_session_id(fields.get("session_id"))
    if type(session) is not StoredSession:
        extra = sorted(set(fields) - set(_FIELD_NAMES))
        if extra:
            msg = (
                f"{type(session).__name__} {fields['session_id']!r} has field(s) {extra} "
                "that a stored session cannot hold; they would be lost, so nothing was written"
            )
            raise ValueError(msg)
    return session_adapter().validate_python(
        {name: fields[name] for name in _FIELD_NAMES if name in fields}
    )


@contextmanager
def delete_errors(session_id: str) -> Iterator[None]:
    """Turn the store errors raised in the block into ``delete``'s: each is a
    ``SessionDeleteError`` (``TransientDeleteError`` for transient ones: I/O errors,
    lock timeouts, lost connections). Shared with the async delete."""
    try:
        yield
    except SessionDeleteError:
        raise
    except TransientError as exc:
        raise TransientDeleteError(
            f"could not delete session {session_id!r}: {exc}",
            session_id=session_id,
            path=exc.path,
            errno=getattr(exc, "errno", None),
        ) from exc
    except SessionStoreError as exc:
        raise SessionDeleteError(
            f"could not delete session {session_id!r}: {exc}",
            session_id=session_id,
            path=exc.path,
        ) from exc


@contextmanager
def _naming_the_etag(etag: str) -> Iterator[None]:
    """Give a ``CommitUnknownError`` the etag the session has if the write landed."""
    try:
        yield
    except CommitUnknownError as exc:
        if exc.etag is None:
            exc.etag = etag
        raise


def _check_token_argument(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        msg = f"{name} must be an int from 0 to {MAX_TOKENS}, not {value!r}"
        raise ValueError(msg)


def max_bytes_text(limit: int) -> str:
    """``limit`` for messages: bytes, and MiB where that is shorter to read."""
    if limit >= 1 << 20 and limit % (1 << 20) == 0:
        return f"{limit} bytes ({limit >> 20} MiB)"
    return f"{limit} bytes"


# Seed-compatible functions: same names, signatures and contracts as the module
# they replace. ``directory`` may also be a str. As in the seed, a falsy directory
# means DEFAULT_SESSION_DIR.


def _store(directory: str | os.PathLike[str] | None) -> SessionStore:
    return SessionStore(directory or DEFAULT_SESSION_DIR)


def save_session(session: StoredSession, directory: str | os.PathLike[str] | None = None) -> Path:
    """Save ``session`` atomically and durably; return the path of its file.

    Raises ``InvalidSessionIdError`` for a bad id and ``SessionWriteError`` on failure.
    """
    store = _store(directory)
    store.save(session)
    return store.path_of(session.session_id)


def load_session(session_id: str, directory: str | os.PathLike[str] | None = None) -> StoredSession:
    """Load a session, migrating older versions in memory. Raises ``SessionNotFoundError``
    (a ``KeyError``; also for an id no session can have, as the original did) and the
    errors of ``SessionStore.load`` for files that are there but not usable."""
    return _store(directory).load(session_id)


def list_sessions(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Sorted ids of the sessions in ``directory``; ``[]`` when the folder does not exist."""
    return _store(directory).list()


def session_exists(session_id: str, directory: str | os.PathLike[str] | None = None) -> bool:
    """True if a session file exists; False for an id no session can have.

    As the original promised, it does not raise for a bad id (``SessionStore.exists``
    does: an explicit API refuses what it cannot hold).
    """
    try:
        return _store(directory).exists(session_id)
    except InvalidSessionIdError:
        return False


def delete_session(session_id: str, directory: str | os.PathLike[str] | None = None) -> bool:
    """Delete a session: True if this call deleted it, False if it did not exist.

    Idempotent and race-safe. Raises ``SessionDeleteError`` (an ``OSError``, with the
    original error as ``__cause__``) when the file exists but cannot be removed.
    """
    return _store(directory).delete(session_id)
