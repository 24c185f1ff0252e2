"""7. Corrupt files: only documented errors escape, and the library never replaces or
deletes a corrupt file.

Every truncation of a valid file, thousands of seeded random byte flips, a BOM,
NaN, trailing garbage, duplicate keys, nesting 10^6 deep (in a subprocess: a clean
error, never a crash) and a sparse 1 TiB file (refused without reading a byte).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from sessionstore import (
    CorruptSessionError,
    SchemaVersionError,
    SessionStore,
    SessionTooLargeError,
    StoredSession,
)
from sessionstore.codec import encode
from tests.reliability.figures import record, size

FLIPS = size("SESSIONSTORE_CORRUPT_FLIPS", 3000)

SESSION = StoredSession(
    session_id="victim",
    messages=("hello", "naïve café 東京 🚀", ""),
    input_tokens=12,
    output_tokens=2**63 - 1,
    metadata={"k": [1, 2.5, None, True, "v"]},
)


def _attempt(store: SessionStore, path: Path, data: bytes) -> StoredSession | None:
    """Write ``data`` at ``path`` and load it: a session, or None on a documented error.

    Any other exception fails the test. The file must be unchanged afterwards.
    """
    path.write_bytes(data)
    try:
        loaded: StoredSession | None = store.load("victim")
    except (CorruptSessionError, SchemaVersionError):
        loaded = None
    assert path.read_bytes() == data, "the library changed a corrupt file"
    return loaded


def test_every_truncation_is_refused_or_whole(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    path = tmp_path / "victim.json"
    full = encode(SESSION)
    for cut in range(len(full)):
        loaded = _attempt(store, path, full[:cut])
        # Only a cut that drops trailing whitespace may still load, and then whole.
        assert loaded is None or (loaded == SESSION and full[cut:].strip() == b"")
        record("corrupt files: truncations", 1)


def test_random_byte_flips_never_escape_as_undocumented_errors(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    path = tmp_path / "victim.json"
    full = encode(SESSION)
    rng = random.Random(20261125)
    loaded_changed = 0
    for _ in range(FLIPS):
        data = bytearray(full)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        loaded = _attempt(store, path, bytes(data))
        if loaded is not None:
            assert loaded.session_id == "victim"
            loaded_changed += loaded != SESSION
        record("corrupt files: random byte flips", 1)
    record("corrupt files: flips that still held a valid session", loaded_changed)


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("utf-8 BOM", b"\xef\xbb\xbf" + encode(SESSION)),
        ("utf-16 BOM", b"\xff\xfe" + encode(SESSION)),
        ("NaN", encode(SESSION).replace(b'"input_tokens": 12', b'"input_tokens": NaN')),
        ("Infinity", encode(SESSION).replace(b"2.5", b"Infinity")),
        # A complete line after a current snapshot must be an intact record.
        ("trailing garbage", encode(SESSION) + b"garbage\n"),
        ("second document", encode(SESSION) + encode(SESSION)),
        ("NUL byte", encode(SESSION) + b"\x00\n"),
        ("empty file", b""),
        ("only whitespace", b" \n\t "),
        ("a list", b"[]"),
        ("a string", b'"victim"'),
        ("null", b"null"),
        ("invalid utf-8", encode(SESSION).replace(b"hello", b"hel\xfflo")),
        ("raw lone surrogate", encode(SESSION).replace(b"hello", b"hel\xed\xa0\x80lo")),
        ("int too big", encode(SESSION).replace(b'"input_tokens": 12', b'"input_tokens": 1e400')),
        ("version as string", b'{"schema_version": "2"}'),
        ("version bool", b'{"schema_version": true}'),
        ("version 0", b'{"schema_version": 0}'),
        ("version from the future", b'{"schema_version": 4}'),
    ],
)
def test_named_corruptions_are_refused(tmp_path: Path, label: str, data: bytes) -> None:
    store = SessionStore(tmp_path)
    assert _attempt(store, tmp_path / "victim.json", data) is None, label
    record("corrupt files: named corruptions", 1)


@pytest.mark.parametrize("tail", [b"garbage", b"\x00", b'{"seq":1,"prev":"', b"\x00" * 4096])
def test_bytes_without_a_newline_after_a_snapshot_are_a_torn_tail(
    tmp_path: Path, tail: bytes
) -> None:
    # An append that never finished (no newline yet) was never acknowledged: the
    # session loads as it was, and the load changes nothing.
    assert _attempt(SessionStore(tmp_path), tmp_path / "victim.json", encode(SESSION) + tail) == (
        SESSION
    )
    record("corrupt files: torn tails after a snapshot, ignored", 1)


@pytest.mark.parametrize("key", ["session_id", "messages", "input_tokens", "schema_version"])
def test_duplicate_keys_resolve_like_json_or_are_refused(tmp_path: Path, key: str) -> None:
    # JSON leaves duplicate keys to the parser; ours keeps the last (as Python's json
    # does). The outcome must be that reading, validated, or a documented refusal.
    doc = json.loads(encode(SESSION))
    first = {"session_id": "other", "messages": ["dup"], "input_tokens": 7, "schema_version": 3}
    text = encode(SESSION).decode()
    data = text.replace("{", "{" + json.dumps(key) + ": " + json.dumps(first[key]) + ", ", 1)
    assert json.loads(data) == doc  # last wins
    loaded = _attempt(SessionStore(tmp_path), tmp_path / "victim.json", data.encode())
    assert loaded in (None, SESSION)
    record("corrupt files: duplicate keys", 1)


def test_read_modify_write_never_replaces_a_corrupt_file(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    path = tmp_path / "victim.json"
    torn = encode(SESSION)[:40]
    path.write_bytes(torn)
    with pytest.raises(CorruptSessionError):
        store.append_messages("victim", ["more"])
    with pytest.raises(CorruptSessionError):
        store.update("victim", lambda s: s)
    with pytest.raises(CorruptSessionError):
        store.load_with_etag("victim")
    assert store.exists("victim")
    assert store.list() == ["victim"]
    assert path.read_bytes() == torn
    record("corrupt files: read-modify-write refused", 1)


_DEEP_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sessionstore import CorruptSessionError, SessionStore
    folder = Path(sys.argv[1])
    for name, data in [("victim", b"[" * 10**6), ("obj", b'{"a":' * 10**6)]:
        (folder / (name + ".json")).write_bytes(data)
        try:
            SessionStore(folder).load(name)
        except CorruptSessionError as exc:
            print("refused", name, str(exc)[:120])
        else:
            print("loaded", name)
    """
)


def test_nesting_a_million_deep_is_a_clean_error_in_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _DEEP_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the interpreter crashed: {done.returncode} {done.stderr}"
    assert done.stdout.count("refused") == 2, done.stdout + done.stderr
    record("corrupt files: 10^6-deep nesting, clean error", 2)


def test_sparse_terabyte_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "victim.json"
    with path.open("wb") as handle:
        handle.truncate(2**40)
    if path.stat().st_blocks * 512 > 2**20:
        pytest.skip("this filesystem does not make sparse files")
    store = SessionStore(tmp_path)
    with mock.patch.object(os, "read", side_effect=AssertionError("read a byte")) as read:
        with pytest.raises(SessionTooLargeError, match="max_bytes"):
            store.load("victim")
        assert read.call_count == 0
    assert path.stat().st_size == 2**40  # not truncated, not deleted
    record("corrupt files: sparse 1 TiB, refused unread", 1)
