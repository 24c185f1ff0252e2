"""The ``max_bytes`` rule: no write acknowledges a session that its own load refuses.

``check_max_bytes`` returns violations (empty: the rule holds). It uses a copy of
the store under test with a small ``max_bytes`` over the same backend, and builds
sessions whose encoding has an exact size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

from sessionstore.codec import encode
from sessionstore.errors import SessionNotFoundError, SessionTooLargeError
from sessionstore.models import StoredSession
from sessionstore.store import BackendSessionStore

__all__ = ["check_max_bytes", "sized_session"]

_FIXED = datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
# append_messages sets updated_at to now: its encoding is 7 bytes shorter when the
# microseconds happen to be 0, so appends aim this far from the limit.
_CLOCK_SLACK = 8


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


def check_max_bytes(store: BackendSessionStore, limit: int = 4096) -> list[str]:
    """Every write method refuses a session over ``max_bytes`` and accepts one at it.

    With a copy of ``store`` whose ``max_bytes`` is ``limit`` (over the same backend):
    ``save``, ``save(if_match=)``, ``create``, ``update`` and ``append_messages`` each
    raise ``SessionTooLargeError`` for a result one byte over the limit (appends: a few
    bytes, see ``_CLOCK_SLACK``) and leave the stored session as it was; each accepts a
    result at the limit and loads it back equal. Whatever a write acknowledges must
    load. A document stored through ``store`` (its own, larger limit) that is over
    ``limit`` is refused by the copy's ``load`` and ``load_with_etag`` with
    ``SessionTooLargeError``, still ``exists`` and is listed, and an append to it
    through the copy raises rather than replacing it.
    """
    small = copy.copy(store)
    small.max_bytes = limit
    violations: list[str] = []
    writes: dict[str, Callable[[str, int], StoredSession]] = {
        "save": lambda sid, size: _saved(small, sized_session(sid, size)),
        "save(if_match=)": lambda sid, size: _saved_if_match(small, sized_session(sid, size)),
        "create": lambda sid, size: _created(small, sized_session(sid, size)),
        "update": lambda sid, size: small.update(sid, lambda _: sized_session(sid, size)),
        "append_messages": lambda sid, size: _appended(small, sid, size),
    }
    for number, (method, write) in enumerate(writes.items()):
        session_id = f"limit-{number}"
        if method != "create":
            store.save(sized_session(session_id, limit // 2))
        over, under = limit + 1, limit
        if method == "append_messages":
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
    return violations


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


def _appended(store: BackendSessionStore, session_id: str, size: int) -> StoredSession:
    """Append one message so that the result encodes to about ``size`` bytes."""
    current = store.load(session_id)
    probe = replace(current, messages=(*current.messages, ""), updated_at=_FIXED)
    padding = size - len(encode(probe))
    return store.append_messages(session_id, ["y" * padding])


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
    if big.load(session_id) != sized_session(session_id, limit + 1):
        problems.append(f"{session_id!r} over max_bytes was changed by a refused write")
    return problems
