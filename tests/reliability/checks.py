"""Checks shared by the reliability tests and the broken-variant table.

Each ``*_violations`` function runs one experiment against the store as it is
(possibly monkeypatched into a broken variant by the caller) and returns the
list of violations it saw: empty for the real implementation, non-empty for a
variant the check guards against.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from sessionstore import (
    BackendSessionStore,
    ConflictError,
    LockTimeoutError,
    MemorySessionStore,
    SessionStore,
    SessionStoreError,
    SessionTooLargeError,
    StoredSession,
)
from sessionstore.atomic import TEMP_NAME
from sessionstore.backends.filesystem import FileSystemBackend

CRASH_ID = "crash"


def version_session(version: int, *, payload: int = 1000) -> StoredSession:
    """A self-describing session: its content is a function of ``version`` alone."""
    count = version % 40 + 1
    return StoredSession(
        session_id=CRASH_ID,
        messages=tuple(f"version {version} message {j} " + "x" * payload for j in range(count)),
        input_tokens=version,
        output_tokens=count,
        metadata={"version": version},
    )


def temp_files(folder: Path) -> list[str]:
    """Names of store-owned temp files in ``folder``."""
    return [name for name in os.listdir(folder) if TEMP_NAME.match(name)]


def _child_saves(store: SessionStore, first: int, ack: int, payload: int) -> None:
    version = first
    while True:
        store.save(version_session(version, payload=payload))
        # Acknowledge only after save returned: from here on it must survive.
        os.write(ack, f"{version}\n".encode())
        version += 1


@dataclass
class CrashResult:
    """What a run of kills saw."""

    kills: int = 0
    acked_saves: int = 0
    orphan_temps: int = 0
    violations: list[str] = field(default_factory=list)


def crash_violations(folder: Path, kills: int, seed: int, *, payload: int = 1000) -> CrashResult:
    """SIGKILL a child saving growing versions at random moments, ``kills`` times.

    After each kill the session must load, be exactly one whole version, and be at
    least the last acknowledged one; no temp file may be listed.
    """
    rng = random.Random(seed)
    store = SessionStore(folder)
    result = CrashResult()
    next_version, last_acked = 1, 0
    for _ in range(kills):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            try:
                os.close(read_end)
                _child_saves(store, next_version, write_end, payload)
            finally:
                os._exit(0)
        os.close(write_end)
        wanted = rng.randint(1, 3)
        # The kill lands a random time after the last wanted ack, spread over
        # about two saves, so it hits every step of the write (not a race dodge:
        # the moment of the kill is the experiment's random input).
        delay = rng.uniform(0, 0.002)
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
            # Kill in the middle of whatever save comes next.
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pending += pipe.read()
        acks.extend(int(line) for line in pending.split(b"\n") if line)
        result.kills += 1
        result.acked_saves += len(acks)
        if acks:
            last_acked = max(last_acked, acks[-1])
        try:
            session = store.load(CRASH_ID)
        except SessionStoreError as exc:
            if last_acked or folder.joinpath(f"{CRASH_ID}.json").exists():
                result.violations.append(f"after kill {result.kills}: {exc}")
                break
            continue
        version = session.metadata.get("version")
        if not isinstance(version, int) or session != version_session(version, payload=payload):
            result.violations.append(f"after kill {result.kills}: not one whole version")
            break
        if version < last_acked:
            result.violations.append(
                f"after kill {result.kills}: version {version} older than acked {last_acked}"
            )
            break
        if store.list() != [CRASH_ID]:
            result.violations.append(f"after kill {result.kills}: listing {store.list()}")
        result.orphan_temps += len(temp_files(folder))
        for name in temp_files(folder):  # what `sessionstore doctor --fix` would remove
            (folder / name).unlink()
        next_version = version + 1
    return result


# --- recorded system calls ---------------------------------------------------------


@dataclass
class Call:
    """One recorded call: the os function, its arguments, its result."""

    name: str
    args: tuple[Any, ...]
    result: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@contextmanager
def recording(*names: str) -> Iterator[list[Call]]:
    """Record every call of the named ``os`` functions (and ``open``) while inside."""
    calls: list[Call] = []
    patches: list[AbstractContextManager[Any]] = []
    for name in names:
        original = getattr(os, name)

        def recorder(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            call = Call(_name, args, kwargs=kw)
            calls.append(call)
            call.result = _original(*args, **kw)
            return call.result

        patches.append(mock.patch.object(os, name, recorder))
    real_open = open

    def open_recorder(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        calls.append(Call("builtins.open", (file, mode)))
        return real_open(file, mode, *args, **kw)

    patches.append(mock.patch("builtins.open", open_recorder))
    with ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield calls


RECIPE_CALLS = ("open", "write", "fsync", "close", "replace", "rename", "unlink")


def recipe_violations(folder: Path) -> list[str]:
    """Two saves of one session, recorded: the durable replace recipe must hold in each.

    Exclusive 0600 temp in the same folder, not named ``*.json``, every byte written
    to it, fsync, close, replace onto the target, fsync of the folder, and nothing but
    closing after that (the save returns only then). Two saves use two temp names.
    """
    store = SessionStore(folder)
    store.save(version_session(0))  # creates the folders and lock files
    violations: list[str] = []
    temps: list[str] = []
    for version in (1, 2):
        data_session = version_session(version)
        with recording(*RECIPE_CALLS) as calls:
            store.save(data_session)
        violations += _check_trace(folder, calls, temps)
    if len(temps) == 2 and temps[0] == temps[1]:
        violations.append(f"both saves used the temp name {temps[0]}")
    return violations


def _check_trace(folder: Path, calls: list[Call], temps: list[str]) -> list[str]:
    target = folder / f"{CRASH_ID}.json"
    if any(c.name == "builtins.open" and Path(c.args[0]) == target for c in calls):
        return ["the data file was opened and written in place"]
    creates = [
        c
        for c in calls
        if c.name == "open"
        and len(c.args) > 1
        and c.args[1] & os.O_CREAT
        and not str(c.args[0]).endswith(".lock")
    ]
    if len(creates) != 1:
        return [f"expected one temp file creation, saw {len(creates)}"]
    create = creates[0]
    temp = Path(create.args[0])
    temps.append(temp.name)
    problems = []
    if temp.parent != folder:
        problems.append(f"temp file {temp} is not in the target folder")
    if temp.name.endswith(".json"):
        problems.append("temp file name ends in .json and would be listed")
    if not create.args[1] & os.O_EXCL:
        problems.append("temp file not created exclusively (O_EXCL)")
    if len(create.args) < 3 or create.args[2] != 0o600:
        problems.append("temp file not created with mode 0600")
    fd = create.result
    after_create = calls[calls.index(create) + 1 :]
    written = sum(c.result for c in after_create if c.name == "write" and c.args[0] == fd)
    if written != target.stat().st_size:
        problems.append(
            f"wrote {written} bytes to the temp file, the file has {target.stat().st_size}"
        )
    names = [(c.name, c.args[0] if c.args else None) for c in after_create]
    # The temp file's descriptor number is free again after its close: only an
    # fsync before that close is an fsync of the temp file.
    closed = names.index(("close", fd)) if ("close", fd) in names else len(names)
    try:
        synced = names[:closed].index(("fsync", fd))
        replaced = next(i for i, c in enumerate(after_create) if c.name in ("replace", "rename"))
    except (ValueError, StopIteration):
        return [*problems, "the temp file was not fsynced before its close, or never renamed"]
    if synced > replaced:
        problems.append("the temp file was fsynced after the rename")
    rename = after_create[replaced]
    if Path(rename.args[0]) != temp or Path(rename.args[1]) != target:
        problems.append(f"renamed {rename.args[0]} -> {rename.args[1]}")
    tail = after_create[replaced + 1 :]
    dir_opens = [c for c in tail if c.name == "open" and Path(c.args[0]) == folder]
    dir_syncs = [
        c for c in tail if c.name == "fsync" and dir_opens and c.args[0] == dir_opens[0].result
    ]
    if not dir_syncs:
        problems.append("the folder was not fsynced after the rename, before save returned")
    else:
        rest = tail[tail.index(dir_syncs[0]) + 1 :]
        if any(c.name != "close" for c in rest):
            problems.append("save did more work after the folder fsync")
    return problems


# --- lost updates ----------------------------------------------------------------


def _appender(folder: str, writer: int, count: int, payload: int) -> None:
    store = SessionStore(folder)
    for i in range(count):
        store.append_messages(
            "shared", [f"w{writer}-{i}" + " " * payload], input_tokens=writer + 1, output_tokens=1
        )


def lost_update_violations(
    folder: Path, writers: int, per_writer: int, *, payload: int = 0
) -> list[str]:
    """``writers`` processes append ``per_writer`` messages each to one session.

    With ``payload`` bytes of filler per message the records pass the fold threshold
    every few appends, so folds replace the file while other writers wait (appends
    alone never replace it)."""
    SessionStore(folder).save(
        StoredSession(session_id="shared", messages=(), input_tokens=0, output_tokens=0)
    )
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=_appender, args=(str(folder), w, per_writer, payload))
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    problems = [f"writer exited with {p.exitcode}" for p in procs if p.exitcode != 0]
    try:
        session = SessionStore(folder).load("shared")
    except SessionStoreError as exc:
        return [*problems, str(exc)]
    if len(session.messages) != writers * per_writer:
        problems.append(f"{len(session.messages)} messages, expected {writers * per_writer}")
    for w in range(writers):
        mine = [m.rstrip() for m in session.messages if m.startswith(f"w{w}-")]
        if mine != [f"w{w}-{i}" for i in range(len(mine))]:
            problems.append(f"writer {w}'s messages out of order")
    expected_in = sum((w + 1) * per_writer for w in range(writers))
    if (session.input_tokens, session.output_tokens) != (expected_in, writers * per_writer):
        problems.append(f"token sums {session.input_tokens}/{session.output_tokens}")
    return problems


def run_in_forked_child(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a forked child and return its exit code (for crash-prone calls)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        code = 0
        try:
            fn()
        except BaseException:
            code = 1
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# --- the write contract off the hot path ------------------------------------------


def _session(session_id: str, text: str) -> StoredSession:
    return StoredSession(session_id=session_id, messages=(text,), input_tokens=0, output_tokens=0)


def _in_thread(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in another thread (so it cannot re-enter this thread's locks)."""
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # handed back
            outcome[0] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


def create_race_violations(folder: Path) -> list[str]:
    """A second ``create`` of the same id lands while the first one checks that the id
    is free. Under the lock the second one cannot get in (``lock_timeout=0``: it is
    refused at once, nothing acknowledged); at most one create may succeed."""
    first, second = SessionStore(folder), SessionStore(folder, lock_timeout=0)
    acked: list[str] = []
    raced: list[bool] = []
    real_exists = FileSystemBackend.exists
    main = threading.current_thread()

    def exists_then_race(self: FileSystemBackend, session_id: str) -> bool:
        found = real_exists(self, session_id)
        if threading.current_thread() is main and not raced and session_id == "c":
            raced.append(True)
            if _in_thread(lambda: second.create(_session("c", "second"))) is None:
                acked.append("second")
        return found

    with mock.patch.object(FileSystemBackend, "exists", exists_then_race):
        try:
            first.create(_session("c", "first"))
            acked.append("first")
        except ConflictError:
            pass
    stored = SessionStore(folder).load("c").messages[0]
    problems = [] if raced else ["the second create was never staged"]
    if len(acked) > 1:
        problems.append(f"two creates of one id both succeeded: {acked}")
    if acked and stored != acked[-1]:
        problems.append(f"the stored session is {stored!r}, the acknowledged create {acked}")
    return problems


def max_bytes_violations(folder: Path) -> list[str]:
    """Every backend refuses, on read, a document over the store's ``max_bytes``."""
    problems = []
    session = _session("m", "x" * 500)
    for label, big in (("memory", MemorySessionStore()), ("folder", SessionStore(folder))):
        big.save(session)
        small = BackendSessionStore(big.backend, max_bytes=100)
        try:
            small.load("m")
        except SessionTooLargeError:
            continue
        except SessionStoreError as exc:
            problems.append(f"{label}: {type(exc).__name__} instead of SessionTooLargeError")
            continue
        problems.append(f"{label}: loaded a document over max_bytes")
    return problems


def grown_file_violations(folder: Path) -> list[str]:
    """The file grows past ``max_bytes`` between ``fstat`` and the read: the load must
    refuse it, having read at most ``max_bytes + 1`` bytes."""
    store = SessionStore(folder, max_bytes=1000)
    store.save(_session("g", "small"))
    path = folder / "g.json"
    real_fstat, real_read = os.fstat, os.read
    read_total: list[int] = []

    def fstat_then_grow(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_ino == os.lstat(path).st_ino:
            with open(path, "ab") as grow:  # another process appends right now
                grow.write(b" " * 100_000)
        return info

    def counting_read(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        read_total.append(len(data))
        return data

    problems = []
    with (
        mock.patch.object(os, "fstat", fstat_then_grow),
        mock.patch.object(os, "read", counting_read),
    ):
        try:
            store.load("g")
            problems.append("a file that grew past max_bytes after fstat was loaded")
        except SessionTooLargeError:
            pass
        except SessionStoreError as exc:
            problems.append(f"{type(exc).__name__} instead of SessionTooLargeError: {exc}")
    if sum(read_total) > 1001:
        problems.append(f"read {sum(read_total)} bytes with max_bytes 1000")
    return problems


def new_folder_violations(folder: Path) -> list[str]:
    """The first save into missing folders: the parent of every folder created is
    flushed before ``save`` returns (else a crash may forget the folder, and every
    session in it)."""
    target = folder / "a" / "b"
    with recording("mkdir", "open", "fsync", "close") as calls:
        SessionStore(target).save(_session("n", "first"))
    opened: dict[int, Path] = {}
    synced: list[tuple[int, Path]] = []
    made: list[tuple[int, Path]] = []
    for position, call in enumerate(calls):
        if call.name == "open" and isinstance(call.result, int):
            opened[call.result] = Path(call.args[0])
        elif call.name == "fsync" and call.args[0] in opened:
            synced.append((position, opened[call.args[0]]))
        elif call.name == "mkdir":
            made.append((position, Path(call.args[0])))
    problems = [
        f"{path} was created but its folder {path.parent} was not flushed after"
        for position, path in made
        if not any(later > position and synced_path == path.parent for later, synced_path in synced)
    ]
    if len(made) < 3:
        problems.append(f"expected to create a, a/b and a/b/.locks, saw {made}")
    return problems


def migrate_race_violations(folder: Path) -> list[str]:
    """Whenever ``migrate`` reads the old file, another writer tries to store a new old-
    version document (``lock_timeout=0``). Under the lock that writer is refused while
    migrate rewrites; the stored session is the last acknowledged document, migrated."""
    from sessionstore import maintenance  # noqa: PLC0415  # only this check needs it

    seed = b'{"session_id": "m", "messages": ["ack %d"], "input_tokens": 0, "output_tokens": 0}'
    writer = SessionStore(folder, lock_timeout=0)
    writer.backend.write("m", seed % 0)
    acked = [0]
    real_read = FileSystemBackend.read
    main = threading.current_thread()

    def read_then_race(self: FileSystemBackend, session_id: str, *, max_bytes: int) -> bytes | None:
        data = real_read(self, session_id, max_bytes=max_bytes)
        if threading.current_thread() is main and session_id == "m" and len(acked) < 5:
            number = len(acked)
            if _in_thread(lambda: writer.backend.write("m", seed % number)) is None:
                acked.append(number)
        return data

    with mock.patch.object(FileSystemBackend, "read", read_then_race):
        _, results = maintenance.migrate_folder(folder)
        list(results)
    messages = SessionStore(folder).load("m").messages
    if messages != (f"ack {acked[-1]}",):
        return [f"stored {messages}, but the last acknowledged write was 'ack {acked[-1]}'"]
    return []


def quarantine_violations(folder: Path) -> list[str]:
    """``doctor --fix`` moves a corrupt file: after the rename, both folders (the new
    entry and the removed one) are flushed before the fix returns."""
    from sessionstore import maintenance  # noqa: PLC0415  # only this check needs it

    SessionStore(folder).save(_session("ok", "fine"))
    (folder / "bad.json").write_bytes(b"{ torn")
    [item] = [d for d in maintenance.find_debris(folder) if d.kind == "corrupt"]
    with recording("rename", "fsync") as calls:
        action, _ = maintenance.remove_debris(item)
    if not action.startswith("moved to"):
        return [f"the corrupt file was not moved: {action}"]
    renames = [i for i, c in enumerate(calls) if c.name == "rename"]
    if len(renames) != 1:
        return [f"expected one rename, saw {len(renames)}"]
    rename = calls[renames[0]]
    synced = {c.args[0] for c in calls[renames[0] + 1 :] if c.name == "fsync"}
    return [
        f"the folder of the rename's {role} was not flushed after it"
        for role in ("dst_dir_fd", "src_dir_fd")
        if rename.kwargs.get(role) not in synced
    ]


def lock_timeout_violations(folder: Path) -> list[str]:
    """A writer facing a held lock gives up after ``lock_timeout`` with
    ``LockTimeoutError`` instead of waiting for the holder."""
    store = SessionStore(folder, lock_timeout=0.05)
    store.save(_session("t", "first"))
    holding, release = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def hold() -> None:
        with SessionStore(folder).backend.lock("t"):
            holding.set()
            release.wait()

    def wait() -> None:
        try:
            store.save(_session("t", "second"))
            outcome.append(None)
        except BaseException as exc:  # handed back
            outcome.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(timeout=5)  # a guard for the broken variant, not a wait for a race
    gave_up = not waiter.is_alive()
    release.set()
    holder.join()
    waiter.join()
    if not gave_up:
        return ["a writer waited past its lock_timeout of 0.05 s for a held lock"]
    if not isinstance(outcome[0], LockTimeoutError):
        return [f"expected LockTimeoutError, got {outcome[0]!r}"]
    return []
