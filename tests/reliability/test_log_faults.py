"""14. Fault injection into the append log: every ``os`` call of an append, of an append
that folds, and of ``compact`` fails in turn (the loop of ``test_faults.py``).

For each call of the recorded sequence, each errno (ENOSPC, EIO, EROFS, EACCES,
EMFILE) and each mode (once, or that call and every later call of the function):

- An append that raises ``SessionWriteError`` or ``SessionReadError`` added nothing:
  the file is byte-identical. ``CommitUnknownError`` (the flush failed): the session
  is the old one or holds the append once. An append that returns has stored it.
- A failing fdatasync of the record is never taken for success: the append raises,
  the fdatasync is not called again on that descriptor, and the retry with the same
  key reaches a successful flush of the file before it reports the append stored.
- A fold that fails leaves the session, its etag and its keys as they were; after
  the rename (the folder's fsync) it is reported, never hidden; inside an append, a
  failing fold never fails the acknowledged append.
- Only a failing ``close`` of a descriptor nothing was written through, or of the
  record's after its flush, or a call after the last flush (releasing the lock) may
  leave an append or fold successful; it must then have landed.
- Only ``SessionStoreError`` escapes, never a bare ``OSError``.
- After every fault: no temp file, no descriptor leaked, and the retry with the same
  key leaves the append in the session exactly once.

Short writes of the record (a full disk) and of the fold are tested on their own.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from sessionstore import (
    CommitUnknownError,
    SessionReadError,
    SessionStore,
    SessionStoreError,
    SessionWriteError,
)
from tests.reliability.checks import recording, temp_files
from tests.reliability.figures import record
from tests.reliability.logchecks import message, progress
from tests.reliability.test_faults import ERRNOS, Fault, injected

LOG_CALLS = (
    "open",
    "pread",
    "read",
    "write",
    "fstat",
    "stat",
    "lstat",
    "ftruncate",
    "fdatasync",
    "fsync",
    "close",
    "replace",
    "rename",
    "mkdir",
    "lseek",
)
BIG = 17_000
"""A message this long takes the records past the fold threshold (16 KiB, or a tenth of
the snapshot) at once."""


def _open_fds() -> set[str]:
    # Without test_faults' gc.collect() (0.1 s here, twice per case): a descriptor an
    # earlier test dropped can only disappear during this one, never look like a leak.
    return set(os.listdir("/proc/self/fd"))


def _prepare(folder: Path) -> SessionStore:
    """A session with three keyed records."""
    store = SessionStore(folder)
    for number in range(3):
        store.append("s", [message("a", number, 10)], input_tokens=1, key=f"k{number}")
    return store


def _append(store: SessionStore, scenario: str) -> Any:
    payload = BIG if scenario == "append+fold" else 10
    return store.append("s", [message("a", 3, payload)], input_tokens=1, key="k3")


def _sequence(scenario: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        store = _prepare(Path(tmp))
        with recording(*LOG_CALLS) as calls:
            if scenario == "compact":
                store.compact("s")
            else:
                _append(store, scenario)
        return [call.name for call in calls]


SCENARIOS = ("append", "append+fold", "compact")
SEQUENCES = {scenario: _sequence(scenario) for scenario in SCENARIOS}
CASES = [
    (scenario, index, name)
    for scenario in SCENARIOS
    for index, name in enumerate(SEQUENCES[scenario])
]


def test_the_recorded_sequences_have_the_calls_we_inject_into() -> None:
    append, folding, compact = (SEQUENCES[s] for s in SCENARIOS)
    assert {"pread", "write", "fdatasync"} <= set(append), "a tail read, one write, one flush"
    assert "replace" not in append, "a flat append, no rewrite"
    assert "read" not in append, "a flat append reads the tail only"
    assert {"fdatasync", "replace"} <= set(folding), "the record, then the fold"
    assert folding.index("fdatasync") < folding.index("replace")
    assert compact.count("fsync") == 2, "file and folder flushed"
    assert "replace" in compact


def _failed_flushes_retried(log: list[tuple[str, tuple[Any, ...], bool]]) -> list[str]:
    problems = []
    for position, (name, args, failed) in enumerate(log):
        if name in ("fsync", "fdatasync") and failed:
            for later, later_args, _ in log[position + 1 :]:
                if later == "close" and later_args == args:
                    break
                if later in ("fsync", "fdatasync") and later_args == args:
                    problems.append(f"a failed {name} was called again on the same descriptor")
    return problems


def _only_closes_or_after(log: list[tuple[str, tuple[Any, ...], bool]], flush: int) -> bool:
    """Whether every failed call is a ``close`` (of a descriptor read from, or of one
    already flushed: Linux frees it anyway) or came after the last flush."""
    return all(name == "close" or i > flush for i, (name, _, failed) in enumerate(log) if failed)


def _check_append_fault(tmp_path: Path, scenario: str, fault: Fault, record_name: str) -> None:
    store = _prepare(tmp_path)
    path = tmp_path / "s.json"
    old_bytes = path.read_bytes()
    fds = _open_fds()
    caught: SessionStoreError | None = None
    with injected(fault, LOG_CALLS) as log:
        try:
            _append(store, scenario)
        except SessionStoreError as exc:
            caught = exc
    assert [n for n, _, failed in log if failed], "the fault was never hit"
    assert not _open_fds() - fds, "a file descriptor leaked"
    assert temp_files(tmp_path) == []
    assert _failed_flushes_retried(log) == []
    held = progress(store.load("s")).get("a", 0)
    record_flush = next((i for i, (n, _, _) in enumerate(log) if n == "fdatasync"), len(log))
    flush_failed = record_flush < len(log) and log[record_flush][2]
    if isinstance(caught, CommitUnknownError):
        assert held in (3, 4)
        assert caught.errno == fault.code
        outcome = "flush failed: reported as unknown"
    elif caught is not None:
        assert isinstance(caught, SessionWriteError | SessionReadError), repr(caught)
        assert caught.errno == fault.code, repr(caught)
        assert path.read_bytes() == old_bytes, "a failed append changed the file"
        outcome = "nothing appended, file intact"
    else:
        assert not flush_failed, "a failing fdatasync of the record was taken for success"
        assert _only_closes_or_after(log, record_flush), f"a failing {fault.name} went unseen"
        assert held == 4
        outcome = "append stored (the fault hit a close, or came after the flush)"
    record(f"log fault injections: {record_name}, {outcome}", 1)

    # The retry with the same key: the append is in the session once, and it is only
    # reported stored after a flush of the file that succeeded.
    with recording("fdatasync", "fsync") as flushes:
        retry = _append(store, scenario)
    if flush_failed:
        assert flushes, "the retry after a failed flush reported success without a flush"
    assert progress(store.load("s")) == {"a": 4}
    assert retry.message_count == 4
    assert store.append("s", [message("a", 4, 10)], key="k4").message_count == 5


def _check_compact_fault(tmp_path: Path, fault: Fault) -> None:
    store = _prepare(tmp_path)
    path = tmp_path / "s.json"
    old_bytes = path.read_bytes()
    session, etag = store.load_with_etag("s")
    fds = _open_fds()
    caught: SessionStoreError | None = None
    with injected(fault, LOG_CALLS) as log:
        try:
            store.compact("s")
        except SessionStoreError as exc:
            caught = exc
    assert [n for n, _, failed in log if failed], "the fault was never hit"
    assert not _open_fds() - fds, "a file descriptor leaked"
    assert temp_files(tmp_path) == []
    assert _failed_flushes_retried(log) == []
    assert store.load_with_etag("s") == (session, etag), "a fold changed the session or etag"
    renamed = any(n in ("replace", "rename") and not failed for n, _, failed in log)
    if caught is None:
        last_flush = max(i for i, (n, _, _) in enumerate(log) if n == "fsync")
        assert _only_closes_or_after(log, last_flush), f"a failing {fault.name} went unseen"
        outcome = "fold done (the fault hit a close, or came after the flush)"
    elif renamed:
        assert isinstance(caught, CommitUnknownError)
        assert "may not survive a crash" in str(caught)
        outcome = "after the rename: reported"
    else:
        assert isinstance(caught, SessionWriteError | SessionReadError), repr(caught)
        assert caught.errno == fault.code
        assert path.read_bytes() == old_bytes
        outcome = "before the rename: file intact"
    record(f"log fault injections: compact, {outcome}", 1)
    assert store.compact("s") == etag
    assert store.append("s", [message("a", 1, 10)], key="k1").replayed, "a key was lost"


@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
@pytest.mark.parametrize("code", ERRNOS, ids=[errno.errorcode[c] for c in ERRNOS])
@pytest.mark.parametrize(
    ("scenario", "index", "name"), CASES, ids=[f"{s}-{i}-{n}" for s, i, n in CASES]
)
def test_a_failing_call_of_an_append_or_fold_never_loses_duplicates_or_hides(
    tmp_path: Path, scenario: str, index: int, name: str, code: int, persistent: bool
) -> None:
    fault = Fault(index, name, code, persistent)
    record("log fault injections", 1)
    if scenario == "compact":
        _check_compact_fault(tmp_path, fault)
    else:
        _check_append_fault(tmp_path, scenario, fault, scenario)


def _short_writes_of_records(limit: int | None) -> Any:
    """``os.write`` writes only half of a record line (a disk that fills up mid-write),
    or at most ``limit`` bytes of anything else."""
    real = os.write

    def write(fd: int, data: Any) -> int:
        data = bytes(data)
        if data.startswith(b'{"seq":'):
            return real(fd, data[: len(data) // 2])
        return real(fd, data[:limit] if limit else data)

    return mock.patch.object(os, "write", write)


def test_a_short_write_of_the_record_is_cut_back_and_reported(tmp_path: Path) -> None:
    store = _prepare(tmp_path)
    path = tmp_path / "s.json"
    old_bytes = path.read_bytes()
    with _short_writes_of_records(None), pytest.raises(SessionWriteError) as caught:
        store.append("s", [message("a", 3, 10)], key="k3")
    assert caught.value.errno == errno.ENOSPC
    assert not isinstance(caught.value, CommitUnknownError)
    assert path.read_bytes() == old_bytes, "the partial record was not taken back"
    assert not store.append("s", [message("a", 3, 10)], key="k3").replayed
    assert progress(store.load("s")) == {"a": 4}
    record("log short writes: record cut back, reported", 1)


def test_a_short_write_that_cannot_be_cut_back_is_a_torn_tail_the_next_append_cuts(
    tmp_path: Path,
) -> None:
    store = _prepare(tmp_path)
    path = tmp_path / "s.json"
    old_bytes = path.read_bytes()

    def ftruncate_fails(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "injected EIO")

    with (
        _short_writes_of_records(None),
        mock.patch.object(os, "ftruncate", ftruncate_fails),
        pytest.raises(SessionWriteError),
    ):
        store.append("s", [message("a", 3, 10)], key="k3")
    torn = path.read_bytes()
    assert torn.startswith(old_bytes)
    assert len(torn) > len(old_bytes), "a torn tail was left"
    assert progress(store.load("s")) == {"a": 3}, "the torn tail must be ignored"
    assert not store.append("s", [message("a", 3, 10)], key="k3").replayed
    assert progress(store.load("s")) == {"a": 4}
    assert path.read_bytes().endswith(b"\n"), "the next append cut the torn tail"
    record("log short writes: torn tail ignored, then cut", 1)


def test_a_fold_completes_short_writes(tmp_path: Path) -> None:
    store = _prepare(tmp_path)
    session, etag = store.load_with_etag("s")
    with _short_writes_of_records(7):
        assert store.compact("s") == etag
    assert b'{"seq":' not in (tmp_path / "s.json").read_bytes()
    assert store.load_with_etag("s") == (session, etag)
    record("log short writes: fold written 7 bytes at a time", 1)
