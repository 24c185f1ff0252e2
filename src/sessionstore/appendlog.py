"""Appends and folds: the policy of the append log, over any backend.

Callers hold the session's lock (``Backend.lock``). An append finds the file's
current state, checks the key and ``if_match``, and adds one record line (see
``records``). A backend that offers ``read_tail`` and ``append_record`` (the file
backend does) lets an append read only the end of the file and write with one
``write()`` and one fdatasync, whatever the session's size; any other backend
gets the same bytes through a whole-document ``write``.

A backend whose appends can check the session's state themselves (PostgreSQL: the
statement that stores a record checks, under the lock, that the record follows the
session's last one) may also offer ``known_tail`` and ``append_record_if_last``:
``append_session`` then builds the record from the tail the backend remembers and
stores it without the caller taking the lock first, one round trip; when the
backend refuses it (the session moved on), it falls back to ``append_locked``.

A fold rewrites snapshot + records as one snapshot with the backend's atomic
write. It keeps the etag (the session did not change) and the append keys. It
runs on its own (``compact``) and after an append once the records pass
``max(16 KiB, snapshot / 10)`` bytes. A load checks records about three times
slower per byte than it validates a snapshot, so a tenth keeps a load within about
1.3x of the folded file's from ~1,000 messages up, while a growing conversation
rewrites its snapshot only once per ~5% of growth, fewer than once per hundred
turns (each fold is a full atomic rewrite with two syncs: the 99th percentile of
an append is not a fold).

An append of this process remembers what it left in the file (``_KNOWN``): the
next append checks, with one ``fstat`` and one ``pread`` of the last line, that
nobody wrote the file since (same inode, size, mtime, ctime and last line) and then
skips the tail read and the check of the records entirely. Any other writer, a
fold, a save or damage changes the ctime, and the append reads the tail again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson
from xxhash import xxh3_128_hexdigest

from sessionstore.backends.base import Backend
from sessionstore.codec import DecodedSession, decode_document, encode, encode_folded
from sessionstore.errors import (
    CommitUnknownError,
    ConflictError,
    SessionNotFoundError,
    SessionStoreError,
)
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
    parse_store_line,
    remember,
    result_of,
    split_layout,
    store_keys,
    verify_record,
    walk_to_snapshot_end,
)

__all__ = [
    "Append",
    "AppendResult",
    "Target",
    "append_locked",
    "append_session",
    "fold_locked",
    "fold_threshold",
    "not_found",
    "refuse_if_missing",
]

FOLD_MINIMUM = 16 * 1024
"""Records are folded once they pass this many bytes, or ``snapshot / FOLD_RATIO``
if larger."""

FOLD_RATIO = 10
"""Records are folded once they pass this fraction of the snapshot (see ``FOLD_MINIMUM``)."""


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
    ) -> object:
        """Store ``line`` after the session's records; return a stamp for
        ``unchanged_since`` (None: the backend has none)."""
        ...


class CheckedTailBackend(Protocol):
    """The optional backend methods of appends that check the session's state themselves."""

    def known_tail(self, session_id: str, *, max_bytes: int) -> FileTail | None:
        """The session's tail as the backend last saw it (no I/O), or None."""
        ...

    def append_record_if_last(self, session_id: str, line: bytes) -> bool:
        """Store ``line`` (taking the session's lock) only if it follows the session's
        last record (its ``seq`` and ``prev``); False, and nothing written, if not."""
        ...


def fold_threshold(snapshot_size: int) -> int:
    """Bytes of records past which an append folds them into the snapshot."""
    return max(FOLD_MINIMUM, snapshot_size // FOLD_RATIO)


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
    """When the call was made. What is written takes the time it is written, under the
    session's lock (``_written_at``), so ``updated_at`` never goes back when an append
    waited for the lock behind a later one."""


def _written_at(append: Append) -> datetime:
    return max(append.now, datetime.now(timezone.utc))


def append_locked(target: Target, append: Append, *, if_match: str | None) -> AppendResult:
    """Append under the session's lock (held by the caller).

    Raises ``ConflictError`` (``if_match`` does not match, or there is no session
    to match; nothing written), ``ValueError`` (token totals past the limit),
    ``CorruptSessionError`` and the backend's errors.
    """
    state: _State | DecodedSession | None = _known_state(target)
    if state is None:
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
    with _naming(digest):
        stamp = tail_backend.append_record(
            target.session_id,
            line,
            identity=state.identity,
            size=state.size + state.torn,
            keep=state.size,
        )
    result = AppendResult(digest, count, *totals)
    if state.size + len(line) - state.snapshot_size > fold_threshold(state.snapshot_size):
        _KNOWN.pop(target.location, None)
        _fold_quietly(target)
    else:
        _remember_append(target, state, line=line, stamp=stamp, key=append.key, result=result)
    return result


def append_session(
    target: Target,
    append: Append,
    *,
    if_match: str | None,
    lock: Callable[[str], AbstractContextManager[None]],
) -> AppendResult:
    """Append, taking the session's lock (``lock``) only when the backend cannot store
    the record from its known tail on its own (see the module docstring). Raises
    what ``append_locked`` raises."""
    known_tail = getattr(target.backend, "known_tail", None)
    if known_tail is not None:
        tail = known_tail(target.session_id, max_bytes=target.max_bytes)
        state = None if tail is None else _state_from_tail(tail, target)
        if state is not None:
            result = _append_if_last(target, append, state, if_match)
            if result is not None:
                return result
    result = None
    try:
        with lock(target.session_id):
            result = append_locked(target, append, if_match=if_match)
    except CommitUnknownError as exc:
        # The commit that ends the lock failed: name the etag the append would give.
        if exc.etag is None and result is not None:
            exc.etag = result.etag
        raise
    return result


def _append_if_last(
    target: Target, append: Append, state: _State, if_match: str | None
) -> AppendResult | None:
    """The append as one checked record after ``state``, or None when only the locked
    path can tell what to do (a known key, another etag, a fold due, a limit)."""
    if state.torn or (append.key is not None and state.find_key(append.key) is not None):
        return None
    if if_match is not None and if_match != state.etag:
        return None
    count = state.message_count + len(append.messages)
    totals = (state.input_tokens + append.input_tokens, state.output_tokens + append.output_tokens)
    if max(totals) > MAX_TOKENS:
        return None
    line, digest = _record(append, state.seq + 1, state.etag, count, totals)
    size = state.size + len(line)
    if size > target.max_bytes or size - state.snapshot_size > fold_threshold(state.snapshot_size):
        return None
    backend: Any = target.backend
    if not backend.append_record_if_last(target.session_id, line):
        return None
    return AppendResult(digest, count, *totals)


def fold_locked(target: Target) -> str:
    """Fold the session's records into its snapshot (caller holds the lock); return the etag.

    The etag and the remembered append keys stay as they were. Writes nothing when
    there is nothing to fold. Raises ``SessionNotFoundError`` and what ``load`` and
    ``save`` raise.
    """
    decoded = _decode(target)
    if decoded is None:
        raise not_found(target)
    if not decoded.records and not decoded.torn_bytes and not decoded.needs_rewrite:
        return decoded.etag
    session = decoded.session
    # The fold keeps the etag (of records, of an older version's bytes): a caller's
    # etag from before still matches.
    new = encode_folded(session, etag=decoded.etag, keys=decoded.keys)
    return target.backend.write(target.session_id, target.check_size(session, new))


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
        state = _state_from_tail(tail, target)
        if state is not None:
            return state
    return _decode(target)


def _state_from_tail(tail: FileTail, target: Target) -> _State | None:
    """The append state from the end of a file, or None when only a full read can tell
    (an older version, no records yet, anything unusual, damage)."""
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
        state = _state_after_a_fold(tail, end, snapshot_end, complete)
        if state is None or not _snapshot_intact(target, tail, end, None):
            return None
        return state
    region = data[snapshot_end:complete]
    line_start = data.rfind(b"\n", 0, end) + 1
    store_line = b""
    if data.startswith(STORE_LINE_PREFIX, line_start):
        store_line = data[line_start + len(STORE_LINE_PREFIX) : end]
    try:
        last = _verified_records(tail, snapshot_end, complete)
    except RecordError:
        return None  # damaged: the full decode names the damage, and nothing is written
    if not _snapshot_intact(target, tail, end, region[: region.index(b"\n")]):
        return None
    if last["seq"] != lines:
        return None

    def find_key(key: str) -> KeyResult | None:
        # Raw quotes cannot occur inside a JSON string, so the key's encoded form
        # followed by what comes after a key finds it, and only it.
        encoded = orjson.dumps(key)
        at = region.rfind(b',"key":' + encoded + b',"messages":')
        if at >= 0:
            start = region.rfind(b"\n", 0, at) + 1
            return result_of(verify_record(region[start : region.index(b"\n", at)]))
        if encoded + b":[" not in store_line:
            return None  # not remembered: no need to parse the store line
        return _store_line_keys(store_line).get(key)

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


@dataclass(frozen=True)
class _Known:
    """What an append of this process left in a session's file: its state, and the
    keys of the appends made since that state was read from the file."""

    state: _State
    stamp: object
    """The file's stamp after the append (``append_record``'s result)."""
    last_line: bytes
    recent: dict[str, KeyResult]


_KNOWN: dict[object, _Known] = {}
"""Session file (its location) -> what this process's last append left there."""

_KNOWN_LIMIT = 64
"""Sessions remembered in ``_KNOWN`` (each holds its records' bytes for ``find_key``).
Each entry is read and written only under its session's lock; ``_KNOWN_EVICTION``
serialises the removal of the oldest entries by threads appending to other sessions."""

_KNOWN_EVICTION = threading.Lock()


def _known_state(target: Target) -> _State | None:
    """The state this process's last append left, if nobody wrote the file since (its
    stamp and last line are the same): then an append needs no tail read, walk or
    check, whatever the number of records. None otherwise."""
    known = _KNOWN.get(target.location)
    if known is None:
        return None
    unchanged = getattr(target.backend, "unchanged_since", None)
    if unchanged is None or not unchanged(target.session_id, known.stamp, known.last_line):
        _KNOWN.pop(target.location, None)
        return None
    return known.state


def _remember_append(
    target: Target,
    state: _State,
    *,
    line: bytes,
    stamp: object,
    key: str | None,
    result: AppendResult,
) -> None:
    """Remember the state ``line``'s append left (see ``_known_state``)."""
    if stamp is None:
        return
    known = _KNOWN.pop(target.location, None)
    if known is not None and known.state is state:
        recent = known.recent  # the same lineage: keep adding to it
    else:
        recent = {}
        if len(_KNOWN) >= _KNOWN_LIMIT:
            with _KNOWN_EVICTION:  # threads appending to other sessions may evict too
                for oldest in list(_KNOWN)[: len(_KNOWN) - _KNOWN_LIMIT + 1]:
                    _KNOWN.pop(oldest, None)
    if key is not None:
        recent[key] = KeyResult(
            result.etag, result.message_count, result.input_tokens, result.output_tokens
        )
    earlier = state.find_key

    def find_key(wanted: str) -> KeyResult | None:
        found = recent.get(wanted)
        return found if found is not None else earlier(wanted)

    new = _State(
        etag=result.etag,
        seq=state.seq + 1,
        message_count=result.message_count,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        size=state.size + len(line),
        torn=0,
        snapshot_size=state.snapshot_size,
        identity=state.identity,
        find_key=find_key if known is None or known.state is not state else state.find_key,
    )
    _KNOWN[target.location] = _Known(new, stamp, line, recent)


_INTACT: set[tuple[object, int]] = set()
"""Snapshots (file identity, where the snapshot ends) this process found intact."""


def _snapshot_intact(target: Target, tail: FileTail, end: int, first_record: bytes | None) -> bool:
    """True when the snapshot before the records is the one they were appended to, in
    the session's own file: its id is the session's, and its bytes hash to the first
    record's ``prev`` (a fold's snapshot: to the digest its store line recorded). So an
    append is never acknowledged on a file whose load refuses its snapshot. Checked
    once per file and process (one read and one XXH3 of the snapshot, the first time an
    append of this process meets the file; a fold makes a new file). Tails without a
    file identity (PostgreSQL, whose server checks the chain's start) need no check."""
    snapshot_end = tail.offset + end + len(SNAPSHOT_END)
    key = (tail.identity, snapshot_end)
    if tail.identity is None or key in _INTACT:
        return True
    data = tail.data if tail.offset == 0 else _read_quietly(target)
    head = CURRENT_PREFIX + b'\n  "session_id": ' + orjson.dumps(target.session_id) + b",\n"
    if data is None or not data.startswith(head):
        return False
    try:
        layout = split_layout(data)
        prev = None if first_record is None else verify_record(first_record)["prev"]
    except RecordError:
        return False
    if layout.snapshot_end != snapshot_end:
        return False
    base: str | None
    if layout.store is None:
        base = xxh3_128_hexdigest(memoryview(data)[:snapshot_end])
    elif layout.store.get("digest") == xxh3_128_hexdigest(layout.document):
        base = layout.store.get("etag")
    else:
        return False
    if prev is not None and prev != base:
        return False
    if len(_INTACT) >= 256:
        _INTACT.clear()
    _INTACT.add(key)
    return True


def _read_quietly(target: Target) -> bytes | None:
    try:
        return target.backend.read(target.session_id, max_bytes=target.max_bytes)
    except SessionStoreError:
        return None  # the full decode that follows reports it


_STORE_LINES: dict[str, dict[str, KeyResult]] = {}
"""Store lines checked lately, by digest: a store line holds up to ``KEY_MEMORY`` keys,
and checking it on every append would cost more than the append's own work."""


def _state_after_a_fold(
    tail: FileTail, end: int, snapshot_end: int, complete: int
) -> _State | None:
    """The state of a folded snapshot with no records yet, from its store line (etag and
    totals), so the first append after a fold does not read the whole snapshot; None
    when there is no such line (a saved file: the totals are in the snapshot)."""
    data = tail.data
    line_start = data.rfind(b"\n", 0, end) + 1
    if not data.startswith(STORE_LINE_PREFIX, line_start):
        return None
    try:
        store = parse_store_line(data[line_start + len(STORE_LINE_PREFIX) : end])
    except RecordError:
        return None
    etag, totals = store.get("etag"), store.get("totals")
    if etag is None or totals is None:
        return None
    keys = store_keys(store)
    return _State(
        etag=etag,
        seq=0,
        message_count=totals[0],
        input_tokens=totals[1],
        output_tokens=totals[2],
        size=tail.offset + complete,
        torn=len(data) - complete,
        snapshot_size=tail.offset + snapshot_end,
        identity=tail.identity,
        find_key=keys.get,
    )


_VERIFIED: dict[tuple[object, int], tuple[int, str, str, int, int]] = {}
"""(file, where its records start) -> how far this process has checked them: (end
offset, XXH3 of the checked bytes, last hash, last seq, message count)."""


def _verified_records(tail: FileTail, snapshot_end: int, complete: int) -> dict[str, Any]:
    """Check every record of the tail (hash, sequence, chain, counts) and return the last.

    An append must not be acknowledged on a file whose earlier records are damaged
    (its load would refuse it): so each record is checked once per process, and
    later appends check only the records added since, after one XXH3 pass (tens of
    GB/s) shows the ones checked before are byte for byte unchanged. Raises
    ``RecordError``.
    """
    data = tail.data
    key = (tail.identity, tail.offset + snapshot_end)
    start, prev, seq, count = snapshot_end, "", 0, -1
    known = _VERIFIED.get(key)
    if known is not None and known[0] <= tail.offset + complete:
        checked_end = known[0] - tail.offset
        if xxh3_128_hexdigest(memoryview(data)[snapshot_end:checked_end]) == known[1]:
            start = checked_end
            _, _, prev, seq, count = known
    last: dict[str, Any] | None = None
    while start < complete:
        end = data.index(b"\n", start)
        record = verify_record(data[start:end])
        seq += 1
        if record["seq"] != seq or (prev and record["prev"] != prev):
            msg = f"record {record['seq']} does not follow record {seq - 1}"
            raise RecordError(msg, reason="broken-chain")
        if count >= 0 and record["message_count"] != count + len(record["messages"]):
            msg = f"record {seq} miscounts the messages"
            raise RecordError(msg, reason="broken-chain")
        prev, count, last = record["hash"], record["message_count"], record
        start = end + 1
    if last is None:  # nothing new since the last check: read the last record again
        last_start = data.rfind(b"\n", 0, complete - 1) + 1
        last = verify_record(data[last_start : complete - 1])
        if last["hash"] != prev:
            msg = "the last record is not the one checked before"
            raise RecordError(msg, reason="broken-chain")
    if len(_VERIFIED) >= 256:
        _VERIFIED.clear()
    checked = xxh3_128_hexdigest(memoryview(data)[snapshot_end:complete])
    _VERIFIED[key] = (tail.offset + complete, checked, prev, seq, count)
    return last


def _store_line_keys(text: bytes) -> dict[str, KeyResult]:
    """The keys of a store line (read only: the dict may be shared); raises ``RecordError``."""
    digest = xxh3_128_hexdigest(text)
    keys = _STORE_LINES.get(digest)
    if keys is None:
        keys = store_keys(parse_store_line(text))
        if len(_STORE_LINES) >= 16:
            _STORE_LINES.clear()
        _STORE_LINES[digest] = keys
    return keys


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
    if not _takes_records(data, keep) or keep + len(line) > target.max_bytes:
        # A snapshot laid out otherwise (CRLF, no final newline, another tool's JSON)
        # loads, but a record after it would not: write it out as this library does.
        return _fold_with(target, append, decoded)
    stamp = None
    with _naming(digest):
        if hasattr(target.backend, "append_record"):
            tail_backend: Any = target.backend
            stamp = tail_backend.append_record(
                target.session_id, line, identity=None, size=len(data), keep=keep
            )
        else:
            target.backend.write(target.session_id, data[:keep] + line)
    result = AppendResult(digest, count, *totals)
    snapshot_size = keep - _records_size(data, keep)
    if keep + len(line) - snapshot_size > fold_threshold(snapshot_size):
        _KNOWN.pop(target.location, None)
        _fold_quietly(target)
    else:
        before = _State(
            etag=decoded.etag,
            seq=decoded.records,
            message_count=len(session.messages),
            input_tokens=session.input_tokens,
            output_tokens=session.output_tokens,
            size=keep,
            torn=0,
            snapshot_size=snapshot_size,
            find_key=decoded.keys.get,
        )
        _remember_append(target, before, line=line, stamp=stamp, key=append.key, result=result)
    return result


def _takes_records(data: bytes, keep: int) -> bool:
    """True when a record may follow the first ``keep`` bytes: a snapshot as ``encode``
    lays it out (its closing brace on a line of its own), then whole record lines."""
    if not data.startswith(CURRENT_PREFIX) or data[keep - 1 : keep] != b"\n":
        return False
    end = data.find(SNAPSHOT_END)
    return end >= 0 and end + len(SNAPSHOT_END) <= keep


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
        updated_at=_timestamp(_written_at(append)),
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
    data = target.check_size(session, encode_folded(session, etag=digest, keys=keys))
    with _naming(digest):
        target.backend.write(target.session_id, data)
    return result


def _create(target: Target, append: Append) -> AppendResult:
    now = _written_at(append)
    session = StoredSession(
        session_id=target.session_id,
        messages=append.messages,
        input_tokens=append.input_tokens,
        output_tokens=append.output_tokens,
        created_at=now,
        updated_at=now,
    )
    count, totals = len(append.messages), (append.input_tokens, append.output_tokens)
    plain = encode(session)
    etag = xxh3_128_hexdigest(plain)
    if append.key is None:
        data = target.check_size(session, plain)
    else:
        keys = {append.key: KeyResult(etag, count, *totals)}
        data = target.check_size(session, encode_folded(session, etag=etag, keys=keys))
    with _naming(etag):
        target.backend.create(target.session_id, data)
    return AppendResult(etag, count, *totals)


@contextlib.contextmanager
def _naming(etag: str) -> Iterator[None]:
    """Give a ``CommitUnknownError`` the etag the session has if the write landed."""
    try:
        yield
    except CommitUnknownError as exc:
        if exc.etag is None:
            exc.etag = etag
        raise


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
            "updated_at": _written_at(append),
            "schema_version": CURRENT_SCHEMA_VERSION,
        },
        context=DECODED_TEXT,
    )


def _totals(target: Target, stored_in: int, stored_out: int, append: Append) -> tuple[int, int]:
    totals = (stored_in + append.input_tokens, stored_out + append.output_tokens)
    for name, total in zip(("input_tokens", "output_tokens"), totals, strict=True):
        if total > MAX_TOKENS:
            msg = (
                f"session {target.session_id!r}: {name} would total {total}, over the "
                f"largest a session holds ({MAX_TOKENS}); nothing written"
            )
            raise ValueError(msg)
    return totals


def not_found(target: Target) -> SessionNotFoundError:
    """The error for a session that is not there (``compact``)."""
    return SessionNotFoundError(
        f"session {target.session_id!r} not found in {target.backend.description} "
        f"(no {target.location})",
        session_id=target.session_id,
        path=target.location,
    )


def refuse_if_missing(target: Target, if_match: str | None) -> None:
    """Raise ``ConflictError`` for an append with ``if_match`` to a session that is not
    there, before its lock is taken (taking it would create the store's folders)."""
    if if_match is not None and not target.backend.exists(target.session_id):
        _check_if_match(target, None, if_match)


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
