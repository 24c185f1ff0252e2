"""Bytes <-> ``StoredSession``: parse, the version gate, migration, one validation.

No I/O here. ``decode_document`` is the load pipeline after the bytes are read:
it splits a current-version file into its snapshot and append records (see
``records``), decodes the snapshot, then checks the records and merges them.
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

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
import pydantic_core
from pydantic import ValidationError
from xxhash import xxh3_128_hexdigest

from sessionstore.errors import CorruptSessionError, SchemaVersionError
from sessionstore.migrations import Document, read_version, upgrade, v1_extra_keys
from sessionstore.models import (
    CURRENT_SCHEMA_VERSION,
    DECODED_TEXT,
    StoredSession,
    session_adapter,
)
from sessionstore.records import (
    CURRENT_PREFIX,
    SNAPSHOT_END,
    STORE_LINE_PREFIX,
    KeyResult,
    Layout,
    RecordError,
    check_store,
    encode_store_line,
    find_snapshot_end,
    read_chain,
    split_layout,
    store_keys,
    stored_etag,
)

__all__ = ["DecodedSession", "decode", "decode_document", "encode", "encode_folded"]

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
    records: int = 0
    """How many append records followed the snapshot (merged into ``session``)."""
    torn_bytes: int = 0
    """Bytes at the end that belong to no complete record: an append that never finished."""
    folded_store: bool = False
    """True when the snapshot carries a fold's store line (kept etag, append keys)."""
    keys: dict[str, KeyResult] = field(default_factory=dict)
    """The append keys the session remembers, oldest first."""
    known_etag: str | None = field(default=None, repr=False, compare=False)
    stored: bytes = field(default=b"", repr=False, compare=False)
    """The stored bytes, kept for ``etag`` when ``known_etag`` is None."""

    @property
    def etag(self) -> str:
        """The etag of the stored bytes (``records.stored_etag``), digested on first use:
        ``load`` never asks for it, and a digest of a large file is not free."""
        if self.known_etag is None:
            object.__setattr__(self, "known_etag", stored_etag(self.stored))
        return self.known_etag  # type: ignore[return-value]  # set just above

    @property
    def needs_rewrite(self) -> bool:
        """True when the stored bytes are not what ``encode`` would write today."""
        return self.source_version != CURRENT_SCHEMA_VERSION or self.repaired_surrogates > 0


def encode(session: StoredSession, *, store_line: bytes | None = None) -> bytes:
    """Return the document bytes of a validated ``session``.

    orjson, 2-space indent, ``schema_version`` first, then the fields in order, and
    a final newline. ``store_line`` (from ``records.encode_store_line``, written by a
    fold) goes on the line before the closing brace. Raises ``ValueError`` for values
    JSON cannot hold (possible only for a session built around validation; the store
    validates before it encodes).
    """
    try:
        # ``__dict__`` holds the fields in order; putting schema_version first keeps
        # the version where a reader (and ``_CURRENT_PREFIX``) looks for it.
        fields = {"schema_version": session.schema_version, **session.__dict__}
        data = orjson.dumps(fields, option=_ENCODE_OPTIONS)
    except orjson.JSONEncodeError as exc:
        msg = f"session {session.session_id!r} cannot be encoded as JSON: {exc}"
        raise ValueError(msg) from None
    if store_line is None:
        return data
    return b"".join((data[:-3], b",\n", STORE_LINE_PREFIX, store_line, b"\n}\n"))


def encode_folded(session: StoredSession, *, etag: str | None, keys: dict[str, KeyResult]) -> bytes:
    """The bytes of a folded snapshot: ``encode(session)`` plus the store line that keeps
    ``etag`` (None: the etag is the digest of these bytes), the append ``keys``, the
    XXH3-128 of the snapshot without that line and its totals (message count, tokens),
    which a load checks and the next append reads instead of the whole snapshot."""
    plain = encode(session)
    totals = (len(session.messages), session.input_tokens, session.output_tokens)
    line = encode_store_line(etag, keys, digest=xxh3_128_hexdigest(plain), totals=totals)
    return b"".join((plain[:-3], b",\n", STORE_LINE_PREFIX, line, b"\n}\n"))


def decode(data: bytes, *, session_id: str | None = None, path: object = None) -> StoredSession:
    """Decode stored bytes to the current model; see ``decode_document``."""
    if _is_plain_snapshot(data):
        # The commonest file, and what ``load`` reads most: the session alone, without
        # the ``DecodedSession`` around it.
        try:
            session = session_adapter().validate_json(data, context=DECODED_TEXT)
        except ValidationError:
            pass  # the full pipeline names the problem precisely
        else:
            _check_id(session, session_id, path)
            return session
    return decode_document(data, session_id=session_id, path=path).session


def _is_plain_snapshot(data: bytes) -> bool:
    """True for a snapshot as ``encode`` writes it, alone: no store line, no records, no
    torn tail (what ``split_layout`` would find), told in a few comparisons."""
    return (
        data.endswith(SNAPSHOT_END)
        and data.startswith(CURRENT_PREFIX)
        and find_snapshot_end(data) == len(data) - len(SNAPSHOT_END)
        and not data.startswith(
            STORE_LINE_PREFIX, data.rfind(b"\n", 0, len(data) - len(SNAPSHOT_END)) + 1
        )
    )


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
    ``CorruptSessionError`` for anything else that is not a usable session,
    including append records that are damaged, out of order or not chained to the
    snapshot (a torn last line, an append that never finished, is ignored).
    """
    if _is_plain_snapshot(data):
        # The commonest file, a plain snapshot as ``encode`` writes it: one validation
        # of the bytes as they are.
        try:
            session = session_adapter().validate_json(data, context=DECODED_TEXT)
        except ValidationError:
            pass  # the full pipeline below names the problem precisely
        else:
            _check_id(session, session_id, path)
            return _plain(session, data)
    try:
        layout = split_layout(data)
    except RecordError as exc:
        raise _corrupt(session_id, path, exc.reason, str(exc)) from None
    store = layout.store
    document = layout.document
    if _CURRENT_PREFIX.match(document):
        try:
            session = session_adapter().validate_json(document, context=DECODED_TEXT)
        except ValidationError:
            pass  # the full pipeline below names the problem precisely
        else:
            _check_id(session, session_id, path)
            if not layout.records and store is None:
                return DecodedSession(
                    session, CURRENT_SCHEMA_VERSION, torn_bytes=layout.torn, stored=data
                )
            return _merge_records(
                DecodedSession(session, CURRENT_SCHEMA_VERSION),
                data,
                layout,
                store,
                session_id=session_id,
                path=path,
            )
    decoded, found_store = _decode_slowly(document, session_id, path)
    store = store if found_store is None else found_store
    if not layout.records and store is None:
        return _with(decoded, torn_bytes=layout.torn, stored=data)
    return _merge_records(decoded, data, layout, store, session_id=session_id, path=path)


def _merge_records(
    decoded: DecodedSession,
    data: bytes,
    layout: Layout,
    store: dict[str, Any] | None,
    *,
    session_id: str | None,
    path: object,
) -> DecodedSession:
    session = decoded.session
    if (
        store is not None
        and store is layout.store
        and store.get("digest") is not None
        and xxh3_128_hexdigest(layout.document) != store["digest"]
    ):
        raise _corrupt(
            session_id,
            path,
            "damaged-snapshot",
            "the snapshot's bytes do not match the digest its fold recorded",
        )
    totals = store.get("totals") if store is not None else None
    if totals is not None and tuple(totals) != (
        len(session.messages),
        session.input_tokens,
        session.output_tokens,
    ):
        raise _corrupt(
            session_id, path, "bad-store-line", "the store line's totals do not match the snapshot"
        )
    if store is not None and store.get("etag") is not None:
        snapshot_etag = store["etag"]
    else:
        snapshot_etag = xxh3_128_hexdigest(memoryview(data)[: layout.snapshot_end])
    try:
        chain = read_chain(
            layout,
            snapshot_etag=snapshot_etag,
            message_count=len(session.messages),
            remembered=store_keys(store),
        )
    except RecordError as exc:
        raise _corrupt(session_id, path, exc.reason, str(exc)) from None
    last = chain.last
    if last is not None:
        added = tuple(chain.messages)
        updated_at = _record_time(last["updated_at"])
        if updated_at is not None:
            # Every field the records change was checked by ``read_chain`` (token
            # totals in range, messages strings, which the parser found free of lone
            # surrogates) or just now (the time): a copy with them is what the model
            # would build, without validating the snapshot's fields a second time.
            merged = object.__new__(StoredSession)
            merged.__dict__.update(
                session.__dict__,
                messages=session.messages + added,
                input_tokens=last["input_tokens"],
                output_tokens=last["output_tokens"],
                updated_at=updated_at,
            )
        else:
            try:
                merged = session_adapter().validate_python(
                    {
                        **session.__dict__,
                        "messages": session.messages + added,
                        "input_tokens": last["input_tokens"],
                        "output_tokens": last["output_tokens"],
                        "updated_at": last["updated_at"],
                    },
                    context=DECODED_TEXT,
                )
            except ValidationError as exc:
                raise _corrupt(session_id, path, "invalid-fields", _describe(exc)) from None
        session = merged
    decoded_with_records = object.__new__(DecodedSession)
    decoded_with_records.__dict__.update(
        decoded.__dict__,
        session=session,
        known_etag=snapshot_etag if last is None else last["hash"],
        stored=data,
        records=chain.count,
        torn_bytes=layout.torn,
        folded_store=store is not None,
        keys=chain.keys,
    )
    return decoded_with_records


def _record_time(text: str) -> datetime | None:
    """A record's ``updated_at`` as the append log writes it (``...+00:00``, with or
    without microseconds) as a UTC datetime; None for any other text (the model then
    decides)."""
    if len(text) not in (25, 32) or text[10] != "T" or not text.endswith("+00:00"):
        return None
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


_PLAIN_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(DecodedSession) if f.name not in ("keys",)
}


def _plain(session: StoredSession, data: bytes) -> DecodedSession:
    """``DecodedSession(session, CURRENT_SCHEMA_VERSION, stored=data)``, built without
    the frozen dataclass's ``__init__`` (eleven ``object.__setattr__`` calls, a tenth
    of a small load)."""
    decoded = object.__new__(DecodedSession)
    decoded.__dict__.update(_PLAIN_DEFAULTS)
    decoded.__dict__.update(
        session=session, source_version=CURRENT_SCHEMA_VERSION, keys={}, stored=data
    )
    return decoded


def _with(decoded: DecodedSession, **changes: Any) -> DecodedSession:
    return dataclasses.replace(decoded, **changes)


def _decode_slowly(
    data: bytes, session_id: str | None, path: object
) -> tuple[DecodedSession, dict[str, Any] | None]:
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
                _refuse_a_newer_prefix(data, session_id, path)
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
        raise _newer(version, session_id, path)
    if repaired and version != 1:
        # Only the seed's json.dumps wrote escaped lone surrogates; this library
        # never does, so in a newer document they mean damage, not history.
        raise corrupt(
            "bad-surrogates", "contains escaped lone surrogates, which only version-1 files may"
        )
    extra: tuple[str, ...] = ()
    if version == 1:
        extra = tuple(v1_extra_keys(doc))
    store = None
    if version == CURRENT_SCHEMA_VERSION and "store" in doc:
        # A fold's store line, in a snapshot laid out other than as ``encode`` writes it.
        try:
            store = check_store(doc.pop("store"))
        except RecordError as exc:
            raise corrupt(exc.reason, str(exc)) from None
    if version < CURRENT_SCHEMA_VERSION:
        doc = upgrade(doc, version)

    try:
        session = session_adapter().validate_python(
            doc, context=DECODED_TEXT if text_checked else None
        )
    except ValidationError as exc:
        raise corrupt("invalid-fields", _describe(exc)) from None
    _check_id(session, session_id, path)
    return DecodedSession(session, version, repaired, extra), store


_VERSION_PREFIX = re.compile(rb'\A\s*\{\s*"schema_version"\s*:\s*([0-9]{1,20})\s*,')


def _refuse_a_newer_prefix(data: bytes, session_id: str | None, path: object) -> None:
    """Raise ``SchemaVersionError`` when bytes that do not parse start with a newer
    ``schema_version``: a future format (records of another shape, say) is refused as
    newer, never called damage."""
    match = _VERSION_PREFIX.match(data)
    if match and int(match[1]) > CURRENT_SCHEMA_VERSION:
        raise _newer(int(match[1]), session_id, path)


def _newer(version: int, session_id: str | None, path: object) -> SchemaVersionError:
    msg = (
        f"session {session_id!r} in {path} has schema_version {version}; this "
        f"sessionstore reads up to {CURRENT_SCHEMA_VERSION}: upgrade sessionstore "
        "(the file was left untouched)"
    )
    return SchemaVersionError(
        msg,
        session_id=session_id,
        path=path,
        found_version=version,
        supported_version=CURRENT_SCHEMA_VERSION,
    )


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
