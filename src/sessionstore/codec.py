"""Bytes <-> ``StoredSession``: parse, the version gate, migration, one validation.

No I/O here. ``decode_document`` is the load pipeline after the bytes are read.
A document of the current version, as ``encode`` writes it, takes one pass:
Pydantic parses and validates the bytes at once. Anything else (an older
version, a document the fast pass refuses, metadata nested deeper than that
parser goes) takes the full pipeline: parse, must be an object, read the
version, refuse a newer one, upgrade, validate once with the current model,
check the id inside. Every failure is a ``CorruptSessionError`` (or a
``SchemaVersionError`` for a newer version) naming the session and where the
bytes came from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic_core
from pydantic import ValidationError

from sessionstore.errors import CorruptSessionError, SchemaVersionError
from sessionstore.migrations import Document, read_version, upgrade, v1_extra_keys
from sessionstore.models import (
    CURRENT_SCHEMA_VERSION,
    DECODED_TEXT,
    StoredSession,
    session_adapter,
)

__all__ = ["DecodedSession", "decode", "decode_document", "encode"]

_ENCODE_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
_REPLACEMENT = "\ufffd"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_CURRENT_PREFIX = re.compile(rb'\{\s*"schema_version": %d,' % CURRENT_SCHEMA_VERSION)
"""How every document ``encode`` writes begins: such bytes try the one-pass path first."""


@dataclass(frozen=True)
class DecodedSession:
    """A decoded session and what it took to get there."""

    session: StoredSession
    source_version: int
    """The schema version the stored document had."""
    repaired_surrogates: int = 0
    """How many escaped lone surrogates were replaced by U+FFFD (seed files only)."""
    extra_keys: tuple[str, ...] = ()
    """Keys of a version-1 document the original module ignored; kept in ``metadata``."""

    @property
    def needs_rewrite(self) -> bool:
        """True when the stored bytes are not what ``encode`` would write today."""
        return self.source_version != CURRENT_SCHEMA_VERSION or self.repaired_surrogates > 0


def encode(session: StoredSession) -> bytes:
    """Return the document bytes of a validated ``session``.

    orjson, 2-space indent, ``schema_version`` first, then the fields in order, and
    a final newline. Raises ``ValueError`` for values JSON cannot hold (possible
    only for a session built around validation; the store validates before it encodes).
    """
    try:
        # ``__dict__`` holds the fields in order; putting schema_version first keeps
        # the version where a reader (and ``_CURRENT_PREFIX``) looks for it.
        fields = {"schema_version": session.schema_version, **session.__dict__}
        return orjson.dumps(fields, option=_ENCODE_OPTIONS)
    except orjson.JSONEncodeError as exc:
        msg = f"session {session.session_id!r} cannot be encoded as JSON: {exc}"
        raise ValueError(msg) from None


def decode(data: bytes, *, session_id: str | None = None, path: object = None) -> StoredSession:
    """Decode stored bytes to the current model; see ``decode_document``."""
    return decode_document(data, session_id=session_id, path=path).session


def decode_document(
    data: bytes,
    *,
    session_id: str | None = None,
    path: object = None,
) -> DecodedSession:
    """Decode stored bytes of any supported version, migrating in memory.

    ``session_id`` is the id the caller expects (the file name); the document's own
    id must equal it. ``path`` is only used in messages. Raises
    ``SchemaVersionError`` for a version newer than this library's and
    ``CorruptSessionError`` for anything else that is not a usable session.
    """
    if _CURRENT_PREFIX.match(data):
        try:
            session = session_adapter().validate_json(data, context=DECODED_TEXT)
        except ValidationError:
            pass  # the full pipeline below names the problem precisely
        else:
            _check_id(session, session_id, path)
            return DecodedSession(session, CURRENT_SCHEMA_VERSION)
    return _decode_slowly(data, session_id, path)


def _decode_slowly(data: bytes, session_id: str | None, path: object) -> DecodedSession:
    def corrupt(reason: str, detail: str) -> CorruptSessionError:
        return _corrupt(session_id, path, reason, detail)

    repaired = 0
    text_checked = True
    try:
        doc = pydantic_core.from_json(data, allow_inf_nan=False, cache_strings="keys")
    except ValueError as exc:
        if "recursion limit" in str(exc):
            # Deeper than that parser goes (metadata may nest 253 levels): the
            # standard library parses it, exact integers included, but lets
            # escaped lone surrogates through: the model checks all text then.
            doc = _parse_with_stdlib(data)
            text_checked = False
            if doc is None:
                raise corrupt("not-json", "not valid JSON") from None
        else:
            legacy = _legacy_surrogate_document(data)
            if legacy is None:
                raise corrupt("not-json", f"not valid JSON ({exc})") from None
            doc, repaired = legacy

    if type(doc) is not dict:
        raise corrupt(
            "not-an-object", f"the top-level JSON value is {_json_kind(doc)}, expected an object"
        )
    try:
        version = read_version(doc)
    except ValueError as exc:
        raise corrupt("bad-version", str(exc)) from None
    if version > CURRENT_SCHEMA_VERSION:
        msg = (
            f"session {session_id!r} in {path} has schema_version {version}; this "
            f"sessionstore reads up to {CURRENT_SCHEMA_VERSION}: upgrade sessionstore "
            "(the file was left untouched)"
        )
        raise SchemaVersionError(
            msg,
            session_id=session_id,
            path=path,
            found_version=version,
            supported_version=CURRENT_SCHEMA_VERSION,
        )
    if repaired and version != 1:
        # Only the seed's json.dumps wrote escaped lone surrogates; this library
        # never does, so in a newer document they mean damage, not history.
        raise corrupt(
            "bad-surrogates", "contains escaped lone surrogates, which only version-1 files may"
        )
    extra: tuple[str, ...] = ()
    if version == 1:
        extra = tuple(v1_extra_keys(doc))
    if version < CURRENT_SCHEMA_VERSION:
        doc = upgrade(doc, version)

    try:
        session = session_adapter().validate_python(
            doc, context=DECODED_TEXT if text_checked else None
        )
    except ValidationError as exc:
        raise corrupt("invalid-fields", _describe(exc)) from None
    _check_id(session, session_id, path)
    return DecodedSession(session, version, repaired, extra)


def _check_id(session: StoredSession, session_id: str | None, path: object) -> None:
    if session_id is not None and session.session_id != session_id:
        raise _corrupt(
            session_id,
            path,
            "id-mismatch",
            f"the document's session_id is {session.session_id!r}, not the file's id",
        )


def _corrupt(session_id: str | None, path: object, reason: str, detail: str) -> CorruptSessionError:
    return CorruptSessionError(
        f"session {session_id!r} in {path}: {detail}",
        session_id=session_id,
        path=path,
        reason=reason,
        detail=detail,
    )


def _parse_with_stdlib(data: bytes) -> Any:
    """``json.loads`` with NaN and infinities refused; None when it cannot parse."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _legacy_surrogate_document(data: bytes) -> tuple[Document, int] | None:
    """Parse a seed-written document with escaped lone surrogates, replacing each by U+FFFD.

    The seed wrote with ``json.dumps``, which escapes a lone surrogate as ``\\udXXX``;
    strict parsers refuse those. Returns None unless that was the only problem.
    """
    if b"\\ud" not in data and b"\\uD" not in data:
        return None
    doc = _parse_with_stdlib(data)
    if type(doc) is not dict:
        return None
    repaired, count = _replace_surrogates(doc)
    if count == 0:
        return None
    return repaired, count


def _refuse_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _replace_surrogates(doc: Document) -> tuple[Document, int]:
    """A copy of ``doc`` with every lone surrogate replaced by U+FFFD, and how many.

    Iterative, so any nesting the parser accepted is walked without recursion.
    """
    count = 0

    def fix(text: str) -> str:
        nonlocal count
        # json.loads already joined every escaped surrogate *pair* into one
        # character, so whatever surrogate is left here is a lone one.
        fixed, replaced = _LONE_SURROGATE.subn(_REPLACEMENT, text)
        count += replaced
        return fixed

    root: dict[str, Any] = {}
    stack: list[tuple[Any, Any]] = [(doc, root)]
    while stack:
        source, target = stack.pop()
        items: Any = source.items() if type(source) is dict else enumerate(source)
        for key, value in items:
            if type(key) is str:
                key = fix(key)  # noqa: PLW2901  # the repaired key replaces the original
            if type(value) is str:
                value = fix(value)  # noqa: PLW2901
            elif type(value) is dict or type(value) is list:
                child: Any = {} if type(value) is dict else []
                stack.append((value, child))
                value = child  # noqa: PLW2901  # filled in when the stack reaches it
            if type(target) is dict:
                target[key] = value
            else:
                target.append(value)
    return root, count


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return names.get(type(value), type(value).__name__)


def _describe(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "document"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more problem(s)")
    return "; ".join(parts)
