"""A history of concurrent store calls, and a checker that it is linearizable.

The workload that records these histories (``concurrency``) makes every write
self-describing: each write puts one *token* (a message no other call ever writes)
into a session whose messages are nothing but tokens, and keeps ``input_tokens``
equal to the number of messages. So the state of a session is the tuple of its
tokens (or ``None`` when absent), every write that succeeds makes a state never
seen before, and a load tells exactly which writes it saw, in which order.

What ``check_history`` proves, for such a history: there is (or is not) one order
of all the calls, consistent with real time (a call that returned before another
was invoked comes first), in which each call, applied to a plain dict, gives exactly
the result that was observed. That is linearizability, checked exactly per session
(linearizability is a local property, so one session at a time is enough) by the
Wing-Gong search with Lowe's memoization (the algorithm of Knossos and Porcupine),
over this one sequential model, not any model: it is exact for this workload only.
It implies, among others: no acknowledged write is lost, no deleted session comes
back, no token appears twice, and each writer's tokens appear in its own order.
Those consequences are also checked directly first, so that a failure names the
lost token or the resurrected session rather than only "not linearizable".

Real time comes from ``time.monotonic_ns``, one clock for every process of a
machine (CLOCK_MONOTONIC on Linux). The recorded interval of a call contains its
real one, so clock granularity can only make the check more lenient, never report
a violation that did not happen. A call that raised an unexpected error has an
unknown outcome: it may have taken effect at any time after it was invoked, or
never; the error itself is reported as a violation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FINAL",
    "KEY_MEMORY",
    "KINDS",
    "OUTCOMES",
    "Keys",
    "Model",
    "Op",
    "State",
    "check_history",
    "describe",
]

State = tuple[str, ...] | None
"""The tokens of a session, oldest first, or ``None`` when it does not exist."""

KINDS = ("load", "save", "create", "cas", "update", "append", "keyed", "delete")
"""``cas`` is ``save(session, if_match=etag)`` with the etag of an earlier load;
``append`` is ``append_messages``; ``keyed`` is ``append(key=token)``, whose result
is a count (``message_count``) and ``replayed``, not the session."""

KEY_MEMORY = 1000
"""How many keys of a session the model remembers (``records.KEY_MEMORY``)."""

Keys = tuple[tuple[str, int], ...]
"""The keys a session remembers, oldest first, each with the count its append returned."""

Model = tuple[State, Keys]
"""A session's state and keys: ``save``, ``create``, ``cas`` and ``delete`` forget the
keys; ``update``, ``append`` and ``keyed`` keep them."""

OUTCOMES = ("ok", "absent", "conflict", "deleted", "error")
"""``absent``: ``SessionNotFoundError`` (load, update) or ``delete`` returned False;
``deleted``: ``delete`` returned True; ``error``: anything else was raised."""

FINAL = "final"
"""The worker name of the loads made after every worker finished."""

_SEARCH_BUDGET = 5_000_000
_MAX_PROBLEMS = 40
_CONTEXT = 20  # calls shown before and after the one that could not be placed


@dataclass(frozen=True)
class Op:
    """One call, as a worker saw it.

    ``token`` is the message the call writes (writes only); ``expected`` the tokens
    that a ``cas`` call's load saw (its ``if_match`` etag is that version's);
    ``value`` and ``count`` the messages and ``input_tokens`` of the session the call
    returned or loaded. ``call`` and ``ret`` are ``time.monotonic_ns()`` just before
    the call and just after it returned or raised.
    """

    worker: str
    session_id: str
    kind: str
    token: str | None
    call: int
    ret: int
    outcome: str
    expected: tuple[str, ...] | None = None
    value: tuple[str, ...] | None = None
    count: int | None = None
    error: str | None = None
    replayed: bool | None = None
    """For ``keyed``: whether the store said it replayed an earlier append of the key."""


def describe(op: Op, origin: int = 0) -> str:
    """One line for a report: who, what, with what, what came back, and when (ms)."""
    args = [repr(op.session_id)]
    if op.token is not None:
        args.append(f"token {op.token!r}")
    if op.expected is not None:
        args.append(f"if_match of {list(op.expected)}")
    result = op.outcome
    if op.value is not None:
        result += f" {list(op.value)}"
    if op.kind == "keyed" and op.outcome == "ok":
        result += f" count {op.count}" + (" replayed" if op.replayed else "")
    if op.error is not None:
        result += f" ({op.error})"
    start = (op.call - origin) / 1e6
    end = (op.ret - origin) / 1e6
    return f"{op.worker}: {op.kind}({', '.join(args)}) -> {result} [{start:.3f}-{end:.3f} ms]"


def check_history(ops: Iterable[Op]) -> list[str]:
    """Every violation of the write contract in ``ops``; empty when it is linearizable.

    Unexpected errors, miscounted sessions, duplicated, unknown or lost tokens and
    resurrected sessions are reported one by one; then each session's history is
    searched for a linearization, and a session without one is reported with the
    call the search could not place.
    """
    ops = list(ops)
    if not ops:
        return []
    origin = min(op.call for op in ops)
    problems = [f"unexpected error: {describe(op, origin)}" for op in ops if op.outcome == "error"]
    by_session: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_session[op.session_id].append(op)
    for session_id in sorted(by_session):
        session_ops = by_session[session_id]
        problems += _direct_checks(session_ops, origin)
        placed, total, stuck = _search(session_ops)
        if placed < 0:
            problems.append(
                f"session {session_id!r}: undecided: the search for an order of its {total} "
                f"calls gave up after {_SEARCH_BUDGET} states (too many concurrent calls to "
                "check; lower SESSIONSTORE_CONFORMANCE_OPS)"
            )
        elif placed < total:
            blocker = (
                f"; the first call it could not place: {describe(stuck, origin)}" if stuck else ""
            )
            problems.append(
                f"session {session_id!r}: no order of its {total} calls consistent with real "
                f"time gives the results observed (at best {placed} placed{blocker}). "
                f"History{_excerpt(session_ops, stuck, origin)}"
            )
    if len(problems) > _MAX_PROBLEMS:
        more = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"... and {more} more violations"]
    return problems


def _excerpt(ops: Sequence[Op], stuck: Op | None, origin: int) -> str:
    """The calls of one session by start time: all of them, or those around ``stuck``."""
    ordered = sorted(ops, key=_start)
    first, last = 0, len(ordered)
    if len(ordered) > 2 * _CONTEXT and stuck is not None:
        at = ordered.index(stuck)
        first, last = max(0, at - _CONTEXT), min(len(ordered), at + _CONTEXT)
    lines = [describe(op, origin) for op in ordered[first:last]]
    label = (
        ":"
        if (first, last) == (0, len(ordered))
        else f" (calls {first + 1}-{last} of {len(ordered)}):"
    )
    return label + "\n    " + "\n    ".join(lines)


def _start(op: Op) -> tuple[int, int]:
    return op.call, op.ret


# -- direct checks: the consequences of linearizability, named ----------------------


def _observed(op: Op) -> bool:
    return op.outcome == "ok" and op.value is not None


def _direct_checks(ops: Sequence[Op], origin: int) -> list[str]:
    problems: list[str] = []
    written = {op.token: op for op in ops if op.token is not None}
    keyed = {op.token for op in ops if op.kind == "keyed"}
    for op in filter(_observed, ops):
        assert op.value is not None
        if op.count != len(op.value):
            problems.append(
                f"counts: {len(op.value)} messages but input_tokens {op.count} in "
                f"{describe(op, origin)}"
            )
        seen: set[str] = set()
        for token in op.value:
            # A keyed append's retry appends its token again, rightly, when a save
            # (a cas keeps the tokens) forgot the key between them: the search decides.
            if token in seen and token not in keyed:
                problems.append(f"token {token!r} appears twice: {describe(op, origin)}")
            seen.add(token)
            if token not in written:
                problems.append(f"token {token!r} was never written: {describe(op, origin)}")
    problems += _lost_writes(ops, origin)
    problems += _resurrections(ops, written, origin)
    return problems


_ACKED_APPENDS = ("append", "keyed", "update", "cas")
_RESETS = ("save", "delete")


def _lost_writes(ops: Sequence[Op], origin: int) -> list[str]:
    """Acknowledged tokens missing from the final load, with nothing that could remove them.

    Once an append, update or cas has put its token in, only a later ``save`` (which
    replaces everything) or ``delete`` can take it out. If every such call finished
    before the write began, the token must be in every later state.
    """
    finals = [
        op
        for op in ops
        if op.worker == FINAL and op.kind == "load" and op.outcome in ("ok", "absent")
    ]
    if not finals:
        return []
    final = finals[-1]
    present = set(final.value or ())
    problems = []
    for op in ops:
        if op.kind not in _ACKED_APPENDS or op.outcome != "ok" or op.token in present:
            continue
        removers = [
            other
            for other in ops
            if other.kind in _RESETS
            and other.outcome in ("ok", "deleted", "error")
            and other.ret >= op.call
        ]
        if not removers:
            problems.append(
                f"acknowledged write lost: {describe(op, origin)}; the final load has "
                f"{list(final.value or ())} and no save or delete could have removed it"
            )
    return problems


def _resurrections(ops: Sequence[Op], written: dict[str, Op], origin: int) -> list[str]:
    """States seen after a delete returned True that hold tokens written before it began."""
    problems = []
    for delete in ops:
        if delete.kind != "delete" or delete.outcome != "deleted":
            continue
        for op in filter(_observed, ops):
            if op.call <= delete.ret:
                continue
            old = [
                token
                for token in op.value or ()
                if token in written and written[token].ret < delete.call
            ]
            if old:
                problems.append(
                    f"deleted session came back: {describe(delete, origin)}, yet later "
                    f"{describe(op, origin)} holds {old}, written before the delete began"
                )
                break
    return problems


# -- the exact search ---------------------------------------------------------------


def _remember(keys: Keys, key: str, count: int) -> Keys:
    kept = (*tuple(item for item in keys if item[0] != key), (key, count))
    return kept[-KEY_MEMORY:]


def _steps(model: Model, op: Op) -> list[Model]:
    """The models ``op`` can leave when applied to ``model`` with its observed result."""
    if op.outcome == "error":
        # Unknown outcome: no effect, or the effect of a success.
        return [model, *(effect for effect in _effects(model, op) if effect != model)]
    state, keys = model
    kind, outcome = op.kind, op.outcome
    token = op.token or ""
    if kind == "load":
        ok = (state is None) if outcome == "absent" else (state == op.value)
        return [model] if ok else []
    if kind == "save":
        return [((token,), ())]
    if kind == "create":
        if outcome == "ok":
            return [((token,), ())] if state is None else []
        return [model] if state is not None else []
    if kind == "cas":
        if outcome == "ok":
            return [((*(op.expected or ()), token), ())] if state == op.expected else []
        return [model] if state != op.expected else []
    if kind == "update":
        if outcome == "absent":
            return [model] if state is None else []
        new = None if state is None else (*state, token)
        return [(new, keys)] if new is not None and new == op.value else []
    if kind == "append":
        new = (*(state or ()), token)
        return [(new, keys)] if new == op.value else []
    if kind == "keyed":
        first = dict(keys).get(token)
        if first is not None:
            return [model] if op.replayed and op.count == first else []
        new = (*(state or ()), token)
        if op.replayed or op.count != len(new):
            return []
        return [(new, _remember(keys, token, len(new)))]
    if kind == "delete":
        ok = (state is None) if outcome == "absent" else (state is not None)
        return [(None, ())] if ok else []
    return []


def _effects(model: Model, op: Op) -> list[Model]:
    state, keys = model
    token = op.token or ""
    if op.kind == "save":
        return [((token,), ())]
    if op.kind == "create":
        return [((token,), ())] if state is None else []
    if op.kind == "cas":
        return [((*(op.expected or ()), token), ())] if state == op.expected else []
    if op.kind == "update":
        return [((*state, token), keys)] if state is not None else []
    if op.kind == "append":
        return [((*(state or ()), token), keys)]
    if op.kind == "keyed":
        if token in dict(keys):
            return []
        new = (*(state or ()), token)
        return [(new, _remember(keys, token, len(new)))]
    if op.kind == "delete":
        return [(None, ())]
    return []


def _search(ops: Sequence[Op]) -> tuple[int, int, Op | None]:
    """Search for a linearization of one session's calls.

    Returns ``(placed, total, stuck)``: ``placed == total`` when one exists; otherwise
    the most calls any partial order placed, and the call that then had to come next
    but could not; ``placed == -1`` when the search gave up. Calls with an unknown
    outcome count in neither.
    """
    ordered = sorted(ops, key=_start)
    calls = [op.call for op in ordered]
    # An unknown outcome may land any time later, so it never forces another call.
    rets = [math.inf if op.outcome == "error" else op.ret for op in ordered]
    by_return = sorted(range(len(ordered)), key=lambda i: rets[i])
    required = 0
    for index, op in enumerate(ordered):
        if op.outcome != "error":
            required |= 1 << index
    total = required.bit_count()
    best, best_mask = -1, 0
    start: tuple[int, Model] = (0, (None, ()))
    seen = {start}
    stack = [start]
    while stack:
        if len(seen) > _SEARCH_BUDGET:
            return -1, total, None
        done, state = stack.pop()
        placed = (done & required).bit_count()
        if placed > best:
            best, best_mask = placed, done
        if placed == total:
            return total, total, None
        deadline = next((rets[i] for i in by_return if not done >> i & 1), math.inf)
        first = (~done & (done + 1)).bit_length() - 1  # the earliest call not placed yet
        candidates: list[tuple[int, Model]] = []
        for index in range(first, len(ordered)):
            if calls[index] > deadline:
                break
            if done >> index & 1:
                continue
            candidates.extend((done | 1 << index, new) for new in _steps(state, ordered[index]))
        # Depth first, trying the earliest call first (it is pushed last).
        for candidate in reversed(candidates):
            if candidate not in seen:
                seen.add(candidate)
                stack.append(candidate)
    stuck = next(
        (ordered[i] for i in by_return if not best_mask >> i & 1 and rets[i] != math.inf), None
    )
    return max(best, 0), total, stuck
