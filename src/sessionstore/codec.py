"""Bytes <-> ``StoredSession``: orjson, the version gate, migration, one validation.

No I/O here. ``decode_document`` is the load pipeline after the bytes are read:
parse, must be an object, read the version, refuse a newer one, upgrade, validate
once with the current model, check the id inside. Every failure is a
``CorruptSessionError`` (or its ``SchemaVersionError``) naming the session and
where the bytes came from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from sessionstore.errors import CorruptSessionError, SchemaVersionError
from sessionstore.migrations import Document, read_version, upgrade
from sessionstore.models import CURRENT_SCHEMA_VERSION, DECODED_TEXT, MODELS, StoredSession

__all__ = ["DecodedSession", "decode", "decode_document", "encode"]

_ENCODE_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
_REPLACEMENT = "\ufffd"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class DecodedSession:
    """A decoded session and what it took to get there."""

    session: StoredSession
    source_version: int
    """The schema version the stored document had."""
    repaired_surrogates: int = 0
    """How many escaped lone surrogates were replaced by U+FFFD (seed files only)."""

    @property
    def needs_rewrite(self) -> bool:
        """True when the stored bytes are not what ``encode`` would write today."""
        return self.source_version != CURRENT_SCHEMA_VERSION or self.repaired_surrogates > 0


def encode(session: StoredSession) -> bytes:
    """Return the document bytes of ``session``: orjson, 2-space indent, model key order.

    Never fails for a session the model validated; raises ``ValueError`` for one built
    around validation (``model_construct``) with values JSON cannot hold.
    """
    try:
        # ``__dict__`` holds the fields in model order (what ``dict(session)`` would
        # copy, without pydantic's ``keys`` lookup on every save).
        return orjson.dumps(session.__dict__, option=_ENCODE_OPTIONS)
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

    def corrupt(reason: str) -> CorruptSessionError:
        return CorruptSessionError(
            f"session {session_id!r} in {path}: {reason}",
            session_id=session_id,
            path=path,
        )

    repaired = 0
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        legacy = _legacy_surrogate_document(data)
        if legacy is None:
            raise corrupt(f"not valid JSON ({exc})") from None
        doc, repaired = legacy

    if type(doc) is not dict:
        raise corrupt(f"the top-level JSON value is {_json_kind(doc)}, expected an object")
    try:
        version = read_version(doc)
    except ValueError as exc:
        raise corrupt(str(exc)) from None
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
        raise corrupt("contains escaped lone surrogates, which only seed (version 1) files may")
    if version < CURRENT_SCHEMA_VERSION:
        unknown = set(doc) - set(MODELS[version].model_fields)
        if unknown:
            raise corrupt(f"unknown field(s) for schema version {version}: {sorted(unknown)}")
        doc = upgrade(doc, version)

    try:
        session = StoredSession.model_validate(doc, context=DECODED_TEXT)
    except ValidationError as exc:
        raise corrupt(_describe(exc)) from None
    if session_id is not None and session.session_id != session_id:
        raise corrupt(f"the document's session_id is {session.session_id!r}, not the file's id")
    return DecodedSession(session, version, repaired)


def _legacy_surrogate_document(data: bytes) -> tuple[Document, int] | None:
    """Parse a seed-written document with escaped lone surrogates, replacing each by U+FFFD.

    The seed wrote with ``json.dumps``, which escapes a lone surrogate as ``\\udXXX``;
    orjson refuses those. Returns None unless that was the only problem.
    """
    if b"\\ud" not in data and b"\\uD" not in data:
        return None
    try:
        text = data.decode("utf-8")
        doc = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if type(doc) is not dict:
        return None
    count = [0]
    repaired = _replace_surrogates(doc, count)
    if count[0] == 0:
        return None
    return repaired, count[0]


def _refuse_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _replace_surrogates(value: Any, count: list[int]) -> Any:
    if isinstance(value, str):
        # json.loads already joined every escaped surrogate *pair* into one
        # character, so whatever surrogate is left here is a lone one.
        fixed, replaced = _LONE_SURROGATE.subn(_REPLACEMENT, value)
        count[0] += replaced
        return fixed
    if isinstance(value, list):
        return [_replace_surrogates(item, count) for item in value]
    if isinstance(value, dict):
        return {
            _replace_surrogates(key, count): _replace_surrogates(item, count)
            for key, item in value.items()
        }
    return value


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
