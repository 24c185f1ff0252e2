"""SessionStore and the seed-compatible functions: behaviours, errors, and what they never do."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

import sessionstore
from sessionstore import (
    CURRENT_SCHEMA_VERSION,
    CommitUnknownError,
    ConflictError,
    CorruptSessionError,
    InvalidSessionIdError,
    LockTimeoutError,
    NotARegularFileError,
    SchemaVersionError,
    SessionDeleteError,
    SessionNotFoundError,
    SessionStore,
    SessionTooLargeError,
    SessionWriteError,
    StoredSession,
    TransientDeleteError,
    delete_session,
    list_sessions,
    load_session,
    save_session,
    session_exists,
)
from sessionstore.backends.base import content_etag
from sessionstore.codec import encode
from tests.helpers import unvalidated


def make(session_id: str = "s1", *messages: str, tokens: int = 0) -> StoredSession:
    return StoredSession(
        session_id=session_id,
        messages=messages or ("hello",),
        input_tokens=tokens,
        output_tokens=tokens,
    )


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "sessions")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every session-relevant file below ``folder`` with its bytes and mtime (not lock files)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.parent.name != ".locks":
            out[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


# --- the seed's behaviours -------------------------------------------------


def test_seed_functions_round_trip_and_return_the_path(tmp_path: Path) -> None:
    session = make("abc", "x", "y", tokens=3)
    path = save_session(session, tmp_path)
    assert path == tmp_path / "abc.json"
    assert path.is_file()
    assert load_session("abc", tmp_path) == session
    assert session_exists("abc", tmp_path)


def test_seed_functions_accept_str_directories(tmp_path: Path) -> None:
    folder = str(tmp_path / "as-str")
    save_session(make("a"), folder)
    assert list_sessions(folder) == ["a"]
    assert load_session("a", folder) == make("a")
    assert delete_session("a", folder) is True


def test_seed_functions_default_to_port_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert save_session(make("d")) == Path(".port_sessions/d.json")
    assert (tmp_path / ".port_sessions" / "d.json").is_file()
    assert list_sessions() == ["d"]


def test_listing_is_sorted(store: SessionStore) -> None:
    for session_id in ["b", "C", "a", "_z", "0"]:
        store.save(make(session_id))
    assert store.list() == sorted(["b", "C", "a", "_z", "0"])


def test_listing_a_missing_folder_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    assert list_sessions(tmp_path / "nope") == []
    assert not (tmp_path / "nope").exists()


def test_listing_ignores_non_json_invalid_names_temp_and_lock_files(store: SessionStore) -> None:
    store.save(make("real"))
    folder = store.directory
    (folder / "notes.txt").write_text("x")
    (folder / "bad name.json").write_text("{}")
    (folder / "CON.json").write_text("{}")
    (folder / ".real.json.0123456789abcdef.tmp").write_text("{")
    (folder / "real.json.bak").write_text("{}")
    assert store.list() == ["real"]
    assert (folder / ".locks").is_dir()


def test_delete_returns_true_then_false(store: SessionStore) -> None:
    store.save(make("gone"))
    assert store.delete("gone") is True
    assert store.delete("gone") is False
    assert not store.exists("gone")
    with pytest.raises(SessionNotFoundError):
        store.load("gone")


def test_delete_of_a_missing_session_in_a_missing_folder_writes_nothing(tmp_path: Path) -> None:
    assert delete_session("x", tmp_path / "nope") is False
    assert not (tmp_path / "nope").exists()


def test_directory_at_session_path_makes_delete_raise_with_cause(store: SessionStore) -> None:
    store.directory.mkdir(parents=True)
    (store.directory / "d.json").mkdir()
    with pytest.raises(SessionDeleteError, match="'d'") as info:
        store.delete("d")
    assert isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.errno == info.value.__cause__.errno
    assert info.value.path == store.directory / "d.json"


# --- errors ------------------------------------------------------------------


def test_load_missing_raises_not_found_naming_the_session_and_file(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        store.load("ghost")
    message = str(info.value)
    assert message.startswith("session 'ghost' not found")
    assert str(store.directory / "ghost.json") in message
    assert info.value.session_id == "ghost"


@pytest.fixture
def fs_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every filesystem call the store could make."""
    calls: list[str] = []
    names = ["open", "lstat", "stat", "scandir", "unlink", "mkdir", "replace", "rename", "makedirs"]
    for name in names:
        original = getattr(os, name)

        def recorder(
            *args: Any, _name: str = name, _original: Any = original, **kwargs: Any
        ) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(os, name, recorder)
    return calls


@pytest.mark.parametrize(
    "bad_id", ["../escape", "", "a/b", "CON", "x" * 129, "-x", "a.b", "nul\x00"]
)
def test_invalid_ids_are_refused_before_any_filesystem_call(
    store: SessionStore, bad_id: str, fs_calls: list[str]
) -> None:
    operations: list[Callable[[], object]] = [
        lambda: store.save(replace(make(), session_id=bad_id)),
        lambda: store.load(bad_id),
        lambda: store.exists(bad_id),
        lambda: store.delete(bad_id),
        lambda: store.create(replace(make(), session_id=bad_id)),
        lambda: store.append_messages(bad_id, ["m"]),
        lambda: store.update(bad_id, lambda s: s),
        lambda: load_session(bad_id, store.directory),
        lambda: delete_session(bad_id, store.directory),
        lambda: save_session(replace(make(), session_id=bad_id), store.directory),
    ]
    for operation in operations:
        with pytest.raises(InvalidSessionIdError):
            operation()
    # The original promised session_exists never raises: no session can have the id.
    assert session_exists(bad_id, store.directory) is False
    assert fs_calls == []


def test_model_accepts_any_id_but_save_refuses_it(store: SessionStore) -> None:
    session = make("../../etc/passwd")
    with pytest.raises(InvalidSessionIdError, match="etc/passwd"):
        store.save(session)
    assert not store.directory.exists()


def test_save_refuses_what_is_not_a_stored_session(store: SessionStore) -> None:
    with pytest.raises(TypeError, match="StoredSession"):
        store.save({"session_id": "x"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"session_id": "s1", "messages": ["a"], "input', "not valid JSON"),
        (b"\x00\x01binary", "not valid JSON"),
        (
            b'{"session_id": "s1", "messages": "a", "input_tokens": 1, "output_tokens": 1}',
            "messages",
        ),
        (b'{"session_id": "s1", "messages": [], "input_tokens": 1}', "output_tokens"),
        (b'{"session_id": "s2", "messages": [], "input_tokens": 1, "output_tokens": 1}', "'s2'"),
    ],
)
def test_corrupt_files_raise_naming_session_and_file_and_stay_untouched(
    store: SessionStore, content: bytes, reason: str
) -> None:
    store.directory.mkdir(parents=True)
    path = store.directory / "s1.json"
    path.write_bytes(content)
    before = snapshot(store.directory)
    with pytest.raises(CorruptSessionError, match=reason) as info:
        store.load("s1")
    assert "'s1'" in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.path == path
    assert snapshot(store.directory) == before
    assert store.exists("s1")
    assert store.list() == ["s1"]


def test_too_new_file_is_refused_and_left_untouched(store: SessionStore) -> None:
    store.directory.mkdir(parents=True)
    (store.directory / "n.json").write_bytes(b'{"schema_version": 4, "session_id": "n"}')
    before = snapshot(store.directory)
    with pytest.raises(SchemaVersionError, match="'n'"):
        store.load("n")
    with pytest.raises(SchemaVersionError):
        store.update("n", lambda s: s)
    assert snapshot(store.directory) == before


def test_loading_an_old_version_never_writes(store: SessionStore) -> None:
    store.directory.mkdir(parents=True)
    (store.directory / "old.json").write_text(
        '{"session_id": "old", "messages": ["a"], "input_tokens": 1, "output_tokens": 2}'
    )
    before = snapshot(store.directory)
    assert store.load("old").schema_version == CURRENT_SCHEMA_VERSION
    assert snapshot(store.directory) == before
    assert sorted(p.name for p in store.directory.iterdir()) == ["old.json"]


def test_file_over_max_bytes_is_refused_without_reading(tmp_path: Path) -> None:
    SessionStore(tmp_path).save(make("big", "x" * 200))
    small = SessionStore(tmp_path, max_bytes=100)
    with pytest.raises(SessionTooLargeError, match="over the store's max_bytes of 100") as info:
        small.load("big")
    assert info.value.size == len((tmp_path / "big.json").read_bytes())
    assert info.value.max_bytes == 100
    assert SessionStore(tmp_path).load("big").messages == ("x" * 200,)


@pytest.mark.parametrize(
    "write",
    [
        lambda store: store.save(make("big", "x" * 200)),
        lambda store: store.create(make("big", "x" * 200)),
        lambda store: store.append_messages("big", ["x" * 200]),
        lambda store: store.update("big", lambda s: replace(s, messages=("x" * 200,))),
    ],
    ids=["save", "create", "append_messages", "update"],
)
def test_no_write_stores_what_its_own_load_would_refuse(
    tmp_path: Path, write: Callable[[SessionStore], object]
) -> None:
    store = SessionStore(tmp_path, max_bytes=300)
    store.save(make("big", "small"))
    before = (tmp_path / "big.json").read_bytes()
    with pytest.raises(SessionTooLargeError, match="nothing was written"):
        write(store)
    assert (tmp_path / "big.json").read_bytes() == before
    assert store.load("big").messages == ("small",)


def test_symlink_at_session_path_is_refused(store: SessionStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(
        '{"session_id": "s1", "messages": [], "input_tokens": 0, "output_tokens": 0}'
    )
    store.directory.mkdir(parents=True)
    (store.directory / "s1.json").symlink_to(outside)
    with pytest.raises(NotARegularFileError, match="symbolic link"):
        store.load("s1")


def test_fifo_at_session_path_is_refused_without_hanging(store: SessionStore) -> None:
    store.directory.mkdir(parents=True)
    os.mkfifo(store.directory / "f.json")
    with pytest.raises(NotARegularFileError, match="FIFO"):
        store.load("f")


# --- writes ----------------------------------------------------------------


def test_new_folder_is_private_and_files_are_0600(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "a" / "b")
    store.save(make())
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "s1.json").stat().st_mode) == 0o600


def test_save_replaces_the_previous_version(store: SessionStore) -> None:
    store.save(make("s", "one"))
    store.save(make("s", "two"))
    assert store.load("s").messages == ("two",)
    assert sorted(p.name for p in store.directory.iterdir()) == [".locks", "s.json"]


def test_failure_before_rename_keeps_old_file_and_leaves_no_temp(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(make("s", "old"))
    old = (store.directory / "s.json").read_bytes()

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(SessionWriteError, match="previous version is intact") as info:
        store.save(make("s", "new"))
    assert info.value.errno == errno.ENOSPC
    assert (store.directory / "s.json").read_bytes() == old
    assert sorted(p.name for p in store.directory.iterdir()) == [".locks", "s.json"]


def test_durable_save_fsyncs_file_and_folder_and_non_durable_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    SessionStore(tmp_path / "d", durable=False).save(make())
    assert synced == []
    durable = SessionStore(tmp_path / "e")
    durable.save(make())  # first save also creates (and syncs) the folders
    synced.clear()
    durable.save(make())
    assert len(synced) == 2, "one fsync of the temp file, one of the folder"


def test_save_returns_an_etag_stable_for_identical_bytes(store: SessionStore) -> None:
    first = store.save(make("s", "a"))
    again = store.save(make("s", "a"))
    other = store.save(make("s", "b"))
    assert first == again != other
    assert store.load_with_etag("s") == (make("s", "b"), other)


def test_if_match_saves_only_over_the_expected_version(store: SessionStore) -> None:
    etag = store.save(make("s", "v1"))
    newer = store.save(make("s", "v2"), if_match=etag)
    before = snapshot(store.directory)
    with pytest.raises(ConflictError, match="changed since it was read"):
        store.save(make("s", "v3"), if_match=etag)
    assert snapshot(store.directory) == before
    assert store.load_with_etag("s")[1] == newer
    with pytest.raises(ConflictError):
        store.save(make("absent"), if_match=etag)
    assert not store.exists("absent")


def test_create_refuses_an_existing_id(store: SessionStore) -> None:
    store.create(make("c", "first"))
    with pytest.raises(ConflictError, match="already exists"):
        store.create(make("c", "second"))
    assert store.load("c").messages == ("first",)


def test_update_applies_the_function_under_the_lock(store: SessionStore) -> None:
    store.save(make("u", "a", tokens=1))
    result = store.update("u", lambda s: replace(s, input_tokens=s.input_tokens + 1))
    assert result.input_tokens == 2
    assert store.load("u") == result


def test_update_refuses_a_function_that_changes_the_id(store: SessionStore) -> None:
    store.save(make("u"))
    with pytest.raises(ValueError, match="changed the session id"):
        store.update("u", lambda s: replace(s, session_id="v"))
    assert store.list() == ["u"]


def test_update_of_a_missing_session_raises_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError):
        store.update("nobody", lambda s: s)


def test_append_creates_then_appends_and_keeps_timestamps(store: SessionStore) -> None:
    created = store.append_messages("a", ["hi"], input_tokens=2, output_tokens=3)
    assert created.messages == ("hi",)
    assert created.created_at is not None
    assert created.created_at == created.updated_at
    later = store.append_messages("a", ["there", "you"], input_tokens=1)
    assert later.messages == ("hi", "there", "you")
    assert (later.input_tokens, later.output_tokens) == (3, 3)
    assert later.created_at == created.created_at
    assert later.updated_at is not None
    assert later.updated_at >= created.created_at
    assert store.load("a") == later


def test_append_refuses_a_bare_string_and_unstorable_text(store: SessionStore) -> None:
    with pytest.raises(TypeError, match="single string"):
        store.append_messages("a", "oops")
    with pytest.raises(ValueError, match="surrogate"):
        store.append_messages("a", ["bad \ud800"])
    assert not store.exists("a")


def test_memory_store_behaves_like_the_file_store() -> None:
    memory = sessionstore.MemorySessionStore()
    etag = memory.save(make("m", "x"))
    assert memory.load_with_etag("m") == (make("m", "x"), etag)
    assert memory.list() == ["m"]
    assert memory.delete("m") is True
    assert memory.delete("m") is False
    with pytest.raises(SessionNotFoundError, match="'m'"):
        memory.load("m")


# --- fast paths: the same results and errors as the plain code ------------------


def big(session_id: str = "big", count: int = 2_000) -> StoredSession:
    """A session of 2,000 messages (about 460 KB)."""
    text = "déjà vu 🚀 " + "x" * 200
    return make(session_id, *(f"{i} {text}" for i in range(count)))


def test_etag_is_stable_and_tells_different_bytes_apart() -> None:
    data = os.urandom(3 << 20)
    assert content_etag(data) == content_etag(bytes(data))
    assert len(content_etag(data)) == 32
    changed = bytearray(data)
    changed[-1] ^= 1
    assert content_etag(bytes(changed)) != content_etag(data)
    assert content_etag(b"") != content_etag(b"\x00")


def test_large_save_and_create_return_the_etag_of_the_bytes_written(store: SessionStore) -> None:
    session = big()
    assert store.create(session) == content_etag(encode(session))
    etag = store.save(replace(session, input_tokens=5), if_match=content_etag(encode(session)))
    assert store.load_with_etag("big")[1] == etag
    assert etag == content_etag(store.path_of("big").read_bytes())


def test_load_and_load_with_etag_return_the_same_session(store: SessionStore) -> None:
    store.save(big())
    assert store.load("big") == store.load_with_etag("big")[0] == big()


def test_listing_a_large_folder_matches_the_id_rules(store: SessionStore) -> None:
    store.save(make("real"))
    folder = store.directory
    names = ["a", "Z-9_", "x" * 128, "x" * 129, "-a", "con", "COM1", "COM0", "a.b", "é", "a\nb"]
    for name in names:
        (folder / f"{name}.json").write_text("{}")
    expected = sorted(["real", *(n for n in names if sessionstore.is_valid_session_id(n))])
    assert store.list() == expected == ["COM0", "Z-9_", "a", "real", "x" * 128]


def test_append_gives_what_building_the_session_by_hand_gives(store: SessionStore) -> None:
    first = store.append_messages("a", ["héllo 🚀", "plain"], input_tokens=1)
    store.save(replace(first, metadata={"k": [1, 2.5, None, "v"]}))
    later = store.append_messages("a", ["déjà", "vu"], output_tokens=4)
    by_hand = StoredSession(
        session_id="a",
        messages=("héllo 🚀", "plain", "déjà", "vu"),
        input_tokens=1,
        output_tokens=4,
        created_at=first.created_at,
        updated_at=later.updated_at,
        metadata={"k": [1, 2.5, None, "v"]},
    )
    assert later == by_hand
    assert store.load("a") == later


@pytest.mark.parametrize(
    "added",
    [["ok", "bad \ud800"], ["\udfff"], [42], [None], [b"bytes"], ["ok", ["nested"]]],
)
def test_append_refuses_what_the_model_refuses_with_the_same_error(
    store: SessionStore, added: list[Any]
) -> None:
    current = store.append_messages("a", ["hi"], input_tokens=1)
    before = snapshot(store.directory)
    with pytest.raises(ValidationError) as by_model:
        StoredSession(
            session_id="a",
            messages=current.messages + tuple(added),
            input_tokens=1,
            output_tokens=0,
            created_at=current.created_at,
            updated_at=current.updated_at,
        )
    with pytest.raises(ValidationError) as by_store:
        store.append_messages("a", added)
    assert str(by_store.value) == str(by_model.value)
    assert by_store.value.errors(include_url=False, include_context=False) == by_model.value.errors(
        include_url=False, include_context=False
    )
    assert snapshot(store.directory) == before


def test_save_validates_a_session_built_around_validation(store: SessionStore) -> None:
    # Issue 9.8: an unvalidated instance once replaced a good file with one that
    # could not be loaded.
    store.save(make("s1", "good"))
    before = store.path_of("s1").read_bytes()
    for bad in (
        unvalidated(session_id="s1", messages=("x",), input_tokens=-1, output_tokens=0),
        unvalidated(session_id="s1", messages=("\ud800",), input_tokens=0, output_tokens=0),
    ):
        for write in (store.save, store.create, lambda s: store.update("s1", lambda _: s)):
            with pytest.raises(ValidationError):
                write(bad)
    assert store.path_of("s1").read_bytes() == before


def test_save_validates_metadata_changed_after_construction(store: SessionStore) -> None:
    session = StoredSession("s1", (), 0, 0, metadata={"n": 1})
    session.metadata["n"] = float("nan")  # a frozen dataclass still holds a mutable dict
    with pytest.raises(ValidationError, match="NaN"):
        store.save(session)
    assert not store.exists("s1")


def test_a_subclass_whose_fields_would_be_lost_is_refused(store: SessionStore) -> None:
    @pydantic_dataclass(frozen=True)
    class Tagged(StoredSession):
        tag: str = "kept?"

    with pytest.raises(ValueError, match=r"\['tag'\].*would be lost"):
        store.save(Tagged("s1", (), 0, 0))
    assert not store.exists("s1")

    @pydantic_dataclass(frozen=True)
    class Plain(StoredSession):
        pass

    store.save(Plain("s2", ("m",), 0, 0))
    assert type(store.load("s2")) is StoredSession


@pytest.mark.parametrize("tokens", [-1, True, False, 1.0, "1", None, 2**63])
def test_append_refuses_token_counts_that_are_not_counts(
    store: SessionStore, tokens: object
) -> None:
    # Issue 9.22: negative values lowered the totals; True was accepted or refused
    # depending on whether the session existed.
    store.save(make("s1", "a"))
    for session_id in ("s1", "new"):
        for name in ("input_tokens", "output_tokens"):
            with pytest.raises(ValueError, match=name):
                store.append_messages(session_id, ["m"], **{name: tokens})  # type: ignore[arg-type]
    assert store.load("s1") == make("s1", "a")
    assert not store.exists("new")


# --- issue 9.13: if_match reads at most max_bytes of the current file -------------------


def test_if_match_never_reads_more_than_max_bytes_of_the_current_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 9.13: the current file was read with no limit (MemoryError on a sparse
    # 1 TiB file). Every etag the store hands out names a document of at most
    # max_bytes, so a larger file cannot match and is not read.
    store = SessionStore(tmp_path, max_bytes=1000)
    etag = store.save(make("s", "small"))
    with open(tmp_path / "s.json", "r+b") as handle:
        handle.truncate(1 << 40)  # sparse: 1 TiB of zeros, no disk used
    requested: list[int] = []
    real_read = os.read

    def bounded_read(fd: int, size: int) -> bytes:
        requested.append(size)
        assert size <= 1001, f"asked to read {size} bytes"
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", bounded_read)
    with pytest.raises(ConflictError, match="over max_bytes of 1000, so it was not read") as info:
        store.save(make("s", "new"), if_match=etag)
    assert info.value.session_id == "s"
    assert str(tmp_path / "s.json") in str(info.value)
    assert requested == []
    assert os.stat(tmp_path / "s.json").st_size == 1 << 40


def test_if_match_still_matches_a_file_of_exactly_max_bytes(tmp_path: Path) -> None:
    probe = SessionStore(tmp_path / "probe")
    size = len(encode(make("s", "x" * 50)))
    store = SessionStore(tmp_path, max_bytes=size)
    etag = store.save(make("s", "x" * 50))
    store.save(make("s", "y"), if_match=etag)
    assert store.load("s").messages == ("y",)
    assert probe.list() == []


# --- issue 9.17: every delete failure is a SessionDeleteError naming the file ------------


def _fail(monkeypatch: pytest.MonkeyPatch, name: str, code: int, when: Callable[..., bool]) -> None:
    real = getattr(os, name)

    def failing(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize(
    ("name", "code", "target", "transient"),
    [
        ("unlink", errno.EROFS, "s.json", False),  # a read-only folder
        ("unlink", errno.EACCES, "s.json", False),
        ("unlink", errno.EIO, "s.json", False),
        ("open", errno.EROFS, "s.lock", True),  # the lock file cannot be made
        ("open", errno.EMFILE, "s.lock", True),  # no descriptors left
        ("open", errno.EACCES, ".locks", True),  # an unreadable lock folder
        ("lstat", errno.EACCES, "s.json", True),  # the file cannot be looked at
    ],
)
def test_every_delete_failure_is_a_session_delete_error_naming_the_file(
    store: SessionStore,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    code: int,
    target: str,
    transient: bool,
) -> None:
    store.save(make("s"))
    _fail(monkeypatch, name, code, lambda path, *a, **k: str(path).endswith(target))
    with pytest.raises(SessionDeleteError) as info:
        delete_session("s", store.directory)
    error = info.value
    assert isinstance(error, TransientDeleteError) == transient
    assert error.errno == code
    assert error.session_id == "s"
    assert str(store.directory / "s.json") in str(error)
    assert os.strerror(code) in str(error)
    monkeypatch.undo()
    assert store.load("s") == make("s"), "a failed delete leaves the session"


def test_a_delete_that_cannot_get_the_lock_is_a_transient_delete_error(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, lock_timeout=0)
    store.save(make("s"))
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.backend.lock("s"):
            holding.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait()
    try:
        with pytest.raises(TransientDeleteError, match="'s'") as info:
            store.delete("s")
    finally:
        release.set()
        thread.join()
    assert isinstance(info.value.__cause__, LockTimeoutError)
    assert str(tmp_path / ".locks" / "s.lock") in str(info.value)
    assert store.delete("s") is True


def test_a_write_whose_flush_failed_after_the_rename_names_the_etag_it_landed_with(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(make("s1", "old"))
    new = make("s1", "new")
    real_fsync = os.fsync
    calls = []

    def folder_fsync_fails(fd: int) -> None:
        calls.append(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", folder_fsync_fails)
    with pytest.raises(CommitUnknownError, match="may not survive a crash") as unknown:
        store.save(new)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.load_with_etag("s1") == (new, unknown.value.etag)
