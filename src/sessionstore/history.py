"""The models of every schema version, the old ones frozen, for JSON Schemas and tests.

Not imported by ``import sessionstore``: loading never needs an old model (the
codec migrates plain dicts and validates once with the current one).
Frozen history: never change an old class; add a new version instead.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sessionstore.models import MAX_TOKENS
from sessionstore.records import KEY_MEMORY, MAX_KEY_LENGTH

__all__ = ["MODELS", "RECORD_MODELS", "RecordV3", "SessionV1", "SessionV2", "SessionV3"]

_Count = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]
_Etag = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")]
_Key = Annotated[StrictStr, Field(min_length=1, max_length=MAX_KEY_LENGTH)]


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


class SessionV2(BaseModel):
    # The docstring is the schema's description, as sessionstore 0.1 shipped it.
    """One stored session, schema version 2 (the current one).

    Frozen; unknown fields are refused. The first four fields are the original
    module's, in its order, so ``StoredSession("chat-1", ("hi",), 3, 0)`` and
    ``case StoredSession(sid, messages, tokens_in, tokens_out)`` work as before.
    ``dataclasses.replace`` validates its result like a new session. The hash
    covers every field but ``metadata`` (a dict), so sessions work in sets and as
    dict keys. Raises ``pydantic.ValidationError`` (a ``ValueError``) for a value
    that could not be stored and read back equal. The id itself is checked by
    the store, not here. Timestamps are kept in UTC.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", title="Session, schema version 2")

    session_id: StrictStr
    messages: tuple[StrictStr, ...]
    input_tokens: _Count
    output_tokens: _Count
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free-form JSON object for the application's own data."
    )
    schema_version: Literal[2] = 2


class StoreLineV3(BaseModel):
    """What a fold keeps in the snapshot: the etag the session had, and the append keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Store line, schema version 3")

    etag: _Etag | None = None
    digest: Annotated[
        _Etag | None,
        Field(description="XXH3-128 of the snapshot's bytes without the store line"),
    ] = None
    totals: Annotated[
        tuple[_Count, _Count, _Count] | None,
        Field(description="[message_count, input_tokens, output_tokens] of the snapshot"),
    ] = None
    keys: Annotated[
        dict[_Key, tuple[_Etag, _Count, _Count, _Count]],
        Field(
            max_length=KEY_MEMORY,
            description="Append key -> [etag, message_count, input_tokens, output_tokens] "
            "that the append with that key returned; the latest 1000 keys.",
        ),
    ] = {}


class SessionV3(SessionV2):
    """Schema version 3: the snapshot of a session file, which append records may follow
    (one JSON object per line, see ``RecordV3``). Same fields as version 2; a snapshot
    written by a fold also has ``store``."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Session, schema version 3")

    store: StoreLineV3 | None = None
    schema_version: Literal[3] = 3  # type: ignore[assignment]


class RecordV3(BaseModel):
    """One append record: one line after the snapshot of a version-3 session file."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Append record, schema version 3")

    seq: Annotated[StrictInt, Field(ge=1, description="1 for the first record after the snapshot")]
    prev: Annotated[_Etag, Field(description="etag of the file this record was appended to")]
    key: _Key | None = Field(description="the caller's idempotency key, if any")
    messages: tuple[StrictStr, ...]
    message_count: _Count
    input_tokens: _Count
    output_tokens: _Count
    updated_at: AwareDatetime
    hash: Annotated[
        _Etag, Field(description='XXH3-128 of the line up to ,"hash": with a closing brace')
    ]


MODELS: dict[int, type[object]] = {1: SessionV1, 2: SessionV2, 3: SessionV3}
"""The model of every schema version, oldest first."""

RECORD_MODELS: dict[int, type[BaseModel]] = {3: RecordV3}
"""The model of the append records of every schema version that has them."""
