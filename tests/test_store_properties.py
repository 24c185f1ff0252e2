"""Properties of the store: round-trip fidelity and delete idempotence, through the
class and the seed-compatible functions, and (the packaged conformance properties)
through every backend."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sessionstore import (
    SessionNotFoundError,
    SessionStore,
    StoredSession,
    delete_session,
    list_sessions,
    load_session,
    save_session,
    session_exists,
)
from sessionstore.testing import StoreFactory
from sessionstore.testing import strategies as sst
from sessionstore.testing.conformance import delete_idempotence_test, round_trip_test
from tests.test_store_stateful import SUBJECTS


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@given(sst.sessions())
def test_round_trip_through_the_class(session: StoredSession) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(Path(tmp) / "s", durable=False)
        store.save(session)
        assert store.load(session.session_id) == session
        assert SessionStore(Path(tmp) / "s").load(session.session_id) == session


@given(sst.sessions())
def test_round_trip_through_the_seed_functions(session: StoredSession) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_session(session, tmp)
        assert path == Path(tmp) / f"{session.session_id}.json"
        assert load_session(session.session_id, tmp) == session
        assert list_sessions(tmp) == [session.session_id]


_UNSTORABLE: list[dict[str, Any]] = [
    {"messages": ("\ud800",)},
    {"input_tokens": -1},
    {"output_tokens": 2**63},
    {"metadata": {"x": float("nan")}},
    {"metadata": {"x": 2**64}},
    {"session_id": "\udfff"},
]


@pytest.mark.parametrize("bad", _UNSTORABLE)
def test_values_the_model_refuses_never_reach_the_disk(tmp_path: Path, bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "session_id": "s1",
        "messages": ("a",),
        "input_tokens": 0,
        "output_tokens": 0,
        **bad,
    }
    with pytest.raises(ValidationError):
        save_session(StoredSession(**fields), tmp_path / "never")
    assert not (tmp_path / "never").exists()


_ops = st.lists(
    st.tuples(st.sampled_from(["save", "delete"]), st.sampled_from(["a", "b", "c"])),
    max_size=30,
)


@given(_ops)
def test_delete_is_idempotent_and_exists_list_load_agree(ops: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        present: set[str] = set()
        for op, session_id in ops:
            if op == "save":
                save_session(
                    StoredSession(
                        session_id=session_id, messages=(op,), input_tokens=0, output_tokens=0
                    ),
                    tmp,
                )
                present.add(session_id)
            else:
                assert delete_session(session_id, tmp) is (session_id in present)
                assert delete_session(session_id, tmp) is False
                present.discard(session_id)
            assert list_sessions(tmp) == sorted(present)
            for other in "abc":
                assert session_exists(other, tmp) is (other in present)
                if other not in present:
                    with pytest.raises(SessionNotFoundError):
                        load_session(other, tmp)
                else:
                    assert load_session(other, tmp).session_id == other
        assert not [name for name in _files(Path(tmp)) if name.endswith(".tmp")]


# The packaged conformance properties, once per store class.
@pytest.mark.parametrize("factory", SUBJECTS)
def test_round_trip_through_every_class(factory: StoreFactory) -> None:
    round_trip_test(factory)()


@pytest.mark.parametrize("factory", SUBJECTS)
def test_delete_idempotence_through_every_class(factory: StoreFactory) -> None:
    delete_idempotence_test(factory)()
