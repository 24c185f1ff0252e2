"""6. Symlinks and special files at ``<id>.json``, and a link planted at a temp name.

``load`` never returns foreign bytes and never hangs; ``save`` never writes through
a link into its target; a planted link at the next temp name changes nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionstore import (
    CorruptSessionError,
    NotARegularFileError,
    SessionStore,
    SessionWriteError,
    StoredSession,
)
from tests.reliability.checks import temp_files
from tests.reliability.figures import record

FOREIGN = (
    b'{"session_id": "victim", "messages": ["foreign secret"], '
    b'"input_tokens": 0, "output_tokens": 0}\n'
)


def _session(session_id: str = "victim", text: str = "ours") -> StoredSession:
    return StoredSession(session_id=session_id, messages=(text,), input_tokens=1, output_tokens=2)


def _finishes(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it has not returned within 20 s."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=20)  # a guard against a hang, not a wait for a race
    assert not thread.is_alive(), "the call hung"
    return outcome[0]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "store"
    folder.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_bytes(FOREIGN)
    return folder, outside


def test_symlink_to_a_file_outside_is_not_followed(layout: tuple[Path, Path]) -> None:
    folder, outside = layout
    (folder / "victim.json").symlink_to(outside)
    store = SessionStore(folder)
    with pytest.raises(NotARegularFileError, match="symbolic link"):
        store.load("victim")
    assert store.exists("victim")
    store.save(_session())  # replaces the link itself, never writes into its target
    assert outside.read_bytes() == FOREIGN
    assert not (folder / "victim.json").is_symlink()
    assert store.load("victim") == _session()
    record("special files handled", 1)


def test_symlink_to_a_folder_outside_is_not_followed(layout: tuple[Path, Path]) -> None:
    folder, outside = layout
    (folder / "victim.json").symlink_to(outside.parent)
    with pytest.raises(NotARegularFileError):
        SessionStore(folder).load("victim")
    record("special files handled", 1)


def test_fifo_never_hangs_a_load(layout: tuple[Path, Path]) -> None:
    folder, _ = layout
    os.mkfifo(folder / "victim.json")
    store = SessionStore(folder)
    error = _finishes(lambda: store.load("victim"))
    assert isinstance(error, NotARegularFileError)
    assert "FIFO" in str(error)
    # A save replaces the FIFO with a regular file (no open of the FIFO, no hang).
    assert _finishes(lambda: store.save(_session())) is None
    assert store.load("victim") == _session()
    record("special files handled", 1)


def test_directory_at_the_file_name(layout: tuple[Path, Path]) -> None:
    folder, _ = layout
    (folder / "victim.json").mkdir()
    (folder / "victim.json" / "inner").write_text("keep me")
    store = SessionStore(folder)
    with pytest.raises(NotARegularFileError, match="directory"):
        store.load("victim")
    with pytest.raises(SessionWriteError):
        store.save(_session())
    assert (folder / "victim.json" / "inner").read_text() == "keep me"
    assert temp_files(folder) == []
    assert store.list() == ["victim"]  # listed: it exists, and is reported when loaded
    record("special files handled", 1)


def test_hard_link_is_replaced_not_written_through(layout: tuple[Path, Path]) -> None:
    folder, outside = layout
    os.link(outside, folder / "victim.json")
    store = SessionStore(folder)
    store.save(_session())
    assert outside.read_bytes() == FOREIGN  # the other name still has its own bytes
    assert (folder / "victim.json").stat().st_nlink == 1
    assert store.load("victim") == _session()
    record("special files handled", 1)


def test_hard_link_to_another_sessions_file_is_refused(layout: tuple[Path, Path]) -> None:
    folder, outside = layout
    os.link(outside, folder / "intruder.json")  # the document says "victim"
    with pytest.raises(CorruptSessionError, match="victim"):
        SessionStore(folder).load("intruder")
    record("special files handled", 1)


def test_symlink_planted_at_the_temp_name_changes_nothing(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, outside = layout
    store = SessionStore(folder)
    store.save(_session(text="first"))
    # Make the next temp name predictable and plant a link there first.
    tokens = iter(["0" * 16, "1" * 16])
    monkeypatch.setattr("sessionstore.atomic.secrets.token_hex", lambda n: next(tokens))
    planted = folder / f".victim.json.{'0' * 16}.tmp"
    planted.symlink_to(outside)
    store.save(_session(text="second"))
    assert outside.read_bytes() == FOREIGN
    assert planted.is_symlink()
    assert os.readlink(planted) == str(outside)
    assert store.load("victim") == _session(text="second")
    assert store.list() == ["victim"]
    record("special files handled", 1)
