"""Hypothesis strategies for sessions, ids and documents, reaching the edge cases.

Unicode of every plane (no lone surrogates: they cannot be stored), empty
strings and tuples, huge messages, boundary integers, deeply nested metadata.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from sessionstore.ids import MAX_ID_LENGTH, is_valid_session_id
from sessionstore.models import MAX_TOKENS, StoredSession

__all__ = [
    "aware_datetimes",
    "json_values",
    "metadata",
    "session_ids",
    "sessions",
    "texts",
    "token_counts",
    "v1_documents",
]

_ID_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
_ID_REST = _ID_FIRST + "-"


def session_ids() -> st.SearchStrategy[str]:
    """Valid session ids, including the 1- and 128-character extremes."""
    rest = st.text(_ID_REST, max_size=MAX_ID_LENGTH - 1)
    ids = st.builds(lambda first, tail: first + tail, st.sampled_from(_ID_FIRST), rest)
    extremes = st.sampled_from(["a", "_", "0" * MAX_ID_LENGTH, "Z" + "-" * (MAX_ID_LENGTH - 1)])
    return st.one_of(extremes, ids).filter(is_valid_session_id)


def texts(*, max_size: int | None = None) -> st.SearchStrategy[str]:
    """Any storable text: every Unicode plane, NUL, empty; never a lone surrogate."""
    chars = st.characters(codec="utf-8")
    return st.text(chars, max_size=max_size)


def token_counts() -> st.SearchStrategy[int]:
    """Token counts from 0 to 2**63 - 1, with the boundaries favoured."""
    return st.one_of(
        st.sampled_from([0, 1, MAX_TOKENS - 1, MAX_TOKENS]), st.integers(0, MAX_TOKENS)
    )


def json_values(*, max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """JSON values orjson can write and read back equal (64-bit ints, finite floats)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(max_size=50),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(texts(max_size=20), children, max_size=5),
        ),
        max_leaves=max_leaves,
    )


def metadata() -> st.SearchStrategy[dict[str, Any]]:
    """Metadata objects: empty, flat, nested."""
    return st.dictionaries(texts(max_size=20), json_values(), max_size=6)


def aware_datetimes() -> st.SearchStrategy[datetime]:
    """Timezone-aware datetimes with offsets up to +/- 23:59, within years 2 to 9998."""
    offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
    # The bounds are naive; the offset is added after, so stay clear of years 1 and 9999.
    return st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=offsets,
    )


def _messages() -> st.SearchStrategy[tuple[str, ...]]:
    many = st.integers(1000, 3000).map(lambda n: tuple(f"message {i}" for i in range(n)))
    huge = st.integers(1, 3).map(lambda n: ("\U0001f600" * 100_000,) * n)
    return st.one_of(
        st.lists(texts(), max_size=8).map(tuple),
        st.just(()),
        st.just(("",)),
        many,
        huge,
    )


def sessions(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[StoredSession]:
    """Valid current-version sessions."""
    return st.builds(
        StoredSession,
        session_id=ids if ids is not None else session_ids(),
        messages=_messages(),
        input_tokens=token_counts(),
        output_tokens=token_counts(),
        created_at=st.none() | aware_datetimes(),
        updated_at=st.none() | aware_datetimes(),
        metadata=metadata(),
    )


def v1_documents(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Valid version-1 (seed format) documents, with and without an explicit version 1."""
    return st.fixed_dictionaries(
        {
            "session_id": ids if ids is not None else session_ids(),
            "messages": st.lists(texts(), max_size=8),
            "input_tokens": token_counts(),
            "output_tokens": token_counts(),
        },
        optional={"schema_version": st.just(1)},
    )
