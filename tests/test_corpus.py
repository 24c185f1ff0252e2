"""The golden corpus: sample files of every schema version, loaded forever.

``corpus/`` holds files that must load (seed-written version 1 files, an
explicit version 1, version 2; and current version 3 files: plain, folded with a store
line, with append records, with a torn tail, in ``corpus_v3/``); ``corpus_refused/`` and
``corpus_v3_refused/`` hold files that must be refused with a named error. Never edit
these files: add new ones.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import TypedDict

import pytest

from sessionstore import (
    CURRENT_SCHEMA_VERSION,
    CorruptSessionError,
    SchemaVersionError,
    SessionStore,
    StoredSession,
)
from sessionstore.codec import decode_document, encode

CORPUS = Path(__file__).parent / "corpus"
CORPUS_V3 = Path(__file__).parent / "corpus_v3"
"""Version-3 files (the append log's era), kept apart so the CLI's tests of ``corpus/`` keep
their counts: plain, folded with a store line, with records, with a torn tail."""


def _folder(session_id: str) -> Path:
    return CORPUS_V3 if session_id.startswith("v3-") else CORPUS


REFUSED = Path(__file__).parent / "corpus_refused"
REFUSED_V3 = Path(__file__).parent / "corpus_v3_refused"


class Expected(TypedDict):
    messages: tuple[str, ...]
    tokens: tuple[int, int]


EXPECTED: dict[str, Expected] = {
    "v1-seed-basic": {"messages": ("hello", "how can I help?"), "tokens": (12, 34)},
    "v1-seed-unicode": {
        "messages": ("héllo wörld", "日本語", "emoji \U0001f600 and \U0010ffff", "nul\x00byte", ""),
        "tokens": (7, 9),
    },
    # The seed's json.dumps escaped lone surrogates; each becomes U+FFFD on load.
    "v1-seed-lone-surrogate": {
        "messages": ("broken \ufffd half", "\ufffd", "ok"),
        "tokens": (1, 2),
    },
    "v1-seed-empty": {"messages": (), "tokens": (0, 0)},
    "v1-seed-max-tokens": {"messages": ("x",), "tokens": (2**63 - 1, 2**63 - 1)},
    "v1-explicit-version": {"messages": ("a",), "tokens": (1, 1)},
    "v2-minimal": {"messages": ("one", "two"), "tokens": (3, 4)},
    "v2-full": {"messages": ("système", "\U0001f600"), "tokens": (10, 20)},
    "v3-folded": {"messages": ("plain", "système \U0001f680"), "tokens": (5, 6)},
    "v3-folded-with-store": {"messages": ("a", "b", "c"), "tokens": (0, 0)},
    "v3-with-records": {
        "messages": ("first", "second", "line\nbreak", "third \u2028 日本"),
        "tokens": (4, 6),
    },
    # An append that never finished: its partial line is not part of the session.
    "v3-torn-tail": {"messages": ("a", "b"), "tokens": (1, 0)},
}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_corpus_lists_every_sample() -> None:
    assert sorted(SessionStore(CORPUS).list() + SessionStore(CORPUS_V3).list()) == sorted(EXPECTED)


@pytest.mark.parametrize("session_id", sorted(EXPECTED))
def test_corpus_file_loads_with_expected_content(session_id: str) -> None:
    before = _digests(_folder(session_id))
    session = SessionStore(_folder(session_id)).load(session_id)
    expected = EXPECTED[session_id]
    assert session.session_id == session_id
    assert session.schema_version == CURRENT_SCHEMA_VERSION
    assert session.messages == expected["messages"]
    assert (session.input_tokens, session.output_tokens) == expected["tokens"]
    assert _digests(_folder(session_id)) == before, "loading must never write"


def test_corpus_seed_files_migrate_with_empty_new_fields() -> None:
    session = SessionStore(CORPUS).load("v1-seed-basic")
    assert (session.created_at, session.updated_at, session.metadata) == (None, None, {})


def test_corpus_full_v2_file_keeps_timestamps_and_metadata() -> None:
    session = SessionStore(CORPUS).load("v2-full")
    assert session.created_at == datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    assert session.metadata["big"] == 2**64 - 1
    assert session.metadata["nested"] == {"depth": [1, 2.5, None, True]}


def test_corpus_lone_surrogate_file_reports_its_repair() -> None:
    data = (CORPUS / "v1-seed-lone-surrogate.json").read_bytes()
    decoded = decode_document(data, session_id="v1-seed-lone-surrogate")
    assert decoded.source_version == 1
    assert decoded.repaired_surrogates == 2
    assert decoded.needs_rewrite


@pytest.mark.parametrize("session_id", sorted(EXPECTED))
def test_corpus_current_files_reencode_byte_identical(session_id: str) -> None:
    """A current file written by this library re-encodes to the very same bytes."""
    data = (_folder(session_id) / f"{session_id}.json").read_bytes()
    decoded = decode_document(data, session_id=session_id)
    if not decoded.needs_rewrite and not decoded.records and not decoded.folded_store:
        assert encode(decoded.session) == data


def test_corpus_refused_too_new_version() -> None:
    before = _digests(REFUSED_V3)
    with pytest.raises(SchemaVersionError, match="v4-from-the-future") as info:
        SessionStore(REFUSED_V3).load("v4-from-the-future")
    assert info.value.found_version == 4
    assert info.value.supported_version == CURRENT_SCHEMA_VERSION
    assert _digests(REFUSED_V3) == before


@pytest.mark.parametrize(
    ("session_id", "reason"),
    [
        ("v1-torn-write", "not valid JSON"),
        ("v2-wrong-id-inside", "someone-else"),
        # Written when version 3 was in the future; version 3 has no such field.
        ("v3-from-the-future", "a_field_from_the_future"),
        ("v3-damaged-record", "do not match its hash"),
    ],
)
def test_corpus_refused_corrupt_files(session_id: str, reason: str) -> None:
    folder = REFUSED_V3 if session_id == "v3-damaged-record" else REFUSED
    with pytest.raises(CorruptSessionError, match=reason) as info:
        SessionStore(folder).load(session_id)
    assert info.value.session_id == session_id
    assert info.value.path == folder / f"{session_id}.json"
    assert session_id in str(info.value)


def test_corpus_sessions_compare_equal_to_their_constructed_form() -> None:
    loaded = SessionStore(CORPUS).load("v2-minimal")
    built = StoredSession(
        session_id="v2-minimal", messages=("one", "two"), input_tokens=3, output_tokens=4
    )
    assert loaded == built
