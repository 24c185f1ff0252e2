"""5. Hostile ids and paths: refused with zero filesystem calls, nothing outside touched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionstore import (
    InvalidSessionIdError,
    SessionStore,
    StoredSession,
    delete_session,
    load_session,
    save_session,
    session_exists,
)
from tests.helpers import unvalidated
from tests.reliability.checks import recording
from tests.reliability.figures import record

HOSTILE_IDS: list[Any] = [
    "",
    ".",
    "..",
    "../x",
    "../../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "/tmp/x",
    "C:\\Windows\\x",
    "a\\b",
    "..\\x",
    "a/b",
    "nul\x00byte",
    "\x00",
    "x" * 129,
    "x" * 256,
    "é" * 128,  # 128 characters, 256 bytes
    "a" * 300,
    "CON",
    "con",
    "Nul",
    "COM1",
    "lpt9",
    "PRN",
    "AUX",
    "name.",
    "name ",
    "name...",
    " name",
    "-rf",
    "--help",
    "a.json",
    ".hidden",
    ".crash.json.0123456789abcdef.tmp",  # the store's own temp file name
    ".locks",  # the store's own lock folder
    "stripe-01.lock",
    ".quarantine",
    "a\nb",
    "a\tb",
    "ünïcödé",
    "emoji🚀",
    "\u202eevil",
    "a b",
    "a:b",
    "a*b",
    "a?b",
    'a"b',
    "a<b>",
    "a|b",
    "~",
    "~root",
    "$HOME",
    "%APPDATA%",
    "\ud800",
    None,
    42,
    b"bytes-id",
    Path("p"),
    ["a"],
]

FS_CALLS = (
    "open",
    "stat",
    "lstat",
    "fstat",
    "listdir",
    "scandir",
    "mkdir",
    "makedirs",
    "unlink",
    "remove",
    "rmdir",
    "replace",
    "rename",
    "access",
    "chmod",
    "readlink",
    "symlink",
    "link",
)


def _tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, content)
    return out


def _operations(folder: Path) -> list[tuple[str, Callable[[Any], object]]]:
    store = SessionStore(folder)

    def session(session_id: Any) -> StoredSession:
        # The model does not check ids (callers build the session first); the save must.
        return unvalidated(session_id=session_id, messages=("m",), input_tokens=0, output_tokens=0)

    return [
        ("save", lambda i: store.save(session(i))),
        ("create", lambda i: store.create(session(i))),
        ("load", store.load),
        ("load_with_etag", store.load_with_etag),
        ("exists", store.exists),
        ("delete", store.delete),
        ("update", lambda i: store.update(i, lambda s: s)),
        ("append_messages", lambda i: store.append_messages(i, ["m"])),
        ("save_session", lambda i: save_session(session(i), folder)),
        ("load_session", lambda i: load_session(i, folder)),
        # The original promised session_exists never raises: False, still untouched.
        ("session_exists", lambda i: _refused_as_absent(session_exists(i, folder))),
        ("delete_session", lambda i: delete_session(i, folder)),
    ]


def _refused_as_absent(exists: bool) -> None:
    assert exists is False
    raise InvalidSessionIdError("invalid session id: session_exists said False")


@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=[repr(i)[:40] for i in HOSTILE_IDS])
def test_hostile_ids_are_refused_before_any_filesystem_call(bad_id: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = root / "store"
    folder.mkdir(parents=True)
    (root / "outside.json").write_text('{"secret": true}')
    SessionStore(folder).save(
        StoredSession(session_id="keep", messages=("x",), input_tokens=1, output_tokens=1)
    )
    before = _tree(root)
    for name, operation in _operations(folder):
        with recording(*FS_CALLS) as calls, pytest.raises(InvalidSessionIdError) as caught:
            operation(bad_id)
        assert calls == [], f"{name}({bad_id!r}) touched the filesystem: {calls[:3]}"
        assert "invalid session id" in str(caught.value)
        record("hostile id operations refused", 1)
    assert _tree(root) == before, "something outside (or inside) the folder changed"


def test_the_corpus_is_refused_by_the_rules_not_by_luck() -> None:
    # Every entry of the corpus is invalid, and the valid neighbours are accepted.
    store = SessionStore("unused-folder-never-created")
    for bad_id in HOSTILE_IDS:
        with pytest.raises(InvalidSessionIdError):
            store.exists(bad_id)
    assert not Path("unused-folder-never-created").exists()
    for good in ("a", "x" * 128, "CON1", "name_", "a-b", "_x", "COM0", "LPT10"):
        assert store.exists(good) is False
