"""The record format's checks: the fast all-at-once check of a log agrees with the exact
walk, record by record, on every log (intact or not)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from xxhash import xxh3_128_hexdigest

from sessionstore.records import (
    Chain,
    KeyResult,
    RecordError,
    _read_chain_exact,
    _read_chain_fast,
    encode_record,
)

SNAPSHOT_ETAG = "0123456789abcdef0123456789abcdef"

# Text that looks like the markers the fast check finds fields by, inside messages and keys.
TRICKY = st.sampled_from(
    ['],"message_count":', ',"messages":[', ',"prev":"', ',"hash":"', '"}', "\\", '"', "\n", "]"]
)
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=20)), max_size=4).map("".join)
KEYS = st.one_of(st.none(), TEXT.filter(lambda key: 0 < len(key) <= 256))


@st.composite
def logs(draw: st.DrawFn) -> tuple[bytes, int]:
    """The bytes of a chain of records after a snapshot of ``count`` messages."""
    count = draw(st.integers(0, 2**53 - 1000))
    prev, lines = SNAPSHOT_ETAG, []
    total = count
    for seq in range(1, draw(st.integers(0, 8)) + 1):
        messages = tuple(draw(st.lists(TEXT, max_size=3)))
        total += len(messages)
        line, prev = encode_record(
            seq=seq,
            prev=prev,
            key=draw(KEYS),
            messages=messages,
            message_count=total,
            input_tokens=draw(st.integers(0, 2**53 - 1)),
            output_tokens=draw(st.integers(0, 2**53 - 1)),
            updated_at="2026-11-25T18:00:00+00:00",
        )
        lines.append(line)
    return b"".join(lines), count


def _exact(records: bytes, count: int) -> Chain | str:
    """The record-by-record walk's result, or the reason it refuses the log."""
    try:
        return _read_chain_exact(records, SNAPSHOT_ETAG, count, {})
    except RecordError as exc:
        return exc.reason


@given(logs())
def test_the_fast_check_of_an_intact_log_gives_what_the_exact_walk_gives(
    log: tuple[bytes, int],
) -> None:
    records, count = log
    fast = _read_chain_fast(records, SNAPSHOT_ETAG, count, {})
    assert fast is not None
    assert fast == _exact(records, count)


@given(logs(), st.data())
def test_the_fast_check_never_accepts_a_damaged_log_the_exact_walk_refuses(
    log: tuple[bytes, int], data: st.DataObject
) -> None:
    records, count = log
    if not records:
        return
    damaged = bytearray(records)
    at = data.draw(st.integers(0, len(records) - 1))
    damaged[at] ^= data.draw(st.sampled_from([0x01, 0x02, 0x20, 0x40, 0x80]))
    # What a load hands over: the complete lines (a damaged last newline makes a torn tail).
    complete = bytes(damaged[: damaged.rfind(b"\n") + 1])
    exact = _exact(complete, count)
    fast = _read_chain_fast(complete, SNAPSHOT_ETAG, count, {})
    if isinstance(exact, str):
        assert fast is None, f"the exact walk refuses ({exact}), the fast check accepted"
    else:
        assert fast in (None, exact)


def test_keys_of_the_fast_check_are_remembered_in_order() -> None:
    prev, lines = SNAPSHOT_ETAG, []
    for seq, key in enumerate(["a", None, "b", "a"], start=1):
        line, prev = encode_record(
            seq=seq,
            prev=prev,
            key=key,
            messages=(f"m{seq}",),
            message_count=seq,
            input_tokens=seq,
            output_tokens=0,
            updated_at="2026-11-25T18:00:00+00:00",
        )
        lines.append(line)
    chain = _read_chain_fast(b"".join(lines), SNAPSHOT_ETAG, 0, {"z": KeyResult("f" * 32, 0, 0, 0)})
    assert chain is not None
    assert list(chain.keys) == ["z", "b", "a"]
    assert chain.keys["a"].message_count == 4
    assert chain.messages == ["m1", "m2", "m3", "m4"]


def _forged(body: bytes) -> tuple[bytes, str]:
    """A line with a hash that matches ``body`` (XXH3 is a checksum, not a signature)."""
    digest = xxh3_128_hexdigest(body)
    return body[:-1] + b',"hash":"' + digest.encode() + b'"}\n', digest


@pytest.mark.parametrize(
    "body",
    [
        b'{"seq":2,"prev":"%s","messages":["x"],"message_count":2,"input_tokens":0,'
        b'"output_tokens":0,"updated_at":"2026-11-25T18:00:00+00:00"}',
        b'{"seq":2,"prev":"%s","key":"k","messages":["x"],"message_count":2,"input_tokens":0,'
        b'"output_tokens":0,"updated_at":"2026-11-25T18:00:00+00:00",}',
    ],
    ids=["no key field", "not JSON"],
)
def test_a_record_with_a_matching_hash_but_a_bad_body_is_refused_by_name(body: bytes) -> None:
    first, prev = encode_record(
        seq=1,
        prev=SNAPSHOT_ETAG,
        key=None,
        messages=("a",),
        message_count=1,
        input_tokens=0,
        output_tokens=0,
        updated_at="2026-11-25T18:00:00+00:00",
    )
    middle, prev = _forged(body % prev.encode())
    last, _ = encode_record(
        seq=3,
        prev=prev,
        key=None,
        messages=("c",),
        message_count=3,
        input_tokens=0,
        output_tokens=0,
        updated_at="2026-11-25T18:00:00+00:00",
    )
    records = first + middle + last
    assert _read_chain_fast(records, SNAPSHOT_ETAG, 0, {}) is None
    assert isinstance(_exact(records, 0), str)  # a RecordError, never a KeyError
