"""The public surface: what ``import sessionstore`` promises."""

from __future__ import annotations

import importlib.metadata
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
    "AppendResult",
    "AsyncMemorySessionStore",
    "AsyncPostgresSessionStore",
    "AsyncSessionStore",
    "BackendSessionStore",
    "CURRENT_SCHEMA_VERSION",
    "CommitUnknownError",
    "ConflictError",
    "CorruptSessionError",
    "DEFAULT_MAX_BYTES",
    "InvalidSessionIdDeleteError",
    "InvalidSessionIdError",
    "InvalidSessionIdLoadError",
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


def test_current_schema_version_is_three() -> None:
    assert sessionstore.CURRENT_SCHEMA_VERSION == 3


def test_package_ships_type_information() -> None:
    assert (Path(sessionstore.__file__).parent / "py.typed").is_file()


IMPORTED_BY_THE_PACKAGE = {
    "sessionstore",
    "sessionstore.atomic",
    "sessionstore.backends",
    "sessionstore.backends.base",
    "sessionstore.backends.filesystem",
    "sessionstore.backends.memory",
    "sessionstore.codec",
    "sessionstore.errors",
    "sessionstore.ids",
    "sessionstore.locking",
    "sessionstore.migrations",
    "sessionstore.models",
    "sessionstore.records",
    "sessionstore.store",
}
"""What ``import sessionstore`` loads of its own: what saving and loading need, no more.

Start-up is measured by benchmarks/bench_import.py (goal: within 1.1x of a module that
defines one Pydantic model); adding a module here is a decision to measure first.
"""

DEFERRED = {
    "sessionstore.appendlog": "the append log's policy, loaded by the first append",
    "sessionstore.asyncstore": "the async API",
    "sessionstore.asyncpostgres": "the async PostgreSQL store",
    "greenlet": "the async PostgreSQL store's bridge",
    "asyncio": "only the async API needs it",
    "sessionstore.history": "the models of older schema versions",
    "sessionstore.schemas": "JSON Schema generation and the shipped schemas",
    "sessionstore.cli": "the command line",
    "sessionstore.__main__": "python -m sessionstore",
    "sessionstore.maintenance": "inspect, migrate, doctor, copy",
    "sessionstore.postgres": "the PostgreSQL store",
    "sessionstore.backends.postgres": "the PostgreSQL backend",
    "sessionstore.testing": "the test kit",
    "psycopg": "the postgres extra",
    "psycopg_pool": "the postgres extra",
    "hypothesis": "the testing extra",
    "pytest": "the testing extra",
    "argparse": "only the command line parses arguments",
    "tqdm": "the command's progress bar, drawn only on a terminal",
}
"""Modules ``import sessionstore`` must not load, and why they are not needed then."""


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_loads_only_what_saving_and_loading_need() -> None:
    loaded = _modules_after("import sessionstore")
    assert {name for name in loaded if name.startswith("sessionstore")} == IMPORTED_BY_THE_PACKAGE
    deferred = {
        name
        for name in DEFERRED
        if any(module == name or module.startswith(f"{name}.") for module in loaded)
    }
    assert not deferred, f"import sessionstore loaded {sorted(deferred)}"


def test_the_deferred_modules_are_real_and_load_on_use() -> None:
    """Guards the test above against names that no longer exist (it would pass vacuously)."""
    loaded = _modules_after(
        "import sessionstore.cli, sessionstore.history, sessionstore.testing.conformance, "
        "sessionstore.postgres, sessionstore.asyncstore, sessionstore.asyncpostgres"
    )
    ours = {name for name in DEFERRED if name.startswith("sessionstore")}
    assert ours - loaded == {"sessionstore.__main__"}
    assert {"argparse", "hypothesis", "psycopg", "greenlet"} <= loaded


def test_version_is_the_installed_distribution_version() -> None:
    """One place for the version: hatch reads ``__version__`` into the distribution."""
    assert sessionstore.__version__ == importlib.metadata.version("sessionstore")
