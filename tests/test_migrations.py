"""Migration steps are pure, raise the version by one, and preserve the content."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import given

from sessionstore import CURRENT_SCHEMA_VERSION, StoredSession
from sessionstore.history import MODELS
from sessionstore.migrations import STEPS, read_version, upgrade
from sessionstore.models import session_adapter
from sessionstore.testing import strategies as sst


def test_every_old_version_has_exactly_one_step() -> None:
    assert sorted(STEPS) == list(range(1, CURRENT_SCHEMA_VERSION))
    assert sorted(MODELS) == list(range(1, CURRENT_SCHEMA_VERSION + 1))


@pytest.mark.parametrize(
    ("doc", "version"),
    [({}, 1), ({"schema_version": 1}, 1), ({"schema_version": 2}, 2), ({"schema_version": 9}, 9)],
)
def test_read_version(doc: dict[str, Any], version: int) -> None:
    assert read_version(doc) == version


@pytest.mark.parametrize("bad", [True, False, 0, -1, 1.0, "2", None, [2]])
def test_read_version_refuses_what_is_not_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="schema_version"):
        read_version({"schema_version": bad})


@given(sst.v1_documents())
def test_v1_documents_migrate_to_the_current_version_with_the_same_content(
    doc: dict[str, Any],
) -> None:
    original = copy.deepcopy(doc)
    upgraded = upgrade(doc, read_version(doc))
    assert doc == original, "steps must not mutate their input"
    session = session_adapter().validate_python(upgraded)
    assert session.schema_version == CURRENT_SCHEMA_VERSION
    assert session.session_id == doc["session_id"]
    assert session.messages == tuple(doc["messages"])
    assert (session.input_tokens, session.output_tokens) == (
        doc["input_tokens"],
        doc["output_tokens"],
    )
    assert (session.created_at, session.updated_at, session.metadata) == (None, None, {})


@given(sst.v1_documents())
def test_each_step_is_pure_and_raises_the_version_by_one(doc: dict[str, Any]) -> None:
    version = read_version(doc)
    while version < CURRENT_SCHEMA_VERSION:
        before = copy.deepcopy(doc)
        new = STEPS[version](doc)
        assert doc == before
        assert new is not doc
        assert new["schema_version"] == version + 1
        assert STEPS[version](before) == new, "a step is a function of its input alone"
        doc, version = new, version + 1


@given(sst.sessions())
def test_current_documents_pass_through_unchanged(session: StoredSession) -> None:
    doc = {"schema_version": session.schema_version, **dataclasses.asdict(session)}
    assert upgrade(doc, CURRENT_SCHEMA_VERSION) == doc


def test_upgrade_rejects_a_step_that_does_not_raise_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sessionstore.migrations.STEPS", {1: lambda doc: dict(doc)})
    with pytest.raises(RuntimeError, match="produced version"):
        upgrade({"session_id": "x"}, 1)


def test_upgrade_rejects_a_missing_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sessionstore.migrations.STEPS", {})
    with pytest.raises(LookupError, match="no migration step"):
        upgrade({"session_id": "x"}, 1)
