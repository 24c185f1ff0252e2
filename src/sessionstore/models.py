"""Pydantic v2 models of every schema version, and the checks that keep them storable.

``StoredSession`` is the current version (2). ``SessionV1`` describes the seed's
format and is kept frozen so that its JSON Schema can always be regenerated.

A model refuses, at construction, every value that orjson could not write and
read back equal: lone surrogates in any string, integers outside the 64-bit
range, NaN and infinities, and nesting deeper than a document may have. So a
session the model accepts always saves, and always loads back equal.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from itertools import filterfalse
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "MAX_METADATA_DEPTH",
    "MAX_TOKENS",
    "MODELS",
    "SessionV1",
    "StoredSession",
]

CURRENT_SCHEMA_VERSION = 2
"""The schema version this sessionstore writes."""

MAX_TOKENS = 2**63 - 1
"""Largest token count a session may hold (a signed 64-bit integer)."""

MAX_METADATA_DEPTH = 253
"""How deep ``metadata`` may nest, counting the metadata object itself as 1.

orjson writes at most 254 nested containers; the session document is one of them.
"""

DECODED_TEXT: Any = {"sessionstore": "text decoded by orjson"}
"""Validation context the codec passes for documents it parsed with orjson.

orjson refuses lone surrogates (escaped or as bytes) and the codec's seed-file
path replaces them, so the messages of such a document need no second Unicode
check. Compared by identity: an equal dict passed by anyone else does not count.
"""

_MIN_JSON_INT = -(2**63)
_MAX_JSON_INT = 2**64 - 1

_S = TypeVar("_S", bound="StoredSession")

TokenCount = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]


def check_text(value: str, what: str) -> str:
    """Return ``value`` if it is valid Unicode text (no lone surrogates); raise ``ValueError``."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            msg = f"{what} contains a lone surrogate at index {exc.start}, which JSON cannot store"
            raise ValueError(msg) from None
    return value


def _json_value(value: Any, where: str, depth: int) -> Any:
    """Return a plain-JSON copy of ``value`` (tuples become lists) or raise ``ValueError``."""
    # Exact type checks: bool is an int subclass but a JSON literal of its own;
    # other int/float/str subclasses (enums) would not read back as themselves.
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is str:
        return check_text(value, where)
    if kind is int:
        if not _MIN_JSON_INT <= value <= _MAX_JSON_INT:
            msg = f"{where} is {value}, outside the 64-bit range JSON can store exactly"
            raise ValueError(msg)
        return value
    if kind is float:
        if not math.isfinite(value):
            msg = f"{where} is {value}, and JSON has no NaN or infinity"
            raise ValueError(msg)
        return value
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_METADATA_DEPTH:
            msg = f"{where} nests deeper than {MAX_METADATA_DEPTH} levels"
            raise ValueError(msg)
        if kind is dict:
            out = {}
            for key, item in value.items():
                if type(key) is not str:
                    msg = f"{where} has a key {key!r} that is not a string"
                    raise ValueError(msg)
                check_text(key, f"{where} key {key[:40]!r}")
                out[key] = _json_value(item, f"{where}[{key[:40]!r}]", depth + 1)
            return out
        return [_json_value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    msg = (
        f"{where} is a {kind.__name__}, not a JSON value (null, bool, int, float, str, list, dict)"
    )
    raise ValueError(msg)


class SessionV1(BaseModel):
    """Schema version 1: the seed's format. Four keys; ``schema_version`` absent or 1.

    Frozen history: never change this class; add a new version instead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", title="Session, schema version 1")

    schema_version: Literal[1] = 1
    session_id: StrictStr
    messages: tuple[StrictStr, ...]
    input_tokens: StrictInt
    output_tokens: StrictInt


_SEED_FIELDS = ("session_id", "messages", "input_tokens", "output_tokens")
"""The seed's dataclass fields, in its order: what ``StoredSession`` accepts by position."""


if TYPE_CHECKING:
    # Type checkers see Pydantic's own metaclass, hence its keyword-only ``__init__``.
    from pydantic._internal._model_construction import ModelMetaclass as _SeedPositional
else:

    class _SeedPositional(type(BaseModel)):
        """Lets ``StoredSession(...)`` take the seed's four fields by position, as the
        seed's dataclass did: ``StoredSession("chat-1", ("hi",), 3, 0)``.

        A metaclass, not an ``__init__`` override: Pydantic routes every
        ``model_validate`` through a custom ``__init__`` (and drops its context),
        which made each load several times slower.
        """

        def __call__(cls, *args: Any, **data: Any) -> Any:
            if args:
                if len(args) > len(_SEED_FIELDS):
                    msg = (
                        f"StoredSession() takes at most {len(_SEED_FIELDS)} positional "
                        f"arguments ({', '.join(_SEED_FIELDS)}), {len(args)} were given"
                    )
                    raise TypeError(msg)
                for name, value in zip(_SEED_FIELDS, args, strict=False):
                    if name in data:
                        msg = f"StoredSession() got multiple values for argument {name!r}"
                        raise TypeError(msg)
                    data[name] = value
            return super().__call__(**data)


class StoredSession(BaseModel, metaclass=_SeedPositional):
    """One stored session, schema version 2 (the current one).

    Frozen, and unknown fields are refused. Build it by keyword; the seed's four
    fields are enough, and may be given by position as the seed's dataclass allowed.
    Raises ``pydantic.ValidationError`` (a ``ValueError``) for a value that could
    not be stored and read back equal. The id itself is checked
    by the store, not here. Timestamps are kept in UTC.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="Session, schema version 2",
    )

    schema_version: Literal[2] = 2
    session_id: StrictStr
    messages: tuple[StrictStr, ...]
    input_tokens: TokenCount
    output_tokens: TokenCount
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form JSON object for the application's own data.",
    )

    def model_copy(self: _S, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> _S:
        """Return a copy; with ``update``, the result is validated like a new session.

        Plain Pydantic skips validation here, which would let a copy carry values
        that cannot be stored (a negative token count, a lone surrogate).
        """
        if not update:
            return super().model_copy(deep=deep)
        return self.model_validate({**dict(self), **update})

    @field_validator("session_id")
    @classmethod
    def _session_id_is_text(cls, value: str) -> str:
        return check_text(value, "session_id")

    @field_validator("messages")
    @classmethod
    def _messages_are_text(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.context is DECODED_TEXT:
            # Parsed by orjson (which refuses lone surrogates) or repaired by the
            # codec: the text is known to be valid, skip the second pass.
            return value
        # ``str.isascii`` is O(1) (a flag of the string), so the C-level filter
        # visits every message for free and only non-ASCII ones are encoded, one
        # by one: no joined copy of the whole conversation (4 bytes a character
        # once any message holds an emoji). Only on failure do we look for the
        # culprit to name it.
        try:
            deque(map(str.encode, filterfalse(str.isascii, value)), maxlen=0)
        except UnicodeEncodeError:
            for index, message in enumerate(value):
                check_text(message, f"messages[{index}]")
        return value

    @field_validator("created_at", "updated_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.astimezone(timezone.utc)
        except (OverflowError, ValueError) as exc:
            msg = f"{value!r} cannot be expressed in UTC: {exc}"
            raise ValueError(msg) from None

    @field_validator("metadata")
    @classmethod
    def _metadata_is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = _json_value(value, "metadata", 0)
        return result


MODELS: dict[int, type[BaseModel]] = {1: SessionV1, 2: StoredSession}
"""The model of every schema version, oldest first."""
