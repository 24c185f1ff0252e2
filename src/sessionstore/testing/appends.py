"""The append rules of the conformance suite: ``append``, its keys, ``if_match`` and folds.

``check_appends`` returns violations (empty: the rules hold). Each part runs on its
own session ids (``append-*``) of a store that holds none of them:

- round trip and totals: ``append`` creates a missing session, adds the messages
  and token counts, returns the new totals, and ``load_with_etag`` then gives the
  etag it returned;
- exactly-once keys: a retry with the same key returns the first result with
  ``replayed=True`` and adds nothing (whatever messages it carries); keys survive
  ``compact`` and ``update``; ``save`` forgets them; the latest ``KEY_MEMORY`` keys
  (1000) are all remembered;
- ``if_match`` across ``append``, ``save`` and ``compact``: an etag returned by any
  of them (or read before a fold) matches until the next change; a stale or
  never-issued one, or any on a missing session, fails with ``ConflictError`` and
  writes nothing;
- ``compact`` keeps the session and its etag, and raises ``SessionNotFoundError``
  for a missing session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sessionstore.appendlog import AppendResult
from sessionstore.errors import ConflictError, SessionNotFoundError
from sessionstore.models import StoredSession
from sessionstore.records import KEY_MEMORY
from sessionstore.store import BackendSessionStore
from sessionstore.testing.adapt import sync_store
from sessionstore.testing.subject import AnyStore

__all__ = ["NEVER_ISSUED_ETAG", "check_appends"]

NEVER_ISSUED_ETAG = "etag-that-no-store-issued"


class _Finding(Exception):
    """One violation; ends the part of the rule that found it."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _Finding(message)


def check_appends(store: AnyStore, *, key_memory: int = KEY_MEMORY) -> list[str]:
    """Run every part of the append rules on ``store``; return the violations.

    ``key_memory`` is how many keys the key-memory part appends before retrying the
    oldest of them (the store's promise, 1000; a smaller number runs faster and
    checks less). An async store is checked through a ``BlockingView``.
    """
    with sync_store(store) as blocking:
        return _check_appends(blocking, key_memory)


def _check_appends(store: BackendSessionStore, key_memory: int) -> list[str]:
    parts: dict[str, Callable[[BackendSessionStore], None]] = {
        "round trip and totals": _round_trip,
        "exactly-once keys": _keys,
        "key memory": lambda s: _key_memory(s, key_memory),
        "if_match": _if_match,
        "compact": _compact,
    }
    violations = []
    for name, part in parts.items():
        try:
            part(store)
        except _Finding as finding:
            violations.append(f"{name}: {finding}")
        except Exception as exc:  # a wrong error is a finding
            violations.append(f"{name}: raised {type(exc).__name__}: {exc}")
    return violations


def _totals(result: AppendResult) -> tuple[int, int, int]:
    return result.message_count, result.input_tokens, result.output_tokens


def _check_loads(
    store: BackendSessionStore, session_id: str, result: AppendResult, messages: tuple[str, ...]
) -> StoredSession:
    """The session loads with ``messages``, the totals ``result`` gave, and its etag."""
    session, etag = store.load_with_etag(session_id)
    _expect(
        etag == result.etag,
        f"load_with_etag({session_id!r}) gives etag {etag!r}; the append returned {result.etag!r}",
    )
    _expect(
        session.messages == messages,
        f"{session_id!r} loads with messages {list(session.messages)}, not {list(messages)}",
    )
    got = (len(session.messages), session.input_tokens, session.output_tokens)
    _expect(
        got == _totals(result),
        f"{session_id!r} loads with (messages, input, output) {got}; the append returned "
        f"{_totals(result)}",
    )
    return session


def _round_trip(store: BackendSessionStore) -> None:
    sid = "append-round-trip"
    first = store.append(sid, ["a", "b"], input_tokens=3, output_tokens=2)
    _expect(
        _totals(first) == (2, 3, 2) and not first.replayed,
        f"the first append to missing {sid!r} returned {first}; expected 2 messages, "
        "tokens (3, 2), replayed=False",
    )
    created = _check_loads(store, sid, first, ("a", "b"))
    _expect(created.created_at is not None, f"an append that creates {sid!r} sets created_at")
    second = store.append(sid, ["c"], input_tokens=1)
    _expect(
        _totals(second) == (3, 4, 2) and not second.replayed,
        f"the second append to {sid!r} returned {second}; expected 3 messages, tokens (4, 2)",
    )
    _expect(second.etag != first.etag, f"two appends to {sid!r} returned one etag {first.etag!r}")
    after = _check_loads(store, sid, second, ("a", "b", "c"))
    _expect(after.created_at == created.created_at, f"an append changed created_at of {sid!r}")
    empty = store.append(sid, [], output_tokens=5)
    _expect(_totals(empty) == (3, 4, 7), f"an append of no messages returned {empty}")
    _check_loads(store, sid, empty, ("a", "b", "c"))
    saved = store.save(replace(after, messages=("s",), input_tokens=0, output_tokens=0))
    on_saved = store.append(sid, ["d"])
    _expect(
        _totals(on_saved) == (2, 0, 0) and on_saved.etag != saved,
        f"an append after a save of {sid!r} returned {on_saved} (the save's etag {saved!r})",
    )
    _check_loads(store, sid, on_saved, ("s", "d"))


def _replays(
    store: BackendSessionStore, sid: str, key: str, first: AppendResult, messages: tuple[str, ...]
) -> None:
    """A retry of ``key`` (with other messages) returns ``first`` replayed; adds nothing."""
    retry = store.append(sid, ["retry must not add this"], input_tokens=9, key=key)
    _expect(
        retry.replayed,
        f"a retry of key {key!r} on {sid!r} returned replayed=False (it appended again)",
    )
    _expect(
        _totals(retry) == _totals(first) and retry.etag == first.etag,
        f"a retry of key {key!r} on {sid!r} returned {retry}; the first append returned {first}",
    )
    session = store.load(sid)
    _expect(
        session.messages == messages,
        f"after a retry of key {key!r}, {sid!r} has messages {list(session.messages)}, "
        f"not {list(messages)}",
    )


def _keys(store: BackendSessionStore) -> None:
    sid = "append-keys"
    one = store.append(sid, ["one"], input_tokens=1, key="k1")
    _expect(not one.replayed, f"the first append with key 'k1' to {sid!r} returned replayed=True")
    _replays(store, sid, "k1", one, ("one",))
    two = store.append(sid, ["two"], key="k2")
    _expect(not two.replayed, f"a new key 'k2' on {sid!r} was replayed")
    _check_loads(store, sid, two, ("one", "two"))
    _replays(store, sid, "k1", one, ("one", "two"))  # the first result, not the latest
    store.compact(sid)
    _replays(store, sid, "k1", one, ("one", "two"))
    _replays(store, sid, "k2", two, ("one", "two"))
    store.update(sid, lambda s: replace(s, messages=(*s.messages, "three")))
    _replays(store, sid, "k2", two, ("one", "two", "three"))
    other = store.append("append-keys-other", ["x"], key="k1")
    _expect(not other.replayed, "key 'k1' of one session was replayed for another session")
    session = store.load(sid)
    store.save(replace(session, messages=("saved",)))
    again = store.append(sid, ["one"], key="k1")
    _expect(
        not again.replayed,
        f"after a save replaced {sid!r}, a retry of key 'k1' was replayed; a save forgets keys",
    )
    _check_loads(store, sid, again, ("saved", "one"))


def _key_memory(store: BackendSessionStore, count: int) -> None:
    sid = "append-key-memory"
    results = [store.append(sid, [], key=f"m{number}") for number in range(count)]
    for number in (count - 1, count // 2, 0):
        retry = store.append(sid, ["must not be added"], key=f"m{number}")
        _expect(
            retry.replayed and retry.etag == results[number].etag,
            f"after {count} keyed appends to {sid!r}, key 'm{number}' was not replayed "
            f"({retry}): the latest {count} keys must be remembered",
        )
    _expect(store.load(sid).messages == (), f"a replayed append added messages to {sid!r}")


def _conflicts(
    store: BackendSessionStore, sid: str, if_match: str, what: str, messages: tuple[str, ...] | None
) -> None:
    try:
        store.append(sid, ["conflict"], if_match=if_match)
    except ConflictError:
        pass
    else:
        raise _Finding(f"append to {sid!r} with {what} was acknowledged; it must conflict")
    try:
        loaded = store.load(sid).messages
    except SessionNotFoundError:
        loaded = None
    _expect(loaded == messages, f"an append to {sid!r} with {what} conflicted, but wrote")


def _if_match(store: BackendSessionStore) -> None:
    sid = "append-if-match"
    _conflicts(store, sid, NEVER_ISSUED_ETAG, "if_match on a missing session", None)
    saved = store.save(
        StoredSession(session_id=sid, messages=("s",), input_tokens=0, output_tokens=0)
    )
    first = store.append(sid, ["a"], if_match=saved)
    _check_loads(store, sid, first, ("s", "a"))
    _conflicts(store, sid, saved, "the etag of the save before it (stale)", ("s", "a"))
    _conflicts(store, sid, NEVER_ISSUED_ETAG, "a never-issued etag", ("s", "a"))
    second = store.append(sid, ["b"], if_match=first.etag)
    _conflicts(store, sid, first.etag, "the etag of the append before it (stale)", ("s", "a", "b"))
    folded = store.compact(sid)
    _expect(folded == second.etag, f"compact of {sid!r} returned {folded!r}, not {second.etag!r}")
    third = store.append(sid, ["c"], if_match=second.etag)  # read before the fold
    session = _check_loads(store, sid, third, ("s", "a", "b", "c"))
    resaved = store.save(replace(session, messages=("t",)), if_match=third.etag)
    _conflicts(store, sid, third.etag, "the etag of the append before a save", ("t",))
    fourth = store.append(sid, ["d"], if_match=resaved)
    _check_loads(store, sid, fourth, ("t", "d"))


def _compact(store: BackendSessionStore) -> None:
    sid = "append-compact"
    try:
        store.compact(sid)
    except SessionNotFoundError:
        pass
    else:
        raise _Finding(f"compact of missing {sid!r} returned; it must raise SessionNotFoundError")
    _expect(not store.exists(sid), f"compact of missing {sid!r} created it")
    for number in range(3):
        store.append(sid, [f"m{number}"], input_tokens=1, key=f"c{number}")
    before, etag = store.load_with_etag(sid)
    folded = store.compact(sid)
    _expect(folded == etag, f"compact of {sid!r} returned etag {folded!r}; it was {etag!r}")
    after, after_etag = store.load_with_etag(sid)
    _expect(after == before, f"compact changed {sid!r}: {before} became {after}")
    _expect(after_etag == etag, f"after compact, load_with_etag({sid!r}) gives {after_etag!r}")
    _expect(store.compact(sid) == etag, f"a second compact of {sid!r} changed the etag")
    saved = store.save(replace(after, messages=("plain",)))
    _expect(store.compact(sid) == saved, f"compact of a saved {sid!r} changed its etag")
