"""The public surface: what ``import sessionstore`` promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sessionstore

SEED_API = {
    "StoredSession",
    "SessionNotFoundError",
    "SessionDeleteError",
    "DEFAULT_SESSION_DIR",
    "save_session",
    "load_session",
    "list_sessions",
    "session_exists",
    "delete_session",
}


PUBLIC = SEED_API | {
    "BackendSessionStore",
    "CURRENT_SCHEMA_VERSION",
    "CommitUnknownError",
    "ConflictError",
    "CorruptSessionError",
    "DEFAULT_MAX_BYTES",
    "InvalidSessionIdDeleteError",
    "InvalidSessionIdError",
    "LockTimeoutError",
    "MemorySessionStore",
    "NotARegularFileError",
    "SchemaVersionError",
    "SessionReadError",
    "SessionRefusedError",
    "SessionStore",
    "SessionStoreError",
    "SessionTooLargeError",
    "SessionWriteError",
    "TransientDeleteError",
    "TransientError",
    "__version__",
    "decode",
    "encode",
    "is_valid_session_id",
    "validate_session_id",
}


def test_all_is_pinned_and_importable() -> None:
    """Adding or removing a public name is a decision: update PUBLIC and the CHANGELOG."""
    assert len(sessionstore.__all__) == len(set(sessionstore.__all__))
    assert set(sessionstore.__all__) == PUBLIC
    for name in sessionstore.__all__:
        assert hasattr(sessionstore, name), name


def test_seed_api_is_still_exported() -> None:
    assert set(sessionstore.__all__) >= SEED_API
    assert Path(".port_sessions") == sessionstore.DEFAULT_SESSION_DIR
    assert issubclass(sessionstore.SessionNotFoundError, KeyError)
    assert issubclass(sessionstore.SessionDeleteError, OSError)


def test_current_schema_version_is_two() -> None:
    assert sessionstore.CURRENT_SCHEMA_VERSION == 2


def test_package_ships_type_information() -> None:
    assert (Path(sessionstore.__file__).parent / "py.typed").is_file()


def test_importing_the_package_does_not_import_optional_dependencies() -> None:
    code = "import sys, sessionstore; print(sorted({'psycopg', 'hypothesis'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
