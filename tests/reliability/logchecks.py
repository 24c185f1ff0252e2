"""Checks of the append log (``SessionStore.append`` and folds), shared by the log tests
and the log's broken-variant table.

Messages are self-describing: ``"<tag> <n> xxx..."``, where ``tag`` names a writer and
``n`` counts that writer's appends from 0. So any loaded session can be checked on its
own: each writer's messages must be ``0, 1, 2, ...`` (none lost, none twice, in order),
and a later load must hold at least as many of each writer's messages as an earlier one.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionstore import (
    CorruptSessionError,
    SessionStore,
    SessionStoreError,
    StoredSession,
)
from sessionstore.backends.filesystem import FileSystemBackend
from tests.reliability.checks import _in_thread, temp_files

PAYLOAD = 4000
"""Bytes of filler per message: with it, records pass the 16 KiB fold threshold every
four appends (while the snapshot is under 160 KB), so kills land in folds as well as
in appends."""


def message(tag: str, number: int, payload: int = PAYLOAD) -> str:
    return f"{tag} {number} " + "x" * payload


def progress(session: StoredSession) -> dict[str, int]:
    """How many messages of each writer the session holds; raises ``ValueError`` unless
    each writer's messages are exactly its first ones, in order, each once."""
    counts: dict[str, int] = {}
    for text in session.messages:
        tag, number, _ = text.split(" ", 2)
        expected = counts.get(tag, 0)
        if int(number) != expected:
            msg = f"writer {tag}: message {number} where {expected} was due"
            raise ValueError(msg)
        counts[tag] = expected + 1
    return counts


# --- readers ------------------------------------------------------------------------


def _reader(
    folder: str,
    done: Any,
    out: multiprocessing.Queue[tuple[int, list[str]]],
) -> None:
    """Load every session in a loop until ``done``: never an error, never fewer of any
    writer's messages than an earlier load of the same session held."""
    store = SessionStore(folder)
    seen: dict[str, dict[str, int]] = {}
    loads, problems = 0, list[str]()
    while not problems:
        finished = done.is_set()  # read before the pass: one full pass after the end
        for session_id in store.list():
            try:
                counts = progress(store.load(session_id))
            except (SessionStoreError, ValueError) as exc:
                problems.append(f"{session_id}: {type(exc).__name__}: {exc}")
                break
            loads += 1
            before = seen.get(session_id, {})
            older = {tag: n for tag, n in before.items() if counts.get(tag, 0) < n}
            if older:
                problems.append(f"{session_id}: {counts} after {before}")
            seen[session_id] = counts
        if finished:
            break
    out.put((loads, problems))


@dataclass
class Readers:
    """Reader processes running while the caller writes; ``stop`` returns their result."""

    folder: Path
    count: int = 2
    _done: Any = None
    _out: Any = None
    _procs: list[Any] = field(default_factory=list)

    def start(self) -> Readers:
        context = multiprocessing.get_context("fork")
        self._done, self._out = context.Event(), context.Queue()
        self._procs = [
            context.Process(target=_reader, args=(str(self.folder), self._done, self._out))
            for _ in range(self.count)
        ]
        for proc in self._procs:
            proc.start()
        return self

    def stop(self) -> tuple[int, list[str]]:
        self._done.set()
        results = [self._out.get(timeout=300) for _ in self._procs]
        for proc in self._procs:
            proc.join()
        problems = [p for _, found in results for p in found]
        problems += [f"reader exited with {p.exitcode}" for p in self._procs if p.exitcode]
        return sum(loads for loads, _ in results), problems


# --- SIGKILL during appends and folds ----------------------------------------------


def _child_appends(store: SessionStore, session_id: str, first: int, ack: int) -> None:
    number = first
    while True:
        store.append(
            session_id,
            [message("a", number)],
            input_tokens=number,
            output_tokens=1,
            key=f"a{number}",
        )
        # Acknowledge only after append returned: from here on it must survive.
        os.write(ack, b"%d\n" % number)
        number += 1


@dataclass
class LogCrashResult:
    """What a run of kills saw."""

    kills: int = 0
    acked: int = 0
    unacked_landed: int = 0
    fold_temps: int = 0
    folds: int = 0
    violations: list[str] = field(default_factory=list)


def _read_acks(pid: int, read_end: int, wanted: int, delay: float) -> list[int]:
    acks: list[int] = []
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while len(acks) < wanted:
            chunk = pipe.read(64)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            acks.extend(int(line) for line in lines)
        # The kill lands a random time after the last wanted ack (the experiment's
        # random input, not a race dodge): in the next append, its fold, or between.
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pending += pipe.read()
    return acks + [int(line) for line in pending.split(b"\n") if line]


def log_crash_violations(
    folder: Path, kills: int, seed: int, *, per_session: int = 40
) -> LogCrashResult:
    """SIGKILL a child appending keyed, self-describing messages, ``kills`` times.

    After each kill the session must hold messages ``0..n`` exactly once and in order,
    with ``n`` at least the last acknowledged append, and token totals that match. The
    next child starts again at the first unacknowledged append with the same key (a
    retry after an ambiguous failure), so an append that landed unacknowledged must be
    replayed, never added twice. A new session every ``per_session`` kills keeps the
    files small; records pass the fold threshold every few appends.
    """
    rng = random.Random(seed)
    store = SessionStore(folder)
    result = LogCrashResult()
    last_acked = -1
    for kill in range(kills):
        session_id = f"log-{kill // per_session}"
        if kill % per_session == 0:
            last_acked = -1
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            try:
                os.close(read_end)
                _child_appends(store, session_id, last_acked + 1, write_end)
            finally:
                os._exit(0)
        os.close(write_end)
        acks = _read_acks(pid, read_end, rng.randint(1, 3), rng.uniform(0, 0.003))
        result.kills += 1
        result.acked += len(acks)
        if acks:
            last_acked = acks[-1]
        try:
            session = store.load(session_id)
        except SessionStoreError as exc:
            if last_acked >= 0 or folder.joinpath(f"{session_id}.json").exists():
                result.violations.append(f"after kill {kill + 1}: {exc}")
                break
            continue
        try:
            held = progress(session).get("a", 0)
        except ValueError as exc:
            result.violations.append(f"after kill {kill + 1}: {exc}")
            break
        if held - 1 < last_acked:
            result.violations.append(
                f"after kill {kill + 1}: {held} messages, append {last_acked} was acknowledged"
            )
            break
        if held - 1 > last_acked + 1:
            result.violations.append(f"after kill {kill + 1}: {held} messages, {last_acked} acked")
            break
        if (session.input_tokens, session.output_tokens) != (held * (held - 1) // 2, held):
            result.violations.append(f"after kill {kill + 1}: token totals of {held} messages")
            break
        result.unacked_landed += held - 1 - last_acked
        result.fold_temps += len(temp_files(folder))
        for name in temp_files(folder):  # what `sessionstore doctor --fix` would remove
            (folder / name).unlink()
    result.folds = sum(
        1 for path in folder.glob("log-*.json") if b'\n  "store": ' in path.read_bytes()
    )
    return result


# --- several writers, with kills and keyed retries ---------------------------------


def _writer(folder: str, writer: int, first: int, count: int, ack: int) -> None:
    store = SessionStore(folder)
    for number in range(first, count):
        text = [message(f"w{writer}", number)]
        key = f"w{writer}-{number}"
        shared = store.append("shared", text, input_tokens=writer + 1, output_tokens=1, key=key)
        own = store.append(f"own-{writer}", text, input_tokens=1, output_tokens=1, key=key)
        os.write(ack, b"%d %d\n" % (number, shared.replayed + own.replayed))


@dataclass
class WritersResult:
    kills: int = 0
    acked: int = 0
    replayed: int = 0
    violations: list[str] = field(default_factory=list)


def writers_violations(
    folder: Path, writers: int, count: int, kills: int, seed: int
) -> WritersResult:
    """``writers`` processes each append ``count`` keyed messages to one shared session and
    to a session of their own; ``kills`` times, one of them is SIGKILLed at a random
    moment and restarted at its first unacknowledged append, with the same keys.

    At the end the shared session holds every writer's messages exactly once, each
    writer's in its order, and each own session the same; token totals exact."""
    rng = random.Random(seed)
    result = WritersResult()
    acked = [-1] * writers
    running: dict[int, tuple[int, Any]] = {}  # writer -> (pid, pipe)
    pending = [b""] * writers

    def start(writer: int) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child exits
            code = 0
            try:
                os.close(read_end)
                _writer(str(folder), writer, acked[writer] + 1, count, write_end)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(write_end)
        running[writer] = (pid, os.fdopen(read_end, "rb", buffering=0))

    def take(writer: int, data: bytes) -> None:
        pending[writer] += data
        *lines, pending[writer] = pending[writer].split(b"\n")
        for line in lines:
            number, replays = map(int, line.split())
            if number != acked[writer] + 1:
                result.violations.append(f"writer {writer} acked {number} after {acked[writer]}")
            acked[writer] = number
            result.acked += 1
            result.replayed += replays

    def finish(writer: int, *, kill: bool) -> None:
        pid, pipe = running.pop(writer)
        if kill:
            os.kill(pid, signal.SIGKILL)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        take(writer, pipe.read())
        pipe.close()
        pending[writer] = b""
        if not kill and status != 0:
            result.violations.append(f"writer {writer} exited with {status}")

    total = writers * count
    spacing = max(1, total // (kills + 1))
    for writer in range(writers):
        start(writer)
    while running:
        pipes = {pipe.fileno(): writer for writer, (_, pipe) in running.items()}
        ready, _, _ = select.select(list(pipes), [], [])
        for fd in ready:
            writer = pipes[fd]
            data = running[writer][1].read(4096)
            if data:
                take(writer, data)
            else:
                finish(writer, kill=False)
        if result.kills < kills and result.acked >= spacing * (result.kills + 1) and running:
            victim = rng.choice(sorted(running))
            time.sleep(rng.uniform(0, 0.003))  # the kill's moment: the experiment's input
            finish(victim, kill=True)
            result.kills += 1
            start(victim)
    result.violations += _final_state_problems(folder, writers, count)
    return result


def _final_state_problems(folder: Path, writers: int, count: int) -> list[str]:
    store = SessionStore(folder)
    problems = []
    try:
        shared = store.load("shared")
        owns = [store.load(f"own-{w}") for w in range(writers)]
    except SessionStoreError as exc:
        return [str(exc)]
    everyone = {f"w{w}": count for w in range(writers)}
    try:
        if progress(shared) != everyone:
            problems.append(f"shared session holds {progress(shared)}, expected {everyone}")
        for w, own in enumerate(owns):
            if progress(own) != {f"w{w}": count}:
                problems.append(f"own-{w} holds {progress(own)}")
    except ValueError as exc:
        problems.append(str(exc))
    expected_in = sum(w + 1 for w in range(writers)) * count
    if (shared.input_tokens, shared.output_tokens) != (expected_in, writers * count):
        problems.append(f"shared token totals {shared.input_tokens}/{shared.output_tokens}")
    problems += [
        f"own-{w} token totals {own.input_tokens}/{own.output_tokens}"
        for w, own in enumerate(owns)
        if (own.input_tokens, own.output_tokens) != (count, count)
    ]
    return problems


# --- deterministic checks of the log (the broken-variant table) -------------------


def _session_with_records(folder: Path, records: int = 3) -> SessionStore:
    store = SessionStore(folder)
    for number in range(records):
        store.append("s", [message("a", number, 10)], input_tokens=1, key=f"k{number}")
    return store


def keyed_retry_violations(folder: Path) -> list[str]:
    """An append retried with its key (after a lost reply) adds nothing and returns the
    first append's result; so does a retry of an older key after later appends."""
    store = _session_with_records(folder)
    first = store.append("s", [message("a", 3, 10)], key="k3")
    again = store.append("s", [message("a", 3, 10)], key="k3")
    older = store.append("s", [message("a", 1, 10)], key="k1")
    problems = []
    if not again.replayed or again.etag != first.etag:
        problems.append(f"the retry of k3 was not replayed: {again}")
    if not older.replayed:
        problems.append("the retry of k1 was not replayed")
    try:
        held = progress(store.load("s"))
    except ValueError as exc:
        return [*problems, str(exc)]
    if held != {"a": 4}:
        problems.append(f"the session holds {held}")
    return problems


def torn_tail_violations(folder: Path) -> list[str]:
    """A torn record left by a crash (bytes without a newline) is ignored by ``load``
    and cut by the next append, whose record then loads."""
    store = _session_with_records(folder)
    path = folder / "s.json"
    intact = path.read_bytes()
    problems = []
    for torn in (b'{"seq":4,"prev":"', b"\0" * 40, intact[-50:-1]):
        path.write_bytes(intact + torn)
        try:
            if progress(store.load("s")) != {"a": 3}:
                problems.append("a torn tail changed the loaded session")
            store.append("s", [message("a", 3, 10)], key="k3")
            if progress(store.load("s")) != {"a": 4}:
                problems.append("the append after a torn tail is not in the session")
        except (SessionStoreError, ValueError) as exc:
            problems.append(f"after a torn tail {torn[:20]!r}: {type(exc).__name__}: {exc}")
        path.write_bytes(intact)
    return problems


def damaged_record_violations(folder: Path) -> list[str]:
    """A damaged, dropped, duplicated or reordered middle record is never dropped
    silently: ``load`` raises ``CorruptSessionError``."""
    store = _session_with_records(folder, records=4)  # a snapshot, then 3 records
    path = folder / "s.json"
    data = path.read_bytes()
    snapshot_end = data.index(b"\n}\n") + 3
    head = data[:snapshot_end]
    one, two, three = data[snapshot_end:].splitlines(keepends=True)
    flipped = bytearray(two)
    flipped[two.index(b"a 2") + 2] ^= 0x01
    damages = {
        "a bit flip in the middle record": head + one + bytes(flipped) + three,
        "the middle record dropped": head + one + three,
        "the middle record twice": head + one + two + two + three,
        "the last two records swapped": head + one + three + two,
        "a garbage line in the middle": head + one + b"garbage\n" + two + three,
    }
    problems = []
    for name, damaged in damages.items():
        path.write_bytes(damaged)
        try:
            session = store.load("s")
        except CorruptSessionError:
            continue
        except SessionStoreError as exc:
            problems.append(f"{name}: {type(exc).__name__} instead of CorruptSessionError")
            continue
        problems.append(f"{name}: loaded {len(session.messages)} messages, no error")
    return problems


def fold_keeps_violations(folder: Path) -> list[str]:
    """A fold does not change the session, its etag or its remembered keys: an etag
    read before the fold still matches after it, and a key appended before the fold
    is replayed after it."""
    store = _session_with_records(folder)
    before, etag = store.load_with_etag("s")
    folded = store.compact("s")
    after, etag_after = store.load_with_etag("s")
    problems = []
    if b'{"seq":' in (folder / "s.json").read_bytes():
        problems.append("compact left records in the file")
    if after != before:
        problems.append("the fold changed the session")
    if folded != etag or etag_after != etag:
        problems.append(f"the fold changed the etag: {etag} -> {folded} / {etag_after}")
    retry = store.append("s", [message("a", 2, 10)], key="k2")
    if not retry.replayed:
        problems.append("a key appended before the fold was not remembered after it")
    try:
        store.append("s", [message("a", 3, 10)], if_match=etag)
    except SessionStoreError as exc:
        problems.append(f"if_match with the etag from before the fold: {exc}")
    try:
        held = progress(store.load("s"))
    except ValueError as exc:
        return [*problems, str(exc)]
    if held != {"a": 4}:
        problems.append(f"the session holds {held}")
    return problems


def fold_race_violations(folder: Path) -> list[str]:
    """Whenever ``compact`` reads the session, another store appends to it
    (``lock_timeout=0``). Under the lock that append is refused at once; any append
    acknowledged must be in the folded session."""
    store = _session_with_records(folder)
    other = SessionStore(folder, lock_timeout=0)
    acked: list[int] = []
    staged: list[int] = []
    real_read = FileSystemBackend.read
    main = threading.current_thread()

    def read_then_race(self: FileSystemBackend, session_id: str, *, max_bytes: int) -> bytes | None:
        data = real_read(self, session_id, max_bytes=max_bytes)
        if threading.current_thread() is main and session_id == "s" and not staged:
            staged.append(1)
            number = 3

            def append() -> None:
                other.append("s", [message("a", number, 10)], key=f"k{number}")

            if _in_thread(append) is None:
                acked.append(number)
        return data

    from unittest import mock  # noqa: PLC0415

    with mock.patch.object(FileSystemBackend, "read", read_then_race):
        store.compact("s")
    problems = [] if staged else ["the racing append was never staged"]
    try:
        held = progress(store.load("s")).get("a", 0)
    except (SessionStoreError, ValueError) as exc:
        return [*problems, str(exc)]
    if acked and held != 4:
        problems.append(f"an append acknowledged during the fold is lost ({held} messages)")
    return problems


def append_recipe_violations(folder: Path) -> list[str]:
    """The recorded ``os`` calls of an append to a session with records: one ``write()``
    of the whole record on an ``O_APPEND`` descriptor of the session file, then an
    fdatasync of that descriptor before ``append`` returns; no rename, no whole-file
    rewrite; nothing but closing after the flush."""
    from tests.reliability.checks import recording  # noqa: PLC0415

    store = _session_with_records(folder)
    target = folder / "s.json"
    size = target.stat().st_size
    with recording("open", "write", "fsync", "fdatasync", "close", "replace", "rename") as calls:
        store.append("s", [message("a", 3, 10)], key="k3")
    opens = [
        c
        for c in calls
        if c.name == "open" and Path(c.args[0]) == target and c.args[1] & os.O_APPEND
    ]
    if len(opens) != 1:
        return [f"expected one O_APPEND open of {target}, saw {len(opens)}"]
    fd = opens[0].result
    after = calls[calls.index(opens[0]) + 1 :]
    names = [(c.name, c.args[0] if c.args else None) for c in after]
    closed = names.index(("close", fd)) if ("close", fd) in names else len(names)
    writes = [c for c in after[:closed] if c.name == "write" and c.args[0] == fd]
    problems = []
    grown = target.stat().st_size - size
    if len(writes) != 1 or writes[0].result != grown:
        problems.append(f"{len(writes)} writes to the log; the file grew by {grown} bytes")
    flushes = [
        i for i, (n, a) in enumerate(names[:closed]) if n in ("fdatasync", "fsync") and a == fd
    ]
    if not flushes or (writes and flushes[-1] < after.index(writes[-1])):
        problems.append("the record was not flushed (fdatasync) before its descriptor closed")
    elif any(c.name not in ("close",) for c in after[flushes[-1] + 1 :]):
        problems.append("append did more work after the flush")
    if any(c.name in ("replace", "rename") for c in calls):
        problems.append("the append rewrote the whole file")
    return problems


LogCheck = Callable[[Path], list[str]]
