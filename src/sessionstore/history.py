"""The models of every schema version, the old ones frozen, for JSON Schemas and tests.

Not imported by ``import sessionstore``: loading never needs an old model (the
codec migrates plain dicts and validates once with the current one).
Frozen history: never change an old class; add a new version instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from sessionstore.models import StoredSession

__all__ = ["MODELS", "SessionV1"]


class SessionV1(BaseModel):
    """Schema version 1: the original module's format. Four keys; ``schema_version``
    absent or 1. Other keys were ignored by the original; sessionstore keeps them
    in ``metadata`` when it migrates such a document (see ``migrations``)."""

    model_config = ConfigDict(frozen=True, extra="allow", title="Session, schema version 1")

    schema_version: Literal[1] = 1
    session_id: StrictStr
    messages: tuple[StrictStr, ...]
    input_tokens: StrictInt
    output_tokens: StrictInt


MODELS: dict[int, type[object]] = {1: SessionV1, 2: StoredSession}
"""The model of every schema version, oldest first."""
