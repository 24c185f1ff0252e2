"""Every error: its builtin base, its message, its attributes, and a pickle round trip."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from sessionstore import (
    CommitUnknownError,
    ConflictError,
    CorruptSessionError,
    InvalidSessionIdDeleteError,
    InvalidSessionIdError,
    LockTimeoutError,
    NotARegularFileError,
    SchemaVersionError,
    SessionDeleteError,
    SessionNotFoundError,
    SessionReadError,
    SessionRefusedError,
    SessionStoreError,
    SessionTooLargeError,
    SessionWriteError,
    TransientDeleteError,
    TransientError,
)

PATH = Path("/store/s1.json")

CASES = [
    (SessionNotFoundError("session 's1' not found", session_id="s1", path=PATH), KeyError),
    (InvalidSessionIdError("invalid session id '../x'", session_id="../x"), ValueError),
    (
        CorruptSessionError(
            "session 's1' in /store/s1.json: bad",
            session_id="s1",
            path=PATH,
            reason="not-json",
            detail="bad",
            offset=7,
        ),
        ValueError,
    ),
    (
        SchemaVersionError(
            "session 's1' too new",
            session_id="s1",
            path=PATH,
            found_version=3,
            supported_version=2,
        ),
        ValueError,
    ),
    (
        SessionTooLargeError(
            "session 's1' too large", session_id="s1", path=PATH, size=10, max_bytes=5
        ),
        SessionRefusedError,
    ),
    (NotARegularFileError("session 's1' is a FIFO", session_id="s1", path=PATH), ValueError),
    (
        CommitUnknownError(
            "session 's1' may have landed", session_id="s1", path=PATH, etag="0" * 32
        ),
        SessionWriteError,
    ),
    (
        TransientDeleteError("session 's1' lock timed out", session_id="s1", path=PATH),
        SessionDeleteError,
    ),
    (
        InvalidSessionIdDeleteError("invalid session id '../x'", session_id="../x"),
        SessionDeleteError,
    ),
    (ConflictError("session 's1' changed", session_id="s1", path=PATH), SessionStoreError),
    (LockTimeoutError("session 's1' lock", session_id="s1", path=PATH), TimeoutError),
    (
        SessionReadError("session 's1' unreadable", session_id="s1", path=PATH, errno=errno.EACCES),
        OSError,
    ),
    (
        SessionWriteError(
            "session 's1' not written", session_id="s1", path=PATH, errno=errno.ENOSPC
        ),
        OSError,
    ),
    (
        SessionDeleteError(
            "session 's1' not deleted", session_id="s1", path=PATH, errno=errno.EISDIR
        ),
        OSError,
    ),
]


@pytest.mark.parametrize(("error", "builtin"), CASES, ids=lambda c: type(c).__name__)
def test_error_subclasses_root_and_builtin(error: SessionStoreError, builtin: type) -> None:
    assert isinstance(error, SessionStoreError)
    assert isinstance(error, builtin)


@pytest.mark.parametrize(("error", "builtin"), CASES, ids=lambda c: type(c).__name__)
def test_error_message_is_plain_and_names_the_session(
    error: SessionStoreError, builtin: type
) -> None:
    assert str(error) == error.message
    assert not str(error).startswith(("'", '"')), "KeyError-style quoting must not leak"
    assert "s1" in str(error) or "../x" in str(error)


@pytest.mark.parametrize(("error", "builtin"), CASES, ids=lambda c: type(c).__name__)
def test_error_survives_pickling_with_its_attributes(
    error: SessionStoreError, builtin: type
) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.session_id == error.session_id
    assert copy.path == error.path
    assert copy.args == error.args
    for name in (
        "errno",
        "strerror",
        "found_version",
        "supported_version",
        "reason",
        "detail",
        "offset",
        "size",
        "max_bytes",
        "etag",
    ):
        assert getattr(copy, name, None) == getattr(error, name, None)


def test_os_errors_keep_errno_and_strerror() -> None:
    error = SessionWriteError("x", session_id="s1", path=PATH, errno=errno.ENOSPC)
    assert error.errno == errno.ENOSPC
    assert error.strerror == "No space left on device"
    assert error.filename == str(PATH)


def test_not_found_is_caught_by_seed_style_except_keyerror() -> None:
    with pytest.raises(KeyError) as info:
        raise SessionNotFoundError("session 's1' not found in .port_sessions", session_id="s1")
    assert str(info.value) == "session 's1' not found in .port_sessions"


@pytest.mark.parametrize(
    ("error_class", "transient"),
    [
        (LockTimeoutError, True),
        (SessionReadError, True),
        (SessionWriteError, True),
        (CommitUnknownError, True),
        (TransientDeleteError, True),
        (SessionDeleteError, False),
        (InvalidSessionIdDeleteError, False),
        (InvalidSessionIdError, False),
        (CorruptSessionError, False),
        (SchemaVersionError, False),
        (SessionTooLargeError, False),
        (NotARegularFileError, False),
        (ConflictError, False),
        (SessionNotFoundError, False),
    ],
)
def test_only_failures_worth_retrying_are_transient(
    error_class: type[SessionStoreError], transient: bool
) -> None:
    assert issubclass(error_class, TransientError) is transient


def test_newer_data_and_policy_refusals_are_not_damage() -> None:
    # doctor quarantines damage only: a newer or a too-large session is valid data.
    for error_class in (SchemaVersionError, SessionTooLargeError, NotARegularFileError):
        assert not issubclass(error_class, CorruptSessionError)


def test_invalid_id_on_delete_is_caught_by_every_handler_the_original_callers_use() -> None:
    error = InvalidSessionIdDeleteError("invalid session id '../x'", session_id="../x")
    for handler in (SessionDeleteError, InvalidSessionIdError, ValueError, OSError):
        assert isinstance(error, handler)


def test_the_original_argument_shapes_still_construct() -> None:
    # The original module's errors were a plain KeyError and OSError subclass.
    assert str(SessionNotFoundError()) == ""
    assert str(SessionNotFoundError("session 'x' not found")) == "session 'x' not found"
    error = SessionDeleteError(errno.EACCES, "Permission denied")
    assert error.errno == errno.EACCES
    assert str(error) == str(OSError(errno.EACCES, "Permission denied"))
    assert str(SessionDeleteError("could not delete")) == "could not delete"
