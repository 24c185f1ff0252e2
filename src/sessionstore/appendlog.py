"""Appends and folds: the policy of the append log, over any backend.

Callers hold the session's lock (``Backend.lock``). An append finds the file's
current state, checks the key and ``if_match``, and adds one record line (see
``records``). A backend that offers ``read_tail`` and ``append_record`` (the file
backend does) lets an append read only the end of the file and write with one
``write()`` and one fdatasync, whatever the session's size; any other backend
gets the same bytes through a whole-document ``write``.

A fold rewrites snapshot + records as one snapshot with the backend's atomic
write. It keeps the etag (the session did not change) and the append keys. It
runs on its own (``compact``) and after an append once the records pass
``max(16 KiB, snapshot / 32)`` bytes, which keeps a load within a few percent of
a folded file's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from xxhash import xxh3_128_hexdigest

from sessionstore.backends.base import Backend
from sessionstore.codec import DecodedSession, decode_document, encode
from sessionstore.errors import ConflictError, SessionNotFoundError
from sessionstore.models import (
    CURRENT_SCHEMA_VERSION,
    DECODED_TEXT,
    MAX_TOKENS,
    StoredSession,
    session_adapter,
)
from sessionstore.records import (
    CURRENT_PREFIX,
    SNAPSHOT_END,
    STORE_LINE_PREFIX,
    FileTail,
    KeyResult,
    RecordError,
    encode_record,
    encode_store_line,
    parse_store_line,
    remember,
    result_of,
    store_keys,
    verify_record,
    walk_to_snapshot_end,
)

__all__ = ["Append", "AppendResult", "Target", "append_locked", "fold_locked", "fold_threshold"]

FOLD_MINIMUM = 16 * 1024
"""Records are folded once they pass this many bytes, or 1/32 of the snapshot if larger."""


@dataclass(frozen=True)
class AppendResult:
    """What ``SessionStore.append`` did: the session's new etag and totals.

    ``replayed`` is True when an append with the same key had already been stored:
    nothing was added and these are that append's results.
    """

    etag: str
    message_count: int
    input_tokens: int
    output_tokens: int
    replayed: bool = False


class TailBackend(Protocol):
    """The optional backend methods of flat-cost appends."""

    def read_tail(self, session_id: str, *, max_bytes: int) -> FileTail | None: ...

    def append_record(
        self, session_id: str, line: bytes, *, identity: object, size: int, keep: int
    ) -> None: ...


def fold_threshold(snapshot_size: int) -> int:
    """Bytes of records past which an append folds them into the snapshot."""
    return max(FOLD_MINIMUM, snapshot_size // 32)


@dataclass(frozen=True)
class _State:
    """The stored session as an append needs it."""

    etag: str
    seq: int
    message_count: int
    input_tokens: int
    output_tokens: int
    size: int
    """Bytes to keep (the file without a torn tail)."""
    torn: int
    snapshot_size: int
    identity: object = None
    find_key: Callable[[str], KeyResult | None] = lambda _key: None


@dataclass(frozen=True)
class Target:
    """Where an append or fold writes: the backend, the session, the size limit.

    ``check_size`` returns an encoded whole document, or raises
    ``SessionTooLargeError`` when it is over ``max_bytes``.
    """

    backend: Backend
    session_id: str
    max_bytes: int
    check_size: Callable[[StoredSession, bytes], bytes]

    @property
    def location(self) -> object:
        return self.backend.location(self.session_id)


@dataclass(frozen=True)
class Append:
    """One append's arguments, checked by the store."""

    messages: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    key: str | None
    now: datetime


def append_locked(target: Target, append: Append, *, if_match: str | None) -> AppendResult:
    """Append under the session's lock (held by the caller).

    Raises ``ConflictError`` (``if_match`` does not match, or there is no session
    to match; nothing written), ``ValueError`` (token totals past the limit),
    ``CorruptSessionError`` and the backend's errors.
    """
    state = _read_state(target)
    if state is None:
        _check_if_match(target, None, if_match)
        return _create(target, append)
    if isinstance(state, DecodedSession):
        replay = state.keys.get(append.key) if append.key is not None else None
        if replay is not None:
            return _replayed(replay)
        _check_if_match(target, state.etag, if_match)
        return _append_to_decoded(target, append, state)
    if append.key is not None:
        replay = state.find_key(append.key)
        if replay is not None:
            return _replayed(replay)
    _check_if_match(target, state.etag, if_match)
    count = state.message_count + len(append.messages)
    totals = _totals(target, state.input_tokens, state.output_tokens, append)
    line, digest = _record(append, state.seq + 1, state.etag, count, totals)
    if state.size + len(line) > target.max_bytes:
        return _fold_with(target, append)
    tail_backend: Any = target.backend
    tail_backend.append_record(
        target.session_id,
        line,
        identity=state.identity,
        size=state.size + state.torn,
        keep=state.size,
    )
    if state.size + len(line) - state.snapshot_size > fold_threshold(state.snapshot_size):
        _fold_quietly(target)
    return AppendResult(digest, count, *totals)


def fold_locked(target: Target) -> str:
    """Fold the session's records into its snapshot (caller holds the lock); return the etag.

    The etag and the remembered append keys stay as they were. Writes nothing when
    there is nothing to fold. Raises ``SessionNotFoundError`` and what ``load`` and
    ``save`` raise.
    """
    decoded = _decode(target)
    if decoded is None:
        raise SessionNotFoundError(
            f"session {target.session_id!r} not found in {target.backend.description} "
            f"(no {target.location})",
            session_id=target.session_id,
            path=target.location,
        )
    if not decoded.records and not decoded.torn_bytes and not decoded.needs_rewrite:
        return decoded.etag
    session = decoded.session
    if decoded.records or decoded.folded_store:
        store_line = encode_store_line(decoded.etag, decoded.keys)
        new = target.check_size(session, encode(session, store_line=store_line))
    else:
        new = target.check_size(session, encode(session))
    return target.backend.write(target.session_id, new)


def _fold_quietly(target: Target) -> None:
    # The append is stored and acknowledged whatever happens here: a fold that
    # fails (a full disk, a damaged record) leaves the file as it was, and the
    # next append or load meets the same state again.
    with contextlib.suppress(Exception):
        fold_locked(target)


def _decode(target: Target) -> DecodedSession | None:
    data = target.backend.read(target.session_id, max_bytes=target.max_bytes)
    if data is None:
        return None
    return decode_document(data, session_id=target.session_id, path=target.location)


def _read_state(target: Target) -> _State | DecodedSession | None:
    """The state from the file's tail when the backend reads tails and the file allows
    it; else the whole decoded session; None when there is no session."""
    read_tail = getattr(target.backend, "read_tail", None)
    if read_tail is not None:
        tail = read_tail(target.session_id, max_bytes=target.max_bytes)
        if tail is None:
            return None
        state = _state_from_tail(tail)
        if state is not None:
            return state
    return _decode(target)


def _state_from_tail(tail: FileTail) -> _State | None:
    """The append state from the end of a file, or None when only a full read can tell
    (an older version, no records yet, anything unusual)."""
    if tail.head != CURRENT_PREFIX:
        return None
    data = tail.data
    complete = data.rfind(b"\n") + 1
    if tail.snapshot_end is None:
        end, lines, _ = walk_to_snapshot_end(data, complete)
    else:
        end, lines = tail.snapshot_end, tail.lines
    if end < 0:
        return None
    snapshot_end = end + len(SNAPSHOT_END)
    if snapshot_end >= complete:
        return None  # no records: the totals are in the snapshot
    region = data[snapshot_end:complete]
    last_start = region.rfind(b"\n", 0, len(region) - 1) + 1
    try:
        last = verify_record(region[last_start:-1])
    except RecordError:
        return None  # the full decode names the damage
    if last["seq"] != lines:
        return None
    line_start = data.rfind(b"\n", 0, end) + 1
    remembered: dict[str, KeyResult] = {}
    if data.startswith(STORE_LINE_PREFIX, line_start):
        try:
            remembered = store_keys(
                parse_store_line(data[line_start + len(STORE_LINE_PREFIX) : end])
            )
        except RecordError:
            return None

    def find_key(key: str) -> KeyResult | None:
        marker = b',"key":' + orjson.dumps(key) + b',"messages":'
        at = region.rfind(marker)
        if at >= 0:
            start = region.rfind(b"\n", 0, at) + 1
            return result_of(verify_record(region[start : region.index(b"\n", at)]))
        return remembered.get(key)

    return _State(
        etag=last["hash"],
        seq=last["seq"],
        message_count=last["message_count"],
        input_tokens=last["input_tokens"],
        output_tokens=last["output_tokens"],
        size=tail.offset + complete,
        torn=len(data) - complete,
        snapshot_size=tail.offset + snapshot_end,
        identity=tail.identity,
        find_key=find_key,
    )


def _append_to_decoded(target: Target, append: Append, decoded: DecodedSession) -> AppendResult:
    """Append when the whole session was read: a record when the file is a current
    snapshot with room for it, else a fold of everything (older versions fold on
    their first append)."""
    if decoded.needs_rewrite:
        return _fold_with(target, append, decoded)
    session = decoded.session
    count = len(session.messages) + len(append.messages)
    totals = _totals(target, session.input_tokens, session.output_tokens, append)
    line, digest = _record(append, decoded.records + 1, decoded.etag, count, totals)
    # The bytes just decoded (under the lock, so still the file's): no second read.
    data = decoded.stored or target.backend.read(target.session_id, max_bytes=target.max_bytes)
    data = data or b""
    keep = len(data) - decoded.torn_bytes
    if not data or keep + len(line) > target.max_bytes:
        return _fold_with(target, append, decoded)
    if hasattr(target.backend, "append_record"):
        tail_backend: Any = target.backend
        tail_backend.append_record(
            target.session_id, line, identity=None, size=len(data), keep=keep
        )
    else:
        target.backend.write(target.session_id, data[:keep] + line)
    snapshot_size = keep - _records_size(data, keep)
    if keep + len(line) - snapshot_size > fold_threshold(snapshot_size):
        _fold_quietly(target)
    return AppendResult(digest, count, *totals)


def _records_size(data: bytes, keep: int) -> int:
    if not data.startswith(CURRENT_PREFIX):
        return 0
    end = data.find(SNAPSHOT_END)
    return 0 if end < 0 else keep - (end + len(SNAPSHOT_END))


def _record(
    append: Append, seq: int, prev: str, count: int, totals: tuple[int, int]
) -> tuple[bytes, str]:
    return encode_record(
        seq=seq,
        prev=prev,
        key=append.key,
        messages=append.messages,
        message_count=count,
        input_tokens=totals[0],
        output_tokens=totals[1],
        updated_at=_timestamp(append.now),
    )


def _fold_with(
    target: Target, append: Append, decoded: DecodedSession | None = None
) -> AppendResult:
    """Append by writing one whole snapshot that holds the new messages (an older
    version, or no room for a record). Its etag is the record's would-be hash."""
    if decoded is None:
        decoded = _decode(target)
        if decoded is None:  # pragma: no cover - the caller holds the lock
            return _create(target, append)
    totals = _totals(target, decoded.session.input_tokens, decoded.session.output_tokens, append)
    session = _appended(decoded.session, append, totals)
    _, digest = _record(append, decoded.records + 1, decoded.etag, len(session.messages), totals)
    result = AppendResult(digest, len(session.messages), *totals)
    keys = dict(decoded.keys)
    if append.key is not None:
        remember(keys, append.key, KeyResult(digest, len(session.messages), *totals))
    store_line = encode_store_line(digest, keys)
    target.backend.write(
        target.session_id, target.check_size(session, encode(session, store_line=store_line))
    )
    return result


def _create(target: Target, append: Append) -> AppendResult:
    session = StoredSession(
        session_id=target.session_id,
        messages=append.messages,
        input_tokens=append.input_tokens,
        output_tokens=append.output_tokens,
        created_at=append.now,
        updated_at=append.now,
    )
    count, totals = len(append.messages), (append.input_tokens, append.output_tokens)
    plain = encode(session)
    if append.key is None:
        etag = target.backend.create(target.session_id, target.check_size(session, plain))
        return AppendResult(etag, count, *totals)
    etag = xxh3_128_hexdigest(plain)
    store_line = encode_store_line(etag, {append.key: KeyResult(etag, count, *totals)})
    target.backend.create(
        target.session_id, target.check_size(session, encode(session, store_line=store_line))
    )
    return AppendResult(etag, count, *totals)


def _replayed(result: KeyResult) -> AppendResult:
    return AppendResult(
        result.etag, result.message_count, result.input_tokens, result.output_tokens, True
    )


def _appended(session: StoredSession, append: Append, totals: tuple[int, int]) -> StoredSession:
    return session_adapter().validate_python(
        {
            **session.__dict__,
            "messages": session.messages + append.messages,
            "input_tokens": totals[0],
            "output_tokens": totals[1],
            "updated_at": append.now,
            "schema_version": CURRENT_SCHEMA_VERSION,
        },
        context=DECODED_TEXT,
    )


def _totals(target: Target, stored_in: int, stored_out: int, append: Append) -> tuple[int, int]:
    totals = (stored_in + append.input_tokens, stored_out + append.output_tokens)
    if max(totals) > MAX_TOKENS:
        msg = (
            f"session {target.session_id!r}: the token totals would be {totals[0]} and "
            f"{totals[1]}, over the largest a session holds ({MAX_TOKENS}); nothing written"
        )
        raise ValueError(msg)
    return totals


def _check_if_match(target: Target, etag: str | None, if_match: str | None) -> None:
    if if_match is not None and if_match != etag:
        found = etag or "no session"
        raise ConflictError(
            f"session {target.session_id!r} in {target.backend.description} changed since it "
            f"was read (expected etag {if_match}, found {found}); nothing written",
            session_id=target.session_id,
            path=target.location,
        )


def _timestamp(now: datetime) -> str:
    """``now`` as orjson writes a UTC datetime in a snapshot (``...+00:00``)."""
    return orjson.dumps(now).decode()[1:-1]
