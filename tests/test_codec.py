"""The decode pipeline: every failure is a named error that names the session and the file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionstore import CorruptSessionError, SchemaVersionError, StoredSession
from sessionstore.codec import decode, decode_document, encode
from sessionstore.migrations import V1_EXTRA_KEY
from sessionstore.models import CURRENT_SCHEMA_VERSION
from sessionstore.testing import strategies as sst

PATH = "/store/s1.json"


def v1(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "session_id": "s1",
        "messages": ["a"],
        "input_tokens": 1,
        "output_tokens": 2,
    }
    doc.update(overrides)
    return doc


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_encode_is_indented_in_model_key_order_and_ends_with_newline() -> None:
    data = encode(StoredSession(session_id="s1", messages=("a",), input_tokens=1, output_tokens=2))
    keys = list(orjson.loads(data))
    fields = [field.name for field in dataclasses.fields(StoredSession)]
    assert keys == ["schema_version", *(name for name in fields if name != "schema_version")]
    assert data.startswith(b'{\n  "schema_version": %d,\n' % CURRENT_SCHEMA_VERSION)
    assert data.endswith(b"}\n")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"not json", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"\xef\xbb\xbf" + raw(v1()), "not valid JSON"),
        (raw(v1()) + b" trailing", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "an array, expected an object"),
        (b'"text"', "a string, expected an object"),
        (b"null", "null, expected an object"),
        (raw(v1(schema_version=True)), "schema_version must be an integer"),
        (raw(v1(schema_version=0)), "schema_version must be an integer"),
        (raw(v1(schema_version="2")), "schema_version must be an integer"),
        (raw({"session_id": "s1", "messages": ["a"], "input_tokens": 1}), "output_tokens"),
        (raw(v1(messages="abc")), "messages"),
        (raw(v1(messages=[1, 2])), "messages"),
        (raw(v1(input_tokens=-5)), "input_tokens"),
        (raw(v1(input_tokens="5")), "input_tokens"),
        (raw(v1(output_tokens=2**63)), "output_tokens"),
        (raw(v1(session_id="other")), "'other', not the file's id"),
        (raw({**v1(), "schema_version": 2, "colour": "blue"}), "colour"),
        (raw({**v1(), "schema_version": 2, "created_at": "yesterday"}), "created_at"),
    ],
)
def test_corrupt_documents_raise_corrupt_session_error(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptSessionError, match=reason) as info:
        decode(data, session_id="s1", path=PATH)
    assert type(info.value) is CorruptSessionError
    assert info.value.session_id == "s1"
    assert info.value.path == PATH
    assert "'s1'" in str(info.value)
    assert PATH in str(info.value)


@pytest.mark.parametrize("version", [CURRENT_SCHEMA_VERSION + 1, 9, 2**63 - 1])
def test_newer_versions_are_refused_before_anything_else(version: int) -> None:
    # Even a document that would be invalid in every known version is refused as
    # too new, not as corrupt: we cannot judge a format we do not know.
    data = raw({"schema_version": version, "whatever": [1, 2, 3]})
    with pytest.raises(SchemaVersionError, match=f"schema_version {version}") as info:
        decode(data, session_id="s1", path=PATH)
    assert info.value.found_version == version
    assert info.value.supported_version == CURRENT_SCHEMA_VERSION
    assert "upgrade sessionstore" in str(info.value)


def test_keys_the_original_module_ignored_are_kept_in_metadata() -> None:
    # The original read its four keys and ignored the rest; refusing such a file
    # would lose a session the original could load.
    data = raw(v1(colour="blue", created_at="not ours", metadata=[1]))
    decoded = decode_document(data, session_id="s1")
    assert decoded.extra_keys == ("colour", "created_at", "metadata")
    assert decoded.session.metadata == {
        V1_EXTRA_KEY: {"colour": "blue", "created_at": "not ours", "metadata": [1]}
    }
    assert decoded.session.created_at is None
    assert decoded.needs_rewrite


def test_explicit_version_1_is_version_1() -> None:
    decoded = decode_document(raw(v1(schema_version=1)), session_id="s1")
    assert decoded.source_version == 1
    assert decoded.session.messages == ("a",)


def test_seed_escaped_lone_surrogates_become_replacement_characters() -> None:
    data = json.dumps(v1(messages=["x\ud800y", "\udfff", "pair \U0001f600 kept"])).encode()
    decoded = decode_document(data, session_id="s1")
    assert decoded.session.messages == ("x\ufffdy", "\ufffd", "pair \U0001f600 kept")
    assert decoded.repaired_surrogates == 2
    assert decoded.needs_rewrite


def test_escaped_lone_surrogates_in_a_current_document_are_corrupt() -> None:
    data = json.dumps({**v1(messages=["x\ud800"]), "schema_version": 2}).encode()
    with pytest.raises(CorruptSessionError, match="lone surrogates"):
        decode(data, session_id="s1")


def test_legacy_fallback_still_refuses_nan() -> None:
    data = b'{"session_id": "s1", "messages": ["\\ud800"], "input_tokens": NaN, "output_tokens": 1}'
    with pytest.raises(CorruptSessionError, match="not valid JSON"):
        decode(data, session_id="s1")


def test_deep_nesting_is_a_clean_error() -> None:
    data = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(CorruptSessionError, match="not valid JSON"):
        decode(data, session_id="s1")


def test_duplicate_keys_take_the_last_value_like_every_json_reader() -> None:
    data = (
        b'{"session_id": "s1", "messages": [], '
        b'"input_tokens": 1, "input_tokens": 5, "output_tokens": 0}'
    )
    assert decode(data, session_id="s1").input_tokens == 5


def test_validation_error_lists_at_most_three_problems() -> None:
    data = raw({"schema_version": 2, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    with pytest.raises(CorruptSessionError, match="more problem"):
        decode(data, session_id="s1")


@given(sst.sessions())
def test_current_documents_decode_as_current(session: StoredSession) -> None:
    decoded = decode_document(encode(session), session_id=session.session_id)
    assert decoded.session == session
    assert decoded.source_version == CURRENT_SCHEMA_VERSION
    assert not decoded.needs_rewrite
    assert (decoded.records, decoded.torn_bytes) == (0, 0)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    # Anything but a CorruptSessionError (or a success) propagates and fails the test.
    with contextlib.suppress(CorruptSessionError):
        decode(data, session_id="s1", path=PATH)


def test_integers_beyond_64_bits_in_metadata_are_refused_not_rounded() -> None:
    # Issue 9.20: they loaded as floats and were written back rounded.
    data = encode(StoredSession("s1", (), 0, 0, metadata={"n": 1})).replace(
        b'"n": 1', b'"n": 123456789012345678901234567890'
    )
    with pytest.raises(CorruptSessionError, match="64-bit") as info:
        decode(data, session_id="s1")
    assert info.value.reason == "invalid-fields"


def test_a_deep_seed_document_with_a_lone_surrogate_is_a_clean_error() -> None:
    # Issue 9.12: the legacy repair walked recursively and raised RecursionError.
    deep = "[" * 600 + '"\\ud800"' + "]" * 600
    data = (
        '{"session_id": "s1", "messages": [], "input_tokens": 0, "output_tokens": 0, '
        f'"extra": {deep}}}'
    ).encode()
    with pytest.raises(CorruptSessionError, match="nests deeper"):
        decode(data, session_id="s1")


def test_a_seed_document_with_a_surrogate_in_an_extra_key_is_repaired() -> None:
    data = (
        b'{"session_id": "s1", "messages": ["\\ud83d"], "input_tokens": 0, '
        b'"output_tokens": 0, "note": {"k\\udc00": ["\\ud800"]}}'
    )
    decoded = decode_document(data, session_id="s1")
    assert decoded.session.messages == ("\ufffd",)
    assert decoded.session.metadata == {V1_EXTRA_KEY: {"note": {"k\ufffd": ["\ufffd"]}}}
    assert decoded.repaired_surrogates == 3
