"""The exception tree of sessionstore.

Every class refines the builtin it resembles, so code written against the
original module (``except KeyError``, ``except OSError``, ``except ValueError``)
keeps working. The tree keeps apart what a caller acts on differently::

    SessionStoreError(Exception)
    ├── SessionNotFoundError(KeyError)        no such session
    ├── InvalidSessionIdError(ValueError)     refused before any storage call
    │   ├── InvalidSessionIdLoadError         ... on a load (also a SessionNotFoundError)
    │   └── InvalidSessionIdDeleteError       ... on the delete path (also a SessionDeleteError)
    ├── CorruptSessionError(ValueError)       the stored bytes are damaged
    ├── SchemaVersionError(ValueError)        written by a newer sessionstore: data, not damage
    ├── SessionRefusedError(ValueError)       refused by the store's policy, not damage
    │   ├── SessionTooLargeError              over ``max_bytes`` (on load or on write)
    │   └── NotARegularFileError              a link, folder, FIFO or device at the session's name
    ├── ConflictError                         ``if_match`` or ``create`` lost a race
    ├── TransientError                        the same call may succeed later: retry on this
    │   ├── LockTimeoutError(TimeoutError)    the session's lock was not had in time
    │   ├── SessionReadError(OSError)         reading failed (I/O, permissions, connection)
    │   ├── SessionWriteError(OSError)        a write failed; nothing was written
    │   │   └── CommitUnknownError            ... after it may have landed: check, then retry
    │   └── TransientDeleteError              a delete failed the same way (a SessionDeleteError)
    └── SessionDeleteError(OSError)           the session exists but could not be removed

Every error carries ``session_id`` and ``path`` (the file, or where the document
lives on other backends; either may be ``None``), names both in its message and
survives pickling. This module imports nothing from the package.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "CommitUnknownError",
    "ConflictError",
    "CorruptSessionError",
    "InvalidSessionIdDeleteError",
    "InvalidSessionIdError",
    "InvalidSessionIdLoadError",
    "LockTimeoutError",
    "NotARegularFileError",
    "SchemaVersionError",
    "SessionDeleteError",
    "SessionNotFoundError",
    "SessionReadError",
    "SessionRefusedError",
    "SessionStoreError",
    "SessionTooLargeError",
    "SessionWriteError",
    "TransientDeleteError",
    "TransientError",
]


def _rebuild(cls: type[SessionStoreError], kwargs: dict[str, Any]) -> SessionStoreError:
    return cls(**kwargs)


class SessionStoreError(Exception):
    """Root of every error sessionstore raises on purpose."""

    def __init__(
        self,
        message: str = "",
        *,
        session_id: str | None = None,
        path: object = None,
    ) -> None:
        if message:
            super().__init__(message)
        else:
            super().__init__()  # args == (), as a bare Exception() has
        self.message = message
        self.session_id = session_id
        self.path = path

    def _kwargs(self) -> dict[str, Any]:
        return {"message": self.message, "session_id": self.session_id, "path": self.path}

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the keyword arguments: the default reduce would call the
        # class with ``self.args`` only and lose the attributes (and errno).
        return (_rebuild, (type(self), self._kwargs()))

    def __str__(self) -> str:
        return self.message


class SessionNotFoundError(SessionStoreError, KeyError):
    """No session with this id exists in the store.

    Constructs like the original's (``SessionNotFoundError()`` or with one message).
    """

    # KeyError.__str__ would wrap the message in quotes; SessionStoreError's does not.
    __str__ = SessionStoreError.__str__


class InvalidSessionIdError(SessionStoreError, ValueError):
    """The session id breaks the id rules; nothing was read or written."""


class CorruptSessionError(SessionStoreError, ValueError):
    """The stored bytes exist but are damaged: not a usable session.

    ``reason`` is a short stable code (``not-json``, ``not-an-object``,
    ``bad-version``, ``invalid-fields``, ``unknown-fields``, ``id-mismatch``,
    ``bad-surrogates``, ``damaged-record``), ``detail`` the human explanation and
    ``offset`` the byte offset of the damage when it is known. The library never
    replaces, repairs or deletes such a document on its own.
    """

    def __init__(
        self,
        message: str = "",
        *,
        session_id: str | None = None,
        path: object = None,
        reason: str = "invalid",
        detail: str = "",
        offset: int | None = None,
    ) -> None:
        super().__init__(message, session_id=session_id, path=path)
        self.reason = reason
        self.detail = detail or message
        self.offset = offset

    def _kwargs(self) -> dict[str, Any]:
        return {
            **super()._kwargs(),
            "reason": self.reason,
            "detail": self.detail,
            "offset": self.offset,
        }


class SchemaVersionError(SessionStoreError, ValueError):
    """The document was written by a newer sessionstore; it was not read further.

    Newer data is not damage: upgrade sessionstore to read it. ``found_version``
    and ``supported_version`` say which versions met.
    """

    def __init__(
        self,
        message: str = "",
        *,
        session_id: str | None = None,
        path: object = None,
        found_version: object = None,
        supported_version: int | None = None,
    ) -> None:
        super().__init__(message, session_id=session_id, path=path)
        self.found_version = found_version
        self.supported_version = supported_version

    def _kwargs(self) -> dict[str, Any]:
        return {
            **super()._kwargs(),
            "found_version": self.found_version,
            "supported_version": self.supported_version,
        }


class SessionRefusedError(SessionStoreError, ValueError):
    """The store's policy refuses this document; it is not damaged.

    ``sessionstore doctor`` reports these and never quarantines them.
    """


class SessionTooLargeError(SessionRefusedError):
    """The session is larger than the store's ``max_bytes``.

    On load the document was not read; on a write nothing was written. ``size``
    is the size found (or that the write would have made) and ``max_bytes`` the limit.
    """

    def __init__(
        self,
        message: str = "",
        *,
        session_id: str | None = None,
        path: object = None,
        size: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(message, session_id=session_id, path=path)
        self.size = size
        self.max_bytes = max_bytes

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "size": self.size, "max_bytes": self.max_bytes}


class NotARegularFileError(SessionRefusedError):
    """A symbolic link, folder, FIFO, socket or device sits at the session's file name.

    sessionstore never follows or opens such an entry as a session.
    """


class ConflictError(SessionStoreError):
    """A conditional write found another version (``if_match``) or an existing id (``create``).

    Nothing was written.
    """


class TransientError(SessionStoreError):
    """The call failed for a reason that may pass: the same call may succeed if retried.

    Lock timeouts, I/O errors, a lost connection and a commit whose outcome is
    unknown (``CommitUnknownError``) share this base. A write that raised it wrote
    nothing, except ``CommitUnknownError``, after which the write may have landed.
    """


class _OSErrorMixin(SessionStoreError, OSError):
    """Shared plumbing of the errors that are also ``OSError`` and keep ``errno``."""

    def __init__(
        self,
        message: str = "",
        *,
        session_id: str | None = None,
        path: object = None,
        errno: int | None = None,
    ) -> None:
        SessionStoreError.__init__(self, message, session_id=session_id, path=path)
        self.errno = errno
        self.strerror = os.strerror(errno) if errno is not None else None
        self.filename = None if path is None else str(path)

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "errno": self.errno}

    __str__ = SessionStoreError.__str__


class LockTimeoutError(TransientError, TimeoutError):
    """The per-session lock could not be acquired within the store's ``lock_timeout``."""

    # TimeoutError.__str__ would show "[Errno None] ..."; SessionStoreError's does not.
    __str__ = SessionStoreError.__str__


class SessionReadError(_OSErrorMixin, TransientError):
    """Reading failed (permissions, an I/O error, a lost connection); ``errno`` kept."""


class SessionWriteError(_OSErrorMixin, TransientError):
    """A write failed; the old document is byte-for-byte intact and nothing was written.

    ``errno`` is kept. Its subclass ``CommitUnknownError`` is the one case where
    the write may have landed.
    """


class CommitUnknownError(SessionWriteError):
    """The write may or may not have landed: the failure came after the point of no return.

    A lost reply to a database commit, a failed flush after the rename or the
    append. The session is whole either way (the old version or the new, never a
    mix). ``etag`` is the etag the session has if this write landed: compare it with
    ``load_with_etag`` before retrying. An ``append`` with a ``key`` can simply be
    retried: the key makes it happen once.
    """

    def __init__(
        self,
        message: str = "",
        *,
        session_id: str | None = None,
        path: object = None,
        errno: int | None = None,
        etag: str | None = None,
    ) -> None:
        super().__init__(message, session_id=session_id, path=path, errno=errno)
        self.etag = etag

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "etag": self.etag}


class SessionDeleteError(_OSErrorMixin):
    """The session exists but could not be removed (permissions, I/O error, a folder).

    Constructs like the original's (``SessionDeleteError(errno, strerror)`` or one
    message). The original error, where there is one, is the ``__cause__``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if 2 <= len(args) <= 5 and type(args[0]) is int and "errno" not in kwargs:
            # The OSError shapes the original module's callers may use:
            # (errno, strerror[, filename[, winerror[, filename2]]]).
            like = OSError(*args)
            filename = args[2] if len(args) > 2 else None
            super().__init__(
                str(like),
                session_id=kwargs.get("session_id"),
                path=kwargs.get("path", filename),
                errno=like.errno,
            )
            self.args = like.args
            self.strerror, self.filename, self.filename2 = (
                like.strerror,
                like.filename,
                like.filename2,
            )
            return
        super().__init__(*args, **kwargs)


class TransientDeleteError(SessionDeleteError, TransientError):
    """A delete failed for a reason that may pass (I/O, lock timeout, lost connection)."""


class InvalidSessionIdDeleteError(InvalidSessionIdError, SessionDeleteError):
    """``delete`` was given an id the store cannot hold.

    Both an ``InvalidSessionIdError`` (a ``ValueError``) and a
    ``SessionDeleteError`` (an ``OSError``), so the original module's callers,
    who catch only ``SessionDeleteError`` around a delete, handle it too.
    """

    def __init__(
        self,
        message: str = "",
        *,
        session_id: str | None = None,
        path: object = None,
        errno: int | None = None,
    ) -> None:
        SessionDeleteError.__init__(self, message, session_id=session_id, path=path, errno=errno)


class InvalidSessionIdLoadError(InvalidSessionIdError, SessionNotFoundError):
    """A load was given an id the store cannot hold, so no session can exist under it.

    Both an ``InvalidSessionIdError`` (a ``ValueError``) and a
    ``SessionNotFoundError`` (a ``KeyError``), so the original module's callers,
    who catch ``SessionNotFoundError`` around a load, handle it as "not found" as
    the original did for such ids.
    """

    __str__ = SessionStoreError.__str__
