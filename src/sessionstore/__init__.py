"""sessionstore: LLM-agent sessions as validated, schema-versioned JSON documents.

Every write is atomic and durable; every load validates, and migrates older
schema versions in memory; newer versions are refused, never half-read.

Importing the package loads only what saving and loading need (start-up is measured
by ``benchmarks/bench_import.py``); the command line, maintenance, PostgreSQL, the
JSON Schemas, the models of older versions and the test kit load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionstore.codec import decode, encode
from sessionstore.errors import (
    CommitUnknownError,
    ConflictError,
    CorruptSessionError,
    InvalidSessionIdDeleteError,
    InvalidSessionIdError,
    InvalidSessionIdLoadError,
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
from sessionstore.ids import is_valid_session_id, validate_session_id
from sessionstore.models import CURRENT_SCHEMA_VERSION, StoredSession
from sessionstore.store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SESSION_DIR,
    BackendSessionStore,
    MemorySessionStore,
    SessionStore,
    delete_session,
    list_sessions,
    load_session,
    save_session,
    session_exists,
)

if TYPE_CHECKING:
    from sessionstore.appendlog import AppendResult
    from sessionstore.asyncpostgres import AsyncPostgresSessionStore
    from sessionstore.asyncstore import AsyncMemorySessionStore, AsyncSessionStore

__version__ = "0.2.0"

_LAZY = {
    "AppendResult": "sessionstore.appendlog",
    "AsyncSessionStore": "sessionstore.asyncstore",
    "AsyncMemorySessionStore": "sessionstore.asyncstore",
    "AsyncPostgresSessionStore": "sessionstore.asyncpostgres",
}
"""Names loaded on first use: the append log's policy, and the async API (asyncio; the
PostgreSQL one needs the postgres extra), which saving and loading do not need."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'sessionstore' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SESSION_DIR",
    "AppendResult",
    "AsyncMemorySessionStore",
    "AsyncPostgresSessionStore",
    "AsyncSessionStore",
    "BackendSessionStore",
    "CommitUnknownError",
    "ConflictError",
    "CorruptSessionError",
    "InvalidSessionIdDeleteError",
    "InvalidSessionIdError",
    "InvalidSessionIdLoadError",
    "LockTimeoutError",
    "MemorySessionStore",
    "NotARegularFileError",
    "SchemaVersionError",
    "SessionDeleteError",
    "SessionNotFoundError",
    "SessionReadError",
    "SessionRefusedError",
    "SessionStore",
    "SessionStoreError",
    "SessionTooLargeError",
    "SessionWriteError",
    "StoredSession",
    "TransientDeleteError",
    "TransientError",
    "__version__",
    "decode",
    "delete_session",
    "encode",
    "is_valid_session_id",
    "list_sessions",
    "load_session",
    "save_session",
    "session_exists",
    "validate_session_id",
]
