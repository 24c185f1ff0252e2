"""Every error: its builtin base, its message, its attributes, and a pickle round trip."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from sessionstore import (
    ConflictError,
    CorruptSessionError,
    InvalidSessionIdError,
    LockTimeoutError,
    SchemaVersionError,
    SessionDeleteError,
    SessionNotFoundError,
    SessionReadError,
    SessionStoreError,
    SessionWriteError,
)

PATH = Path("/store/s1.json")

CASES = [
    (SessionNotFoundError("session 's1' not found", session_id="s1", path=PATH), KeyError),
    (InvalidSessionIdError("invalid session id '../x'", session_id="../x"), ValueError),
    (
        CorruptSessionError("session 's1' in /store/s1.json: bad", session_id="s1", path=PATH),
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
        CorruptSessionError,
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
    for name in ("errno", "strerror", "found_version", "supported_version"):
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
