"""The append log's byte format: record lines after a snapshot, and the etag of stored bytes.

No I/O here. A version-3 session file is a snapshot (the pretty document ``codec``
writes, ending in a line that is exactly ``}``) followed by zero or more records:

    {"seq":1,"prev":"<etag>","key":null,"messages":["hi"],"message_count":3,...,"hash":"<32 hex>"}

Each record is one line holding one compact JSON object, so the file reads as a
stream of JSON texts (``jq -c . FILE``). ``prev`` is the etag of the file the record
was appended to (the snapshot's etag for the first record, the previous record's
``hash`` after that); ``hash`` is XXH3-128 of the line's bytes up to ``,"hash":``
with a closing ``}``. So a record cannot be torn, spliced, reordered, dropped or
duplicated without ``read_chain`` noticing.

A snapshot written by a fold carries one more line before its closing brace,
``  "store": {...}``: the etag the file had before the fold (a fold keeps the etag)
and the append keys remembered so far, so retries stay exactly-once across folds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from xxhash import xxh3_128_hexdigest

from sessionstore.models import CURRENT_SCHEMA_VERSION, MAX_TOKENS

__all__ = [
    "CURRENT_PREFIX",
    "KEY_MEMORY",
    "MAX_KEY_LENGTH",
    "STORE_LINE_PREFIX",
    "Chain",
    "FileTail",
    "KeyResult",
    "Layout",
    "RecordError",
    "check_store",
    "encode_record",
    "encode_store_line",
    "read_chain",
    "split_layout",
    "stored_etag",
    "verify_record",
    "walk_to_snapshot_end",
]

CURRENT_PREFIX = b'{\n  "schema_version": %d,' % CURRENT_SCHEMA_VERSION
"""How every snapshot ``codec.encode`` writes begins; only such files may have records."""

SNAPSHOT_END = b"\n}\n"
"""The snapshot's last line: the only line of a session file that is exactly ``}``."""

STORE_LINE_PREFIX = b'  "store": '
"""The line a fold adds before the snapshot's closing brace."""

KEY_MEMORY = 1000
"""How many of the latest append keys a session remembers (older ones may repeat)."""

MAX_KEY_LENGTH = 256
"""Longest append key, in characters."""

_HASH_TAIL = re.compile(rb',"hash":"([0-9a-f]{32})"\}\Z')
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
_RECORD_START = b'{"seq":'
_RECORD_FIELDS = (
    "seq",
    "prev",
    "key",
    "messages",
    "message_count",
    "input_tokens",
    "output_tokens",
    "updated_at",
    "hash",
)


class RecordError(ValueError):
    """Bytes after a snapshot that are not the intact, chained records they should be."""

    def __init__(self, detail: str, *, reason: str = "damaged-record") -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class KeyResult:
    """What an append with a key returned: a retry with that key returns it again."""

    etag: str
    message_count: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class FileTail:
    """The end of a stored file, as a backend's ``read_tail`` returns it.

    ``head`` is the file's first bytes (enough to tell its version); ``data`` the
    bytes from ``offset`` to the end (``size``), reaching back at least to the line
    before the snapshot's closing brace; ``identity`` names the file, so that
    ``append_record`` can refuse a file replaced in between.
    """

    size: int
    identity: object
    head: bytes
    data: bytes
    offset: int
    snapshot_end: int | None = None
    """Where ``walk_to_snapshot_end`` found the snapshot's ``\\n}\\n`` in ``data`` (-1:
    not there), with ``lines`` complete lines after it; None: not looked for yet."""
    lines: int = 0


@dataclass(frozen=True)
class Layout:
    """Where the parts of stored bytes are.

    ``document`` is the session document to validate (a folded snapshot without its
    store line); ``store`` is the parsed store line (or None); ``records`` the bytes
    of the complete lines after the snapshot; ``torn`` how many bytes at the end
    belong to no complete line (an append that never finished).
    """

    document: bytes
    snapshot_end: int
    store: dict[str, Any] | None
    records: bytes
    torn: int


def split_layout(data: bytes) -> Layout:
    """Split stored bytes into snapshot, store line, records and torn tail.

    Only a current-version file as ``codec`` writes it can carry records or a store
    line; anything else is all document (and the codec decides what it is). Raises
    ``RecordError`` for a store line that is not what a fold writes.
    """
    if not data.startswith(CURRENT_PREFIX):
        return Layout(data, len(data), None, b"", 0)
    end = find_snapshot_end(data)
    if end < 0:
        return Layout(data, len(data), None, b"", 0)
    snapshot_end = end + len(SNAPSHOT_END)
    complete = data.rfind(b"\n") + 1
    records = data[snapshot_end:complete] if complete > snapshot_end else b""
    torn = len(data) - max(complete, snapshot_end)
    document = data[:snapshot_end] if snapshot_end < len(data) else data
    store = None
    line_start = data.rfind(b"\n", 0, end) + 1
    if data.startswith(STORE_LINE_PREFIX, line_start):
        store = parse_store_line(data[line_start + len(STORE_LINE_PREFIX) : end])
        # The document without its store line: the comma before it goes too.
        before = line_start - 1
        if before < 1 or data[before - 1 : before] != b",":
            raise RecordError("the store line does not follow a field", reason="bad-store-line")
        document = data[: before - 1] + SNAPSHOT_END
    return Layout(document, snapshot_end, store, records, torn)


_SCAN_LIMIT = 64
"""Closing braces ``find_snapshot_end`` looks at one by one before it scans bytewise."""


def find_snapshot_end(data: bytes, start: int = 0) -> int:
    """``data.find(SNAPSHOT_END, start)``, faster.

    ``bytes.find`` scans a three-byte needle bytewise (under 1 GB/s here: 3 ms for
    a 2 MB snapshot, half the cost of validating it), while a one-byte needle is a
    ``memchr``. A snapshot holds few ``}`` (its own and those of nested metadata,
    plus any in message text), so look at each ``}`` in turn; past ``_SCAN_LIMIT``
    of them (text full of braces), finish with ``bytes.find``. Same result.
    """
    find = data.find
    at = find(b"}", start + 1)
    for _ in range(_SCAN_LIMIT):
        if at < 0:
            return -1
        if data[at - 1] == 10 and data[at + 1 : at + 2] == b"\n":
            return at - 1
        at = find(b"}", at + 1)
    return -1 if at < 0 else find(SNAPSHOT_END, at - 1)


def walk_to_snapshot_end(data: bytes, pos: int, lines: int = 0) -> tuple[int, int, int]:
    """Walk back over the complete lines of ``data`` that start before ``pos`` (the
    start of a line already looked at, or the end of the last complete line plus
    one) to the last line that is exactly ``}`` with a newline before it.

    Returns ``(at, lines, pos)``: ``at`` is ``data.rfind(SNAPSHOT_END, 0, pos)``
    (-1: not in ``data``), ``lines`` counts on the lines walked past (the records
    after the snapshot), and ``pos`` is where to go on when more bytes are put in
    front of ``data`` (shift it by their length). One ``memrchr`` per line instead
    of ``bytes.rfind`` of three bytes, which scans bytewise (under 1 GB/s).
    """
    rfind = data.rfind
    while pos > 0:
        end = pos - 1
        start = rfind(b"\n", 0, end) + 1
        if start == 0:
            break  # this line may begin before ``data``: more bytes are needed
        if end - start == 1 and data[start] == 0x7D:  # the line is "}"
            return start - 1, lines, pos
        lines += 1
        pos = start
    return -1, lines, pos


def stored_etag(data: bytes) -> str:
    """The etag of stored bytes: the last record's hash when records follow the
    snapshot, the etag a fold kept when the snapshot has a store line, else XXH3-128
    of the bytes (without a torn tail). O(1) for a file with records."""
    if not data.startswith(CURRENT_PREFIX):
        return xxh3_128_hexdigest(data)
    complete = data.rfind(b"\n") + 1
    last_start = data.rfind(b"\n", 0, complete - 1) + 1
    if data.startswith(_RECORD_START, last_start):
        match = _HASH_TAIL.search(data, last_start, complete - 1)
        if match:
            return match[1].decode("ascii")
    elif data[last_start:complete] == b"}\n":
        line_start = data.rfind(b"\n", 0, last_start - 1) + 1
        if data.startswith(STORE_LINE_PREFIX + b'{"etag":"', line_start):
            begin = line_start + len(STORE_LINE_PREFIX) + 9
            etag = data[begin : begin + 32].decode("ascii", "replace")
            if _HEX32.match(etag):
                return etag
    return xxh3_128_hexdigest(data[:complete] if complete else data)


def encode_record(
    *,
    seq: int,
    prev: str,
    key: str | None,
    messages: tuple[str, ...],
    message_count: int,
    input_tokens: int,
    output_tokens: int,
    updated_at: str,
) -> tuple[bytes, str]:
    """One record line (with its newline) and its hash. The values must be valid."""
    body = orjson.dumps(
        {
            "seq": seq,
            "prev": prev,
            "key": key,
            "messages": messages,
            "message_count": message_count,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "updated_at": updated_at,
        }
    )
    digest = xxh3_128_hexdigest(body)
    return body[:-1] + b',"hash":"' + digest.encode("ascii") + b'"}\n', digest


def verify_record(line: bytes) -> dict[str, Any]:
    """Parse and check one record line (without its newline); return its fields.

    Raises ``RecordError`` when the hash does not match its bytes or a field is not
    what the append log writes.
    """
    match = _HASH_TAIL.search(line)
    if not line.startswith(_RECORD_START) or match is None:
        msg = "a line after the snapshot is not a record"
        raise RecordError(msg)
    body = line[: match.start()] + b"}"
    if xxh3_128_hexdigest(body) != match[1].decode("ascii"):
        msg = "a record's bytes do not match its hash"
        raise RecordError(msg)
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        msg = f"a record is not valid JSON ({exc})"
        raise RecordError(msg) from None
    if type(record) is not dict or tuple(record) != _RECORD_FIELDS:
        msg = "a record does not have the fields the append log writes"
        raise RecordError(msg)
    _check_record_fields(record)
    return record


def _check_record_fields(record: dict[str, Any]) -> None:
    counts = (record["seq"], record["message_count"], record["input_tokens"])
    ok = (
        all(type(value) is int and 0 <= value <= MAX_TOKENS for value in counts)
        and type(record["output_tokens"]) is int
        and 0 <= record["output_tokens"] <= MAX_TOKENS
        and type(record["prev"]) is str
        and _HEX32.match(record["prev"]) is not None
        and (record["key"] is None or _valid_key(record["key"]))
        and type(record["messages"]) is list
        and all(type(message) is str for message in record["messages"])
        and type(record["updated_at"]) is str
    )
    if not ok:
        msg = f"record {record.get('seq')!r} has a field of the wrong type or range"
        raise RecordError(msg)


def _valid_key(key: object) -> bool:
    return type(key) is str and 0 < len(key) <= MAX_KEY_LENGTH


@dataclass
class Chain:
    """The records after a snapshot, checked and in order."""

    count: int = 0
    """How many records there are."""
    messages: list[str] = field(default_factory=list)
    """The messages they add, in order."""
    last: dict[str, Any] | None = None
    """The last record's fields (its totals are the session's), or None."""
    keys: dict[str, KeyResult] = field(default_factory=dict)
    """Append keys remembered: the store line's, then each record's, oldest first."""


def read_chain(
    layout: Layout, *, snapshot_etag: str, message_count: int, remembered: dict[str, KeyResult]
) -> Chain:
    """Check every record after the snapshot and return them with the key memory.

    Every complete line must be an intact record chained to the one before (the
    first to ``snapshot_etag``), counting messages on from ``message_count``. A torn
    tail (``layout.torn``) is not looked at. Raises ``RecordError`` otherwise: an
    acknowledged record is never dropped silently.
    """
    fast = _read_chain_fast(layout.records, snapshot_etag, message_count, remembered)
    if fast is not None:
        return fast
    return _read_chain_exact(layout.records, snapshot_etag, message_count, remembered)


def _read_chain_exact(
    records: bytes, snapshot_etag: str, message_count: int, remembered: dict[str, KeyResult]
) -> Chain:
    """``read_chain`` record by record: every check on each line, naming the first
    problem. Raises ``RecordError``."""
    chain = Chain(keys=dict(remembered))
    prev, count = snapshot_etag, message_count
    record: dict[str, Any] | None = None
    for seq, line in enumerate(_lines(records), start=1):
        record = verify_record(line)
        if record["seq"] != seq or record["prev"] != prev:
            msg = (
                f"record {seq} (line {record['seq']}) does not follow the one before it: "
                "a record was dropped, duplicated, reordered or spliced in"
            )
            raise RecordError(msg, reason="broken-chain")
        count += len(record["messages"])
        if record["message_count"] != count:
            msg = f"record {seq} says {record['message_count']} messages, the log holds {count}"
            raise RecordError(msg, reason="broken-chain")
        prev = record["hash"]
        chain.count = seq
        chain.messages += record["messages"]
        if record["key"] is not None:
            remember(chain.keys, record["key"], result_of(record))
    chain.last = record
    return chain


_HASH_SUFFIX = len(',"hash":"') + 32 + len('"}')


def _read_chain_fast(
    records: bytes, prev: str, count: int, remembered: dict[str, KeyResult]
) -> Chain | None:
    """``read_chain``'s result when every record is intact and chained, else None
    (``read_chain`` then walks the records again and names the first problem).

    A line whose bytes match its hash is a line ``encode_record`` wrote (the hash
    covers every byte but ``,"hash":"<digest>"}``, which is checked as bytes), so its
    fields are in their places and of their types. What is left to check is that
    the lines chain: each record's ``prev`` is the hash of the one before (the
    first's, the snapshot's etag), so none was dropped, duplicated, reordered or
    spliced in. Then only the messages (the bytes between ``"messages":[`` and
    ``],"message_count":``, all lines' joined in one array: raw quotes cannot occur
    inside JSON strings, so those markers are found only where they are fields),
    keyed records and the last record (the session's totals, checked as
    ``verify_record`` checks) are parsed. All in list operations over the lines:
    about a microsecond a record.
    """
    chain = Chain(keys=dict(remembered))
    if not records:
        return chain
    if records[-1:] != b"\n":
        return None
    lines = records[:-1].split(b"\n")
    digests = [xxh3_128_hexdigest(line[:-_HASH_SUFFIX] + b"}").encode() for line in lines]
    if [line[-_HASH_SUFFIX:] for line in lines] != [
        b',"hash":"' + digest + b'"}' for digest in digests
    ]:
        return None
    starts = [line.find(b',"prev":"', 7) + 9 for line in lines]
    if [line[start : start + 32] for line, start in zip(lines, starts, strict=True)] != [
        prev.encode(),
        *digests[:-1],
    ]:
        return None
    try:
        # Its hash was checked above: what is left of ``verify_record`` is the fields.
        last = orjson.loads(lines[-1])
        if type(last) is not dict or tuple(last) != _RECORD_FIELDS:
            return None
        _check_record_fields(last)
        parts = [
            line[line.find(b',"messages":[') + 13 : line.rfind(b'],"message_count":')]
            for line in lines
        ]
        messages = orjson.loads(b"[" + b",".join(filter(None, parts)) + b"]")
    except (RecordError, orjson.JSONDecodeError):
        return None
    if (
        last["seq"] != len(lines)
        or last["message_count"] != count + len(messages)
        or not set(map(type, messages)) <= _STR
    ):
        return None
    keyed = [line for line in lines if b',"key":null,"messages":[' not in line]
    for line in keyed:
        try:
            record = verify_record(line)
        except RecordError:
            return None
        if record["key"] is not None:
            remember(chain.keys, record["key"], result_of(record))
    chain.count = len(lines)
    chain.messages = messages
    chain.last = last
    return chain


_STR = frozenset({str})


def _lines(records: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(records):
        end = records.index(b"\n", start)
        yield records[start:end]
        start = end + 1


def result_of(record: dict[str, Any]) -> KeyResult:
    """What the append that wrote ``record`` returned."""
    return KeyResult(
        record["hash"], record["message_count"], record["input_tokens"], record["output_tokens"]
    )


def remember(keys: dict[str, KeyResult], key: str, result: KeyResult) -> None:
    """Add ``key`` as the newest remembered key, forgetting the oldest past ``KEY_MEMORY``."""
    keys.pop(key, None)
    keys[key] = result
    while len(keys) > KEY_MEMORY:
        del keys[next(iter(keys))]


def parse_store_line(text: bytes) -> dict[str, Any]:
    """The store line's object (shared between calls with the same line: do not change
    it); raises ``RecordError`` unless it is what a fold writes. A session's store line
    changes only when it is folded, so the last few are remembered, checked once."""
    return _parse_store_line(text)


@functools.lru_cache(maxsize=16)
def _parse_store_line(text: bytes) -> dict[str, Any]:
    try:
        store = orjson.loads(text)
    except orjson.JSONDecodeError:
        msg = "the store line is not valid JSON"
        raise RecordError(msg, reason="bad-store-line") from None
    return check_store(store)


def check_store(store: Any) -> dict[str, Any]:
    """Return ``store`` if it is a store line's object; raise ``RecordError`` if not."""
    if type(store) is not dict or set(store) - {"etag", "digest", "totals", "keys"}:
        msg = "the store line has unknown fields"
        raise RecordError(msg, reason="bad-store-line")
    etag = store.get("etag")
    if etag is not None and (type(etag) is not str or not _HEX32.match(etag)):
        msg = "the store line's etag is not 32 hex digits"
        raise RecordError(msg, reason="bad-store-line")
    totals = store.get("totals")
    if totals is not None and not (
        type(totals) is list
        and len(totals) == 3
        and all(type(n) is int and 0 <= n <= MAX_TOKENS for n in totals)
    ):
        msg = "the store line's totals are not [message count, input tokens, output tokens]"
        raise RecordError(msg, reason="bad-store-line")
    digest = store.get("digest")
    if digest is not None and (type(digest) is not str or not _HEX32.match(digest)):
        msg = "the store line's digest is not 32 hex digits"
        raise RecordError(msg, reason="bad-store-line")
    keys = store.get("keys", {})
    if type(keys) is not dict or len(keys) > KEY_MEMORY:
        msg = f"the store line's keys are not an object of at most {KEY_MEMORY} keys"
        raise RecordError(msg, reason="bad-store-line")
    for key, value in keys.items():
        if not (
            _valid_key(key)
            and type(value) is list
            and len(value) == 4
            and type(value[0]) is str
            and _HEX32.match(value[0])
            and all(type(n) is int and 0 <= n <= MAX_TOKENS for n in value[1:])
        ):
            msg = f"the store line's key {key[:40]!r} is not [etag, count, tokens, tokens]"
            raise RecordError(msg, reason="bad-store-line")
    return store


def store_keys(store: dict[str, Any] | None) -> dict[str, KeyResult]:
    """The key memory a store line holds, oldest first."""
    if not store:
        return {}
    return {key: KeyResult(*value) for key, value in store.get("keys", {}).items()}


def encode_store_line(
    etag: str | None,
    keys: dict[str, KeyResult],
    *,
    digest: str | None = None,
    totals: tuple[int, int, int] | None = None,
) -> bytes:
    """The store line's JSON object (compact, one line): the kept etag, the XXH3-128 of
    the snapshot's bytes without this line (so a load notices a damaged snapshot), and
    the remembered keys."""
    store: dict[str, Any] = {}
    if etag is not None:
        store["etag"] = etag
    if digest is not None:
        store["digest"] = digest
    if totals is not None:
        store["totals"] = totals
    store["keys"] = {
        key: [result.etag, result.message_count, result.input_tokens, result.output_tokens]
        for key, result in keys.items()
    }
    return orjson.dumps(store)
