"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from sessionstore import StoredSession


def unvalidated(**fields: Any) -> StoredSession:
    """A ``StoredSession`` built around validation, as a careless caller could build one."""
    session = object.__new__(StoredSession)
    for name, value in fields.items():
        object.__setattr__(session, name, value)
    defaults: dict[str, Any] = {
        "created_at": None,
        "updated_at": None,
        "metadata": {},
        "schema_version": 2,
    }
    for name, value in defaults.items():
        if name not in fields:
            object.__setattr__(session, name, value)
    return session
