"""The append journal of the PostgreSQL backend: record lines as rows, beside the documents.

A session is the row of its table (``document``: a snapshot, exactly as ``codec``
writes it) followed by its rows in ``<table>_journal`` (``id``, ``seq``, ``hash``,
``line``), in ``seq`` order. ``read`` returns the document's bytes followed by the
journal's lines: the same bytes a session file would hold, so decoding, etags and
keys are the file format's (``records``). This module holds what is pure about it:
the journal's name and statements, how written bytes split into document and rows,
and the client's cache of session tails.

Rows and etags. ``hash`` of a row is the etag the session has when that row is its
last: the record's hash for a record line (``records.stored_etag``). ``etag`` of the
table's row is the etag of the document alone. So the session's etag is its last
row's ``hash``, or the document's ``etag`` when it has no rows.

Appends. A record line carries its ``seq`` and ``prev`` (the etag it was appended
to), so the statement that stores it checks, on the server and under the session's
lock, that the session is still the one the line was built on: row ``seq - 1`` has
``hash = prev`` (or, for ``seq`` 1, no rows and the document's etag is ``prev``) and
no row ``seq`` or later exists. The client builds the line from its cache of the
session's tail (``TailCache``), so an append by the client that appended last is one
round trip (BEGIN, lock, the checked INSERT, COMMIT in one pipeline); when the check
fails (another writer appended, saved, folded or deleted), nothing is written and
the caller takes the session's lock and reads the tail again.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from xxhash import xxh3_64_hexdigest

from sessionstore.records import CURRENT_PREFIX, SNAPSHOT_END, FileTail, stored_etag

__all__ = [
    "CACHED_SESSIONS",
    "TAIL_WINDOW",
    "JournalRows",
    "TailCache",
    "journal_name",
    "line_link",
    "split_rows",
    "tail_is_enough",
]

CACHED_SESSIONS = 64
"""Sessions whose tail a backend object remembers (the most recently appended)."""

TAIL_WINDOW = 64 * 1024
"""Bytes of a document's end read for an append's tail (more when its store line is longer)."""

_MAX_IDENTIFIER = 63
_SUFFIX = "_journal"
_LINK = re.compile(rb'\{"seq":([1-9][0-9]{0,9}),"prev":"([0-9a-f]{32})"')
_HASH = re.compile(rb',"hash":"([0-9a-f]{32})"\}\n\Z')


def journal_name(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The journal table of the table ``parts`` (``schema.name`` or ``name``): ``name_journal``
    in the same schema; a name too long for that is shortened with a digest of it, so two
    tables never share a journal."""
    *schema, name = parts
    journal = name + _SUFFIX
    if len(journal) > _MAX_IDENTIFIER:
        digest = xxh3_64_hexdigest(name.encode())
        journal = name[: _MAX_IDENTIFIER - len(_SUFFIX) - len(digest) - 1] + "_" + digest + _SUFFIX
    return (*schema, journal)


def line_link(line: bytes) -> tuple[int, str, str] | None:
    """``(seq, prev, hash)`` of a record line as ``records.encode_record`` writes it
    (with its newline), or None for anything else."""
    head = _LINK.match(line)
    tail = _HASH.search(line)
    if head is None or tail is None:
        return None
    return int(head[1]), head[2].decode("ascii"), tail[1].decode("ascii")


class JournalRows:
    """Written bytes as the backend stores them: the document and the journal rows."""

    __slots__ = ("document", "hashes", "lines")

    def __init__(self, document: bytes, lines: list[bytes], hashes: list[str]) -> None:
        self.document = document
        self.lines = lines
        self.hashes = hashes


def split_rows(data: bytes) -> JournalRows:
    """Split bytes to write into the document (up to the snapshot's closing line) and
    the lines after it, each a journal row, so that ``read`` gives ``data`` back.

    A document (every version, and any snapshot the codec writes) is one piece: the
    check costs O(1). Only bytes that already carry lines after a current snapshot
    (a session file copied in with its records, or damaged bytes) are split; each
    row's hash is the etag of the bytes up to its end.
    """
    if data.endswith(SNAPSHOT_END) or not data.startswith(CURRENT_PREFIX):
        return JournalRows(data, [], [])
    end = data.find(SNAPSHOT_END)
    if end < 0:
        return JournalRows(data, [], [])
    start = end + len(SNAPSHOT_END)
    lines: list[bytes] = []
    hashes: list[str] = []
    while start < len(data):
        stop = data.find(b"\n", start)
        stop = len(data) if stop < 0 else stop + 1
        line = data[start:stop]
        link = line_link(line)
        lines.append(line)
        hashes.append(link[2] if link is not None else stored_etag(data[:stop]))
        start = stop
    return JournalRows(data[: end + len(SNAPSHOT_END)], lines, hashes)


def tail_is_enough(window: bytes, offset: int) -> bool:
    """Whether the end of a document (``window``, starting at ``offset``) reaches back
    to the line before the snapshot's closing brace, as ``FileTail`` promises."""
    if offset == 0:
        return True
    end = window.rfind(SNAPSHOT_END)
    return end >= 0 and window.rfind(b"\n", 0, end) >= 0


class TailCache:
    """The tails of the sessions this client appended to last, by id: a hint only.

    An append built from a stale tail is refused by the server's check and nothing
    is written, so a wrong entry costs a retry, never a wrong record. Thread-safe;
    at most ``CACHED_SESSIONS`` entries (the least recently used go first).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._tails: OrderedDict[str, FileTail] = OrderedDict()

    def get(self, session_id: str) -> FileTail | None:
        with self._mutex:
            tail = self._tails.get(session_id)
            if tail is not None:
                self._tails.move_to_end(session_id)
            return tail

    def put(self, session_id: str, tail: FileTail) -> None:
        with self._mutex:
            self._tails[session_id] = tail
            self._tails.move_to_end(session_id)
            while len(self._tails) > CACHED_SESSIONS:
                self._tails.popitem(last=False)

    def drop(self, session_id: str) -> None:
        with self._mutex:
            self._tails.pop(session_id, None)

    def clear(self) -> None:
        with self._mutex:
            self._tails.clear()

    def extend(self, session_id: str, line: bytes, prev: str) -> None:
        """After ``line`` was stored: the cached tail plus ``line``, if the cached tail
        ends with the record ``line`` follows (``prev``); else forget the session."""
        with self._mutex:
            tail = self._tails.pop(session_id, None)
            if tail is None or tail.data[-1:] != b"\n":
                return
            last = tail.data.rfind(b"\n", 0, len(tail.data) - 1) + 1
            link = line_link(tail.data[last:])
            if link is None or link[2] != prev:
                return
            self._tails[session_id] = FileTail(
                tail.size + len(line), None, tail.head, tail.data + line, tail.offset
            )
