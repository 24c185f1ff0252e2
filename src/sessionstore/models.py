"""The current session type, and the checks that keep every session storable.

``StoredSession`` is a frozen Pydantic dataclass, so it behaves like the
original module's ``@dataclass(frozen=True)`` (``dataclasses.replace``,
``asdict``, ``fields``, positional construction and ``match`` patterns,
``hash``, ``FrozenInstanceError``) while Pydantic validates every instance.
The models of earlier schema versions live in ``sessionstore.history``, which
``import sessionstore`` does not load.

A session refuses, at construction, every value that orjson could not write
and read back equal: lone surrogates in any string, integers outside the 64-bit
range, NaN and infinities, and nesting deeper than a document may have. So a
session that validates always saves, and always loads back equal.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import deque
from datetime import datetime, timezone
from functools import cache
from itertools import filterfalse
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)
from pydantic.dataclasses import dataclass

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "MAX_METADATA_DEPTH",
    "MAX_TOKENS",
    "SEED_FIELDS",
    "StoredSession",
    "check_text",
    "session_adapter",
]

CURRENT_SCHEMA_VERSION = 3
"""The schema version this sessionstore writes."""

MAX_TOKENS = 2**63 - 1
"""Largest token count a session may hold (a signed 64-bit integer)."""

MAX_METADATA_DEPTH = 253
"""How deep ``metadata`` may nest, counting the metadata object itself as 1.

orjson writes at most 254 nested containers; the session document is one of them.
"""

SEED_FIELDS = ("session_id", "messages", "input_tokens", "output_tokens")
"""The original module's dataclass fields, in its order; ``StoredSession`` starts with them."""

DECODED_TEXT: Any = {"sessionstore": "text decoded by a strict JSON parser"}
"""Validation context the codec passes for documents it parsed itself.

The JSON parsers refuse lone surrogates (escaped or as bytes) and the codec's
seed-file path replaces them, so the messages of such a document need no second
Unicode check. Compared by identity: an equal dict passed by anyone else does not count.
"""

_MIN_JSON_INT = -(2**63)
_MAX_JSON_INT = 2**64 - 1

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


def json_value(value: Any, where: str, depth: int = 0) -> Any:
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
                out[key] = json_value(item, f"{where}[{key[:40]!r}]", depth + 1)
            return out
        return [json_value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    msg = (
        f"{where} is a {kind.__name__}, not a JSON value (null, bool, int, float, str, list, dict)"
    )
    raise ValueError(msg)


@dataclass(
    frozen=True,
    config=ConfigDict(extra="forbid", title=f"Session, schema version {CURRENT_SCHEMA_VERSION}"),
)
class StoredSession:
    """One stored session, schema version 3 (the current one).

    Frozen; unknown fields are refused. The first four fields are the original
    module's, in its order, so ``StoredSession("chat-1", ("hi",), 3, 0)`` and
    ``case StoredSession(sid, messages, tokens_in, tokens_out)`` work as before.
    ``dataclasses.replace`` validates its result like a new session. The hash
    covers every field but ``metadata`` (a dict), so sessions work in sets and as
    dict keys. Raises ``pydantic.ValidationError`` (a ``ValueError``) for a value
    that could not be stored and read back equal. The id itself is checked by
    the store, not here. Timestamps are kept in UTC.
    """

    session_id: StrictStr
    messages: tuple[StrictStr, ...]
    input_tokens: TokenCount
    output_tokens: TokenCount
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    metadata: Annotated[
        dict[str, Any], Field(description="Free-form JSON object for the application's own data.")
    ] = dataclasses.field(default_factory=dict, hash=False)
    schema_version: Literal[3] = 3

    if TYPE_CHECKING:
        # Pydantic's dataclass accepts any iterable of str for ``messages`` (a list
        # becomes a tuple); tell type checkers so.
        def __init__(  # noqa: PLR0917  # the dataclass takes every field by position
            self,
            session_id: str,
            messages: tuple[str, ...] | list[str],
            input_tokens: int,
            output_tokens: int,
            created_at: datetime | None = None,
            updated_at: datetime | None = None,
            metadata: dict[str, Any] | None = None,
            schema_version: Literal[3] = 3,
        ) -> None: ...

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version_is_an_int(cls, value: object) -> object:
        # A Literal accepts 2.0 and True as 2; a stored version must be the integer.
        if type(value) is not int:
            msg = f"schema_version must be the integer {CURRENT_SCHEMA_VERSION}, not {value!r}"
            raise ValueError(msg)
        return value

    @field_validator("session_id")
    @classmethod
    def _session_id_is_text(cls, value: str) -> str:
        return check_text(value, "session_id")

    @field_validator("messages")
    @classmethod
    def _messages_are_text(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.context is DECODED_TEXT:
            # Parsed by a strict JSON parser (which refuses lone surrogates) or
            # repaired by the codec: the text is known to be valid.
            return value
        # ``str.isascii`` is O(1) (a flag of the string), so the C-level filter
        # visits every message for free and only non-ASCII ones are encoded, one
        # by one: no joined copy of the whole conversation. Only on failure do we
        # look for the culprit to name it.
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
        result: dict[str, Any] = json_value(value, "metadata")
        return result


_FIELD_ORDER = tuple(StoredSession.__dataclass_fields__)
_validating_init = StoredSession.__init__


@functools.wraps(_validating_init)
def _init_naming_positional_fields(self: StoredSession, *args: Any, **kwargs: Any) -> None:
    # Pydantic's own __init__ takes positional arguments but reports their errors
    # by index ("2: Input should be ..."); passing them by name makes every error
    # name its field. Only direct construction comes here: loads validate
    # through the TypeAdapter, which never calls __init__.
    if args:
        if len(args) > len(_FIELD_ORDER):
            msg = (
                f"StoredSession() takes at most {len(_FIELD_ORDER)} positional arguments "
                f"({', '.join(_FIELD_ORDER)}), {len(args)} were given"
            )
            raise TypeError(msg)
        for name, value in zip(_FIELD_ORDER, args, strict=False):
            if name in kwargs:
                msg = f"StoredSession() got multiple values for argument {name!r}"
                raise TypeError(msg)
            kwargs[name] = value
    _validating_init(self, **kwargs)


StoredSession.__init__ = _init_naming_positional_fields  # type: ignore[method-assign]


@cache
def session_adapter() -> TypeAdapter[StoredSession]:
    """The ``TypeAdapter`` that validates documents (dicts or JSON bytes) as ``StoredSession``.

    Built on first use, not at import.
    """
    return TypeAdapter(StoredSession)
