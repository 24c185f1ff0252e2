"""The history checker of the concurrency rule: it accepts every linearizable history
of the workload and names what is wrong in the others.

Hand-made histories pin each kind of violation; Hypothesis builds histories from a
sequential dict model with intervals stretched around each call's moment (all
linearizable by construction, so the checker must accept them) and then corrupts one
observation (which it must reject).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionstore.testing import linearizable
from sessionstore.testing.linearizable import FINAL, Op, State, check_history


def op(
    worker: str,
    kind: str,
    call: int,
    ret: int,
    outcome: str = "ok",
    *,
    token: str | None = None,
    value: tuple[str, ...] | None = None,
    expected: tuple[str, ...] | None = None,
    session_id: str = "s",
    error: str | None = None,
) -> Op:
    count = len(value) if value is not None else None
    return Op(worker, session_id, kind, token, call, ret, outcome, expected, value, count, error)


def test_a_sequential_history_of_every_kind_is_accepted() -> None:
    history = [
        op("w", "load", 0, 1, "absent"),
        op("w", "update", 2, 3, "absent", token="u0"),
        op("w", "append", 4, 5, token="a1", value=("a1",)),
        op("w", "create", 6, 7, "conflict", token="c1"),
        op("w", "update", 8, 9, token="u1", value=("a1", "u1")),
        op("w", "cas", 10, 11, token="k1", expected=("a1", "u1")),
        op("w", "cas", 12, 13, "conflict", token="k2", expected=("a1",)),
        op("w", "load", 14, 15, value=("a1", "u1", "k1")),
        op("w", "save", 16, 17, token="s1"),
        op("w", "delete", 18, 19, "deleted"),
        op("w", "delete", 20, 21, "absent"),
        op("w", "create", 22, 23, token="c2"),
        op(FINAL, "load", 24, 25, value=("c2",)),
    ]
    assert check_history(history) == []


def test_overlapping_calls_may_take_effect_in_either_order() -> None:
    # Two appends overlap; loads after both show b before a: the checker must find it.
    history = [
        op("x", "append", 0, 10, token="a", value=("b", "a")),
        op("y", "append", 1, 9, token="b", value=("b",)),
        op(FINAL, "load", 11, 12, value=("b", "a")),
    ]
    assert check_history(history) == []


def test_a_lost_update_is_reported() -> None:
    # Both updates read ("a",) and wrote on top of it: one of them was lost.
    history = [
        op("w", "save", 0, 1, token="a"),
        op("x", "update", 2, 10, token="u1", value=("a", "u1")),
        op("y", "update", 3, 11, token="u2", value=("a", "u2")),
        op(FINAL, "load", 12, 13, value=("a", "u2")),
    ]
    problems = check_history(history)
    assert any("acknowledged write lost" in p and "'u1'" in p for p in problems), problems
    assert any("no order of its 4 calls" in p for p in problems), problems


def test_a_read_that_misses_an_acknowledged_write_is_reported() -> None:
    history = [
        op("w", "save", 0, 1, token="a"),
        op("w", "append", 2, 3, token="b", value=("a", "b")),
        op("r", "load", 4, 5, value=("a",)),  # starts after the append returned
    ]
    problems = check_history(history)
    assert len(problems) == 1
    assert "the first call it could not place: r: load('s')" in problems[0]


def test_a_resurrected_session_is_reported() -> None:
    history = [
        op("w", "append", 0, 1, token="old", value=("old",)),
        op("w", "delete", 2, 3, "deleted"),
        op("x", "append", 4, 5, token="new", value=("old", "new")),
    ]
    problems = check_history(history)
    assert any("deleted session came back" in p and "['old']" in p for p in problems), problems


def test_duplicated_unknown_and_miscounted_tokens_are_reported() -> None:
    history = [
        op("w", "append", 0, 1, token="a", value=("a", "a")),
        op("w", "load", 2, 3, value=("a", "ghost")),
        replace(op("w", "load", 4, 5, value=("a",)), count=7),
    ]
    problems = "\n".join(check_history(history))
    assert "token 'a' appears twice" in problems
    assert "token 'ghost' was never written" in problems
    assert "counts: 1 messages but input_tokens 7" in problems


def test_conditional_saves_must_match_exactly_when_the_version_is_current() -> None:
    spurious_conflict = [
        op("w", "save", 0, 1, token="a"),
        op("w", "cas", 2, 3, "conflict", token="b", expected=("a",)),
    ]
    stale_success = [
        op("w", "save", 0, 1, token="a"),
        op("w", "save", 2, 3, token="b"),
        op("w", "cas", 4, 5, token="c", expected=("a",)),
    ]
    assert check_history(spurious_conflict) != []
    assert check_history(stale_success) != []


def test_an_error_is_reported_and_its_write_may_or_may_not_have_landed() -> None:
    landed = [
        op("w", "save", 0, 1, token="a"),
        op("w", "append", 2, 3, "error", token="b", error="SessionWriteError: boom"),
        op(FINAL, "load", 4, 5, value=("a", "b")),
    ]
    not_landed = [*landed[:2], op(FINAL, "load", 4, 5, value=("a",))]
    for history in (landed, not_landed):
        problems = check_history(history)
        assert len(problems) == 1
        assert problems[0].startswith("unexpected error: w: append('s', token 'b') -> error")


def test_sessions_are_checked_one_by_one() -> None:
    history = [
        op("w", "save", 0, 1, token="a", session_id="one"),
        op("w", "load", 2, 3, "absent", session_id="two"),
        op("w", "load", 4, 5, value=("a",), session_id="two"),
    ]
    problems = check_history(history)
    assert len(problems) == 2
    assert "token 'a' was never written" in problems[0]
    assert problems[1].startswith("session 'two': no order")


def test_a_search_that_gives_up_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linearizable, "_SEARCH_BUDGET", 1)
    history = [
        op("x", "append", 0, 10, token="a", value=("b", "a")),
        op("y", "append", 1, 9, token="b", value=("b",)),
    ]
    problems = check_history(history)
    assert len(problems) == 1
    assert problems[0].startswith("session 's': undecided: the search for an order of its 2")


def test_a_long_report_is_cut_short() -> None:
    history = [op("w", "load", i, i, "error", error="boom") for i in range(100)]
    problems = check_history(history)
    assert len(problems) == 41
    assert problems[-1] == "... and 60 more violations"


# -- generated histories ----------------------------------------------------------------

_KINDS = st.sampled_from(["load", "save", "create", "cas", "update", "append", "delete"])


@st.composite
def sequential_histories(draw: st.DrawFn) -> list[Op]:
    """Calls applied one at a time to a dict model: each has a moment at which it took
    effect, and an interval drawn around that moment (so intervals overlap)."""
    state: State = None
    history = []
    for moment, kind in enumerate(draw(st.lists(_KINDS, max_size=25))):
        token = f"t{moment}"
        call = moment * 10 - draw(st.integers(0, 25))
        ret = moment * 10 + draw(st.integers(0, 25))
        value: tuple[str, ...] | None = None
        outcome = "ok"
        expected: tuple[str, ...] | None = None
        if kind == "load":
            outcome, value = ("absent", None) if state is None else ("ok", state)
        elif kind == "save":
            state = (token,)
        elif kind == "create":
            if state is None:
                state = (token,)
            else:
                outcome = "conflict"
        elif kind == "cas":
            expected = draw(st.sampled_from([state or (), (*(state or ()), "other")]))
            if expected == state:
                state = (*state, token)
            else:
                outcome = "conflict"
        elif kind == "update":
            if state is None:
                outcome = "absent"
            else:
                state = value = (*state, token)
        elif kind == "append":
            state = value = (*(state or ()), token)
        else:
            outcome = "absent" if state is None else "deleted"
            state = None
        worker = draw(st.sampled_from(["x", "y", "z"]))
        history.append(
            op(worker, kind, call, ret, outcome, token=token, value=value, expected=expected)
        )
    final = len(history) * 10 + 30
    history.append(
        op(FINAL, "load", final, final + 1, "absent" if state is None else "ok", value=state)
    )
    return history


@given(sequential_histories())
def test_every_history_of_the_sequential_model_is_accepted(history: list[Op]) -> None:
    assert check_history(history) == []


@given(sequential_histories(), st.data())
def test_a_load_that_saw_a_version_never_written_is_rejected(
    history: list[Op], data: st.DataObject
) -> None:
    loads = [i for i, o in enumerate(history) if o.kind == "load"]  # the final load at least
    index = data.draw(st.sampled_from(loads))
    seen = history[index].value or ()
    history[index] = replace(
        history[index], outcome="ok", value=(*seen, "never-written"), count=len(seen) + 1
    )
    assert check_history(history) != []


def keyed(
    worker: str, call: int, ret: int, token: str, count: int, *, replayed: bool = False
) -> Op:
    """An ``append(key=token)`` that returned ``count`` messages."""
    return Op(worker, "s", "keyed", token, call, ret, "ok", count=count, replayed=replayed)


def test_a_keyed_append_and_its_replayed_retry_are_accepted() -> None:
    history = [
        keyed("w", 0, 1, "t1", 1),
        keyed("w", 2, 3, "t1", 1, replayed=True),
        op("w", "update", 4, 5, token="u1", value=("t1", "u1")),
        keyed("w", 6, 7, "t1", 1, replayed=True),  # update keeps the keys
        op("w", "save", 8, 9, token="s1"),
        keyed("w", 10, 11, "t1", 2),  # a save forgets them: the retry appends
        op(FINAL, "load", 12, 13, value=("s1", "t1")),
    ]
    assert check_history(history) == []


def test_a_retry_that_appends_again_is_rejected() -> None:
    history = [
        keyed("w", 0, 1, "t1", 1),
        keyed("w", 2, 3, "t1", 2),
        op(FINAL, "load", 4, 5, value=("t1", "t1")),
    ]
    problems = check_history(history)
    assert any("no order of its 3 calls" in p for p in problems), problems


def test_a_replay_with_another_count_or_without_a_first_append_is_rejected() -> None:
    wrong_count = [keyed("w", 0, 1, "t1", 1), keyed("w", 2, 3, "t1", 5, replayed=True)]
    assert check_history(wrong_count) != []
    never_appended = [keyed("w", 0, 1, "t1", 1, replayed=True)]
    assert check_history(never_appended) != []


def test_a_cas_forgets_the_keys_it_carried_over() -> None:
    # cas is a save: the tokens stay, the keys go; a retry then appends a second t1.
    history = [
        keyed("w", 0, 1, "t1", 1),
        op("w", "cas", 2, 3, token="c1", expected=("t1",)),
        keyed("w", 4, 5, "t1", 3),
        op(FINAL, "load", 6, 7, value=("t1", "c1", "t1")),
    ]
    assert check_history(history) == []
