"""The exception tree of sessionstore.

Every class refines the builtin it resembles, so code written against the seed
(``except KeyError``, ``except OSError``) keeps working::

    SessionStoreError(Exception)
    ├── SessionNotFoundError(KeyError)     no such session
    ├── InvalidSessionIdError(ValueError)  refused before any filesystem call
    ├── CorruptSessionError(ValueError)    the stored document is not a usable session
    │   └── SchemaVersionError             written by a newer sessionstore
    ├── ConflictError                      ``if_match`` or ``create`` lost a race
    ├── LockTimeoutError(TimeoutError)     a session lock was not acquired in time
    ├── SessionReadError(OSError)          the stored document could not be read
    ├── SessionWriteError(OSError)         a save failed; the old document is intact
    └── SessionDeleteError(OSError)        the session exists but could not be removed

Every error carries ``session_id`` and ``path`` (the file, or a description of
where the document lives for other backends; either may be ``None``) and
survives pickling. This module imports nothing from the package.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "ConflictError",
    "CorruptSessionError",
    "InvalidSessionIdError",
    "LockTimeoutError",
    "SchemaVersionError",
    "SessionDeleteError",
    "SessionNotFoundError",
    "SessionReadError",
    "SessionStoreError",
    "SessionWriteError",
]


def _rebuild(cls: type[SessionStoreError], kwargs: dict[str, Any]) -> SessionStoreError:
    return cls(**kwargs)


class SessionStoreError(Exception):
    """Root of every error sessionstore raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        path: object = None,
    ) -> None:
        super().__init__(message)
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
    """No session with this id exists in the store."""

    # KeyError.__str__ would wrap the message in quotes; SessionStoreError's does not.
    __str__ = SessionStoreError.__str__


class InvalidSessionIdError(SessionStoreError, ValueError):
    """The session id breaks the id rules; nothing was read or written."""


class CorruptSessionError(SessionStoreError, ValueError):
    """The stored document exists but is not a usable session.

    The library never replaces, repairs or deletes such a document on its own.
    """


class SchemaVersionError(CorruptSessionError):
    """The document was written by a newer sessionstore; it was not read further."""

    def __init__(
        self,
        message: str,
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


class ConflictError(SessionStoreError):
    """A conditional write found another version (``if_match``) or an existing id (``create``).

    Nothing was written.
    """


class LockTimeoutError(SessionStoreError, TimeoutError):
    """The per-session lock could not be acquired within the store's lock timeout."""


class _OSErrorMixin(SessionStoreError, OSError):
    """Shared plumbing of the errors that are also ``OSError`` and keep ``errno``."""

    def __init__(
        self,
        message: str,
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


class SessionReadError(_OSErrorMixin):
    """The stored document exists but reading it failed (permissions, I/O error)."""


class SessionWriteError(_OSErrorMixin):
    """A save failed. Unless the message says the rename already happened, the old
    document is byte-for-byte intact and no temporary file is left behind."""


class SessionDeleteError(_OSErrorMixin):
    """The session exists but could not be removed (permissions, I/O error, a directory).

    The original ``OSError`` is the ``__cause__``. The caller may retry or escalate.
    """
