"""StoredSession refuses, at construction, every value it could not store and read back."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from pydantic import ValidationError

from sessionstore import CURRENT_SCHEMA_VERSION, StoredSession
from sessionstore.codec import decode, encode
from sessionstore.models import DECODED_TEXT, MAX_METADATA_DEPTH, MAX_TOKENS, session_adapter
from sessionstore.testing import strategies as sst
from tests.helpers import unvalidated


def make(**overrides: Any) -> StoredSession:
    fields: dict[str, Any] = {
        "session_id": "s1",
        "messages": ("a", "b"),
        "input_tokens": 1,
        "output_tokens": 2,
    }
    fields.update(overrides)
    return StoredSession(**fields)


def nested(depth: int) -> dict[str, Any]:
    """A metadata object whose container nesting (itself included) is ``depth``."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"k": value}


def test_seed_keyword_construction_fills_defaults() -> None:
    session = make()
    assert session.schema_version == CURRENT_SCHEMA_VERSION == 3
    assert (session.created_at, session.updated_at, session.metadata) == (None, None, {})


def test_session_is_frozen() -> None:
    session = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.messages = ()  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="colour"):
        make(colour="blue")


def test_messages_list_becomes_tuple() -> None:
    assert make(messages=["x", "y"]).messages == ("x", "y")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_tokens", -1),
        ("output_tokens", MAX_TOKENS + 1),
        ("input_tokens", 2**64),
        ("input_tokens", True),
        ("input_tokens", "3"),
        ("input_tokens", 3.0),
        ("messages", ("ok", 5)),
        ("messages", "not a tuple of messages but a string"),
        ("session_id", 7),
        ("schema_version", 1),
        ("schema_version", 2),
        ("schema_version", 4),
        ("created_at", datetime(2026, 1, 1)),  # naive on purpose
    ],
)
def test_wrong_types_and_ranges_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        make(**{field: value})


def test_token_boundaries_are_accepted() -> None:
    session = make(input_tokens=0, output_tokens=MAX_TOKENS)
    assert decode(encode(session)) == session


@pytest.mark.parametrize(
    "overrides",
    [
        {"messages": ("fine", "lone \ud800 surrogate")},
        {"session_id": "id\udfff"},
        {"metadata": {"k": "\ud800"}},
        {"metadata": {"\udc00key": 1}},
        {"metadata": {"deep": [{"x": ["\ud83d"]}]}},
    ],
)
def test_lone_surrogates_are_refused_anywhere(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="surrogate"):
        make(**overrides)


def test_lone_surrogate_error_names_the_message_index() -> None:
    with pytest.raises(ValidationError, match=r"messages\[1\]"):
        make(messages=("ok", "bad \udfff"))


def test_only_the_codecs_own_context_skips_the_text_check() -> None:
    # The codec's shortcut is keyed by identity: an equal context from a caller
    # (or any other context) must still be checked.
    doc = {
        "session_id": "s1",
        "messages": ["ok", "bad \udfff"],
        "input_tokens": 0,
        "output_tokens": 0,
    }
    with pytest.raises(ValidationError, match="surrogate"):
        session_adapter().validate_python(doc, context=dict(DECODED_TEXT))
    with pytest.raises(ValidationError, match="surrogate"):
        session_adapter().validate_python(doc, context={"other": 1})


def test_the_codecs_context_reaches_the_validator() -> None:
    # The load fast path depends on it: an ``__init__`` override on the model once
    # made Pydantic validate through ``__init__``, dropping the context (and making
    # every load several times slower). The codec only passes text a strict parser
    # read, which cannot hold a lone surrogate; this one proves the check was skipped.
    doc = {"session_id": "s1", "messages": ["\udfff"], "input_tokens": 0, "output_tokens": 0}
    assert session_adapter().validate_python(doc, context=DECODED_TEXT).messages == ("\udfff",)


def test_decoded_files_cannot_smuggle_lone_surrogates() -> None:
    # The shortcut is sound because orjson refuses lone surrogates, escaped or raw.
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(rb'{"messages": ["\udfff"]}')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b'{"messages": ["\xed\xbf\xbf"]}')


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, math.nan, math.inf, -math.inf])
def test_metadata_numbers_json_cannot_hold_are_refused(value: Any) -> None:
    with pytest.raises(ValidationError, match="metadata"):
        make(metadata={"n": value})


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 0.1, -0.0, 1e308])
def test_metadata_numbers_at_the_edges_round_trip(value: Any) -> None:
    session = make(metadata={"n": value})
    assert decode(encode(session)).metadata["n"] == value


@pytest.mark.parametrize(
    "value", [{1: "x"}, {"s": {1, 2}}, {"b": b"bytes"}, {"d": datetime.now(timezone.utc)}]
)
def test_metadata_values_that_are_not_json_are_refused(value: dict[Any, Any]) -> None:
    with pytest.raises(ValidationError, match="metadata"):
        make(metadata=value)


def test_metadata_tuples_are_stored_as_lists_so_they_read_back_equal() -> None:
    session = make(metadata={"t": (1, (2, 3))})
    assert session.metadata == {"t": [1, [2, 3]]}
    assert decode(encode(session)) == session


def test_metadata_at_the_depth_limit_is_accepted_and_round_trips() -> None:
    session = make(metadata=nested(MAX_METADATA_DEPTH))
    assert decode(encode(session)) == session


def test_metadata_past_the_depth_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="nests deeper"):
        make(metadata=nested(MAX_METADATA_DEPTH + 1))


def test_depth_limit_is_exactly_what_orjson_can_write() -> None:
    """The limit is not arbitrary: one level more and orjson refuses the document."""
    doc = {"metadata": nested(MAX_METADATA_DEPTH)}
    orjson.dumps(doc)
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps({"metadata": nested(MAX_METADATA_DEPTH + 1)})


def test_timestamps_are_kept_in_utc_and_compare_equal() -> None:
    local = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    session = make(created_at=local)
    assert session.created_at == local
    assert session.created_at is not None
    assert session.created_at.utcoffset() == timedelta(0)


def test_timestamp_that_cannot_be_expressed_in_utc_is_refused() -> None:
    with pytest.raises(ValidationError, match="UTC"):
        make(created_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))


@given(sst.sessions())
def test_every_valid_session_encodes_and_decodes_equal(session: StoredSession) -> None:
    assert decode(encode(session)) == session


@given(sst.sessions())
def test_encoding_is_stable_for_equal_sessions(session: StoredSession) -> None:
    again = session_adapter().validate_python(dataclasses.asdict(session))
    assert encode(again) == encode(session)


def test_replace_validates_like_construction() -> None:
    session = make()
    # A list where the field is a tuple, on purpose: replace converts it as construction does.
    coerced = dataclasses.replace(session, messages=["x"])  # type: ignore[arg-type]
    assert coerced.messages == ("x",)
    with pytest.raises(ValidationError, match="input_tokens"):
        dataclasses.replace(session, input_tokens=-1)
    with pytest.raises(ValidationError, match="surrogate"):
        dataclasses.replace(session, messages=("\ud800",))


def test_encoding_a_session_built_around_validation_raises_value_error() -> None:
    bogus = unvalidated(session_id="s1", messages=("\ud800",), input_tokens=0, output_tokens=0)
    with pytest.raises(ValueError, match="'s1' cannot be encoded"):
        encode(bogus)


def test_the_seeds_positional_construction_still_works() -> None:
    # The seed's StoredSession was a dataclass: callers may build it by position.
    assert StoredSession("s1", ("a", "b"), 1, 2) == make()
    assert StoredSession("s1", ("a", "b"), input_tokens=1, output_tokens=2) == make()


def test_positional_construction_is_validated_like_keywords() -> None:
    with pytest.raises(ValidationError, match="input_tokens"):
        StoredSession("s1", (), -1, 0)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("s1", (), 0, 0, None, None, {}, 2, "extra"), {}, "at most 8 positional"),
        (
            ("s1",),
            {"session_id": "s2", "messages": (), "input_tokens": 0, "output_tokens": 0},
            "multiple values for argument 'session_id'",
        ),
    ],
)
def test_positional_misuse_is_a_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        StoredSession(*args, **kwargs)


@pytest.mark.parametrize("version", [2.0, True, "2"])
def test_schema_version_must_be_the_integer(version: object) -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        StoredSession("s1", (), 0, 0, schema_version=version)  # type: ignore[arg-type]
