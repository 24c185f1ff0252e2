"""The ``max_bytes`` rule: no write acknowledges a session that its own load refuses.

``check_max_bytes`` returns violations (empty: the rule holds). It uses a copy of
the store under test with a small ``max_bytes`` over the same backend, and builds
sessions whose encoding has an exact size. ``max_bytes`` bounds the stored bytes:
for an append, that is the snapshot plus its record lines, or, when a record no
longer fits, the folded snapshot with its store line; ``append_stored_size`` gives
the smaller of the two, which is what an append must fit in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

from sessionstore.codec import encode, encode_folded
from sessionstore.errors import SessionNotFoundError, SessionTooLargeError
from sessionstore.models import CURRENT_SCHEMA_VERSION, StoredSession
from sessionstore.records import KeyResult, encode_record, remember
from sessionstore.store import BackendSessionStore
from sessionstore.testing.adapt import sync_store
from sessionstore.testing.subject import AnyStore

__all__ = ["append_stored_size", "check_max_bytes", "sized_session"]

_FIXED = datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
# An append sets updated_at to now: its encoding is 7 bytes shorter when the
# microseconds happen to be 0, so appends aim this far from the limit.
_CLOCK_SLACK = 8
_APPENDS = ("append_messages", "append", "append(key=)")
# A 32-hex-digit etag: every etag the store writes into a record or store line has
# this length, so sizes computed with it are exact.
_SOME_ETAG = "0" * 32
_TIMESTAMP = "2020-01-02T03:04:05.678901+00:00"


def sized_session(session_id: str, size: int, *, prefix: tuple[str, ...] = ()) -> StoredSession:
    """A session whose encoding is exactly ``size`` bytes: ``prefix`` plus one padding
    message. Raises ``ValueError`` when ``size`` is too small for that."""
    base = StoredSession(
        session_id=session_id,
        messages=(*prefix, ""),
        input_tokens=0,
        output_tokens=0,
        created_at=_FIXED,
        updated_at=_FIXED,
    )
    padding = size - len(encode(base))
    if padding < 0:
        msg = f"a session {session_id!r} cannot be encoded in {size} bytes"
        raise ValueError(msg)
    session = replace(base, messages=(*prefix, "x" * padding))
    assert len(encode(session)) == size
    return session


def check_max_bytes(store: AnyStore, limit: int = 4096) -> list[str]:
    """Every write method refuses a session over ``max_bytes`` and accepts one at it.

    With a copy of ``store`` whose ``max_bytes`` is ``limit`` (over the same backend):
    ``save``, ``save(if_match=)``, ``create``, ``update``, ``append_messages``,
    ``append`` and ``append(key=)`` each raise ``SessionTooLargeError`` for a result one
    byte over the limit (appends: a few bytes over the smallest form the result can be
    stored in, see ``append_stored_size`` and ``_CLOCK_SLACK``) and leave the stored
    session as it was; each accepts a result at the limit and loads it back equal.
    Whatever a write acknowledges must load. A session grown by small keyed appends
    (record lines, then folds) stays loadable until an append is refused, which
    changes nothing. A document stored through ``store`` (its own, larger limit) that
    is over ``limit`` is refused by the copy's ``load`` and ``load_with_etag`` with
    ``SessionTooLargeError``, still ``exists`` and is listed, and ``append_messages``
    or ``append`` to it through the copy raises rather than replacing it. An async
    store is checked through a ``BlockingView`` (its copy: ``blocking.with_max_bytes``).
    """
    with sync_store(store) as blocking:
        return _check_max_bytes(blocking, limit)


def _check_max_bytes(store: BackendSessionStore, limit: int) -> list[str]:
    small = copy.copy(store)
    small.max_bytes = limit
    violations: list[str] = []
    writes: dict[str, Callable[[str, int], StoredSession]] = {
        "save": lambda sid, size: _saved(small, sized_session(sid, size)),
        "save(if_match=)": lambda sid, size: _saved_if_match(small, sized_session(sid, size)),
        "create": lambda sid, size: _created(small, sized_session(sid, size)),
        "update": lambda sid, size: small.update(sid, lambda _: sized_session(sid, size)),
        "append_messages": lambda sid, size: _appended(small, sid, size, "append_messages"),
        "append": lambda sid, size: _appended(small, sid, size, "append"),
        "append(key=)": lambda sid, size: _appended(small, sid, size, "append(key=)"),
    }
    for number, (method, write) in enumerate(writes.items()):
        session_id = f"limit-{number}"
        if method != "create":
            store.save(sized_session(session_id, limit // 2))
        over, under = limit + 1, limit
        if method in _APPENDS:
            over, under = limit + _CLOCK_SLACK, limit - _CLOCK_SLACK
        for size, refused in ((over, True), (under, False)):
            violations += _one_write(
                small,
                store,
                method=method,
                session_id=session_id,
                write=write,
                size=size,
                refused=refused,
            )
    violations += _stored_over_limit(small, store, limit)
    violations += _growing_by_records(small, limit)
    return violations


def append_stored_size(
    store: BackendSessionStore, session_id: str, message: str, *, key: str | None = None
) -> int:
    """The fewest bytes ``store`` can hold ``session_id`` in after appending ``message``
    (with ``key``): the stored bytes plus one record line, or the folded snapshot with
    its store line, whichever is smaller. Exact up to ``updated_at`` (``_CLOCK_SLACK``).
    """
    # Through the store (an async store's backend may only run inside its calls).
    decoded = store.load_document(session_id)
    data = decoded.stored
    current = decoded.session
    count = len(current.messages) + 1
    line, _ = encode_record(
        seq=decoded.records + 1,
        prev=_SOME_ETAG,
        key=key,
        messages=(message,),
        message_count=count,
        input_tokens=current.input_tokens,
        output_tokens=current.output_tokens,
        updated_at=_TIMESTAMP,
    )
    as_record = len(data) - decoded.torn_bytes + len(line)
    if decoded.source_version != CURRENT_SCHEMA_VERSION:
        as_record = 2**62  # an older version folds on its first append
    keys = dict(decoded.keys)
    if key is not None:
        result = KeyResult(_SOME_ETAG, count, current.input_tokens, current.output_tokens)
        remember(keys, key, result)
    folded = replace(current, messages=(*current.messages, message), updated_at=_FIXED)
    as_snapshot = len(encode_folded(folded, etag=_SOME_ETAG, keys=keys))
    return min(as_record, as_snapshot)


def _saved(store: BackendSessionStore, session: StoredSession) -> StoredSession:
    store.save(session)
    return session


def _saved_if_match(store: BackendSessionStore, session: StoredSession) -> StoredSession:
    _, etag = store.load_with_etag(session.session_id)
    store.save(session, if_match=etag)
    return session


def _created(store: BackendSessionStore, session: StoredSession) -> StoredSession:
    store.delete(session.session_id)
    store.create(session)
    return session


def _appended(store: BackendSessionStore, session_id: str, size: int, method: str) -> StoredSession:
    """Append one message with ``method`` so that the result can be stored in about
    ``size`` bytes (``append_stored_size``); return the session expected, whose
    ``updated_at`` the store sets (compared without it)."""
    current = store.load(session_id)
    key = f"key-{size}" if method == "append(key=)" else None
    padding = size - append_stored_size(store, session_id, "", key=key)
    message = "y" * padding
    if method == "append_messages":
        return store.append_messages(session_id, [message])
    store.append(session_id, [message], key=key)
    return replace(current, messages=(*current.messages, message), updated_at=None)


def _state(store: BackendSessionStore, session_id: str) -> StoredSession | None:
    try:
        return store.load(session_id)
    except SessionNotFoundError:
        return None


def _one_write(
    small: BackendSessionStore,
    big: BackendSessionStore,
    *,
    method: str,
    session_id: str,
    write: Callable[[str, int], StoredSession],
    size: int,
    refused: bool,
) -> list[str]:
    before = _state(big, session_id)
    what = f"{method} of {session_id!r} at {size} bytes (max_bytes {small.max_bytes})"
    try:
        written = write(session_id, size)
    except SessionTooLargeError:
        if not refused:
            return [f"{what} was refused; a session at the limit must be accepted"]
        after = _state(big, session_id)
        if after != before:
            return [f"{what} was refused, but the stored session changed"]
        return []
    except Exception as exc:  # a wrong error is a finding
        return [f"{what} raised {type(exc).__name__}: {exc}, not SessionTooLargeError"]
    try:
        loaded = small.load(session_id)
    except SessionTooLargeError as exc:
        return [f"{what} was acknowledged, but its own load refuses it: {exc}"]
    problems = []
    if refused:
        problems.append(f"{what} was acknowledged; it must raise SessionTooLargeError")
    if written.updated_at is None:  # an append: the store chose the time
        loaded = replace(loaded, updated_at=None)
    if loaded != written:
        problems.append(f"{what} returned, but the session loads back different")
    return problems


def _stored_over_limit(
    small: BackendSessionStore, big: BackendSessionStore, limit: int
) -> list[str]:
    session_id = "limit-stored"
    big.save(sized_session(session_id, limit + 1))
    problems = []
    for name, load in (("load", small.load), ("load_with_etag", small.load_with_etag)):
        try:
            load(session_id)
        except SessionTooLargeError:
            pass
        except Exception as exc:  # a wrong error is a finding
            problems.append(
                f"{name} of {session_id!r}, stored at {limit + 1} bytes, raised "
                f"{type(exc).__name__}: {exc}, not SessionTooLargeError"
            )
        else:
            problems.append(
                f"{name} of {session_id!r}, stored at {limit + 1} bytes, returned it although "
                f"max_bytes is {limit}"
            )
    if not small.exists(session_id) or session_id not in small.list():
        problems.append(f"{session_id!r} over max_bytes must still exist and be listed")
    try:
        small.append_messages(session_id, ["more"])
    except SessionTooLargeError:
        pass
    except Exception as exc:  # a wrong error is a finding
        problems.append(
            f"append_messages to {session_id!r} over max_bytes raised {type(exc).__name__}: "
            f"{exc}, not SessionTooLargeError"
        )
    else:
        problems.append(f"append_messages to {session_id!r} over max_bytes was acknowledged")
    try:
        small.append(session_id, ["more"], key="more")
    except SessionTooLargeError:
        pass
    except Exception as exc:  # a wrong error is a finding
        problems.append(
            f"append to {session_id!r} over max_bytes raised {type(exc).__name__}: "
            f"{exc}, not SessionTooLargeError"
        )
    else:
        problems.append(f"append to {session_id!r} over max_bytes was acknowledged")
    if big.load(session_id) != sized_session(session_id, limit + 1):
        problems.append(f"{session_id!r} over max_bytes was changed by a refused write")
    return problems


def _growing_by_records(small: BackendSessionStore, limit: int) -> list[str]:
    """Small keyed appends through ``small`` until one is refused: the file grows by
    record lines, then (when a record no longer fits) by folds. Every acknowledged
    append must load with all the messages so far; the refused one must change
    nothing; and one must be refused before the session's messages alone pass the
    limit."""
    session_id = "limit-records"
    messages: list[str] = []
    for number in range(limit // 32):
        message = f"{number:04d}" + "z" * 60
        what = f"append #{number + 1} of {len(message)} characters to {session_id!r}"
        try:
            small.append(session_id, [message], key=f"k{number}")
        except SessionTooLargeError:
            try:
                after = small.load(session_id).messages
            except Exception as exc:  # a wrong error is a finding
                return [f"{what} was refused, then the load raised {type(exc).__name__}: {exc}"]
            if after != tuple(messages):
                return [f"{what} was refused, but the stored session changed"]
            return []
        except Exception as exc:  # a wrong error is a finding
            return [f"{what} raised {type(exc).__name__}: {exc}, not SessionTooLargeError"]
        messages.append(message)
        try:
            loaded = small.load(session_id).messages
        except SessionTooLargeError as exc:
            return [
                f"{what} was acknowledged (the records grew the session past max_bytes "
                f"{limit}), but its own load refuses it: {exc}"
            ]
        if loaded != tuple(messages):
            return [f"{what} was acknowledged, but the session loads back different"]
    return [
        f"{len(messages)} appends of {len(messages[0])} characters to {session_id!r} were all "
        f"acknowledged under max_bytes {limit}: the session cannot hold them"
    ]
