"""Session id rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionstore import InvalidSessionIdError, is_valid_session_id, validate_session_id
from sessionstore.ids import SESSION_FILE_NAME
from sessionstore.testing import strategies as sst

VALID = [
    "a",
    "A",
    "0",
    "_",
    "a-b",
    "abc_DEF-123",
    "x" * 128,
    "_-",
    "CONSOLE",
    "COM0",
    "LPT10",
    "nul_",
]
INVALID: list[Any] = [
    "",
    "x" * 129,
    "-leading-dash",
    "has space",
    "dot.ted",
    "../x",
    "a/b",
    "a\\b",
    "/etc/passwd",
    "C:\\evil",
    "nul\x00byte",
    "trailing.",
    "trailing ",
    "é",
    "\uff41",  # fullwidth a
    "a\n",
    "CON",
    "con",
    "Nul",
    "aux",
    "PRN",
    "COM1",
    "com9",
    "LPT1",
    "lpt9",
    ".hidden",
    ".locks",
    None,
    42,
    b"bytes",
    ["a"],
]


@pytest.mark.parametrize("session_id", VALID)
def test_valid_ids_are_accepted(session_id: str) -> None:
    assert is_valid_session_id(session_id)
    assert validate_session_id(session_id) == session_id


@pytest.mark.parametrize("session_id", INVALID)
def test_invalid_ids_are_refused_with_a_message_that_shows_them(session_id: Any) -> None:
    assert not is_valid_session_id(session_id)
    with pytest.raises(InvalidSessionIdError, match="invalid session id") as info:
        validate_session_id(session_id)
    assert repr(session_id)[:20] in str(info.value)
    assert isinstance(info.value, ValueError)


def test_str_subclass_is_refused() -> None:
    class Sneaky(str):
        __slots__ = ()

    assert not is_valid_session_id(Sneaky("abc"))


@given(sst.session_ids())
def test_generated_ids_are_valid(session_id: str) -> None:
    assert validate_session_id(session_id) == session_id


@pytest.mark.parametrize(
    "name",
    [f"{x}.json" for x in VALID + INVALID if isinstance(x, str)]
    + ["a.JSON", "a.json.json", "a.json\n", ".json", "a", "\u017f.json", "\u212a.json", "CON.JSON"],
)
def test_file_name_pattern_is_the_id_rules_plus_the_suffix(name: str) -> None:
    match = SESSION_FILE_NAME.fullmatch(name)
    expected = name.endswith(".json") and is_valid_session_id(name[:-5])
    assert (match is not None) == expected
    if match:
        assert match[1] == name[:-5]


@given(st.one_of(sst.session_ids(), st.text(max_size=140)), st.sampled_from([".json", ".JSON", ""]))
def test_file_name_pattern_agrees_with_is_valid_session_id(stem: str, suffix: str) -> None:
    name = stem + suffix
    match = SESSION_FILE_NAME.fullmatch(name)
    expected = name.endswith(".json") and is_valid_session_id(name[:-5])
    assert (match is not None) == expected
    if match:
        assert match[1] == name[:-5]
