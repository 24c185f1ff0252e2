"""8. Readers during writes: never an error, never older than a version already seen.

Writer processes bump a version under ``update`` (so versions only grow) while
reader processes loop ``load``; each reader checks every load is one whole
version, at least the last it saw.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from sessionstore import SessionStore, StoredSession
from tests.reliability.checks import CRASH_ID, version_session
from tests.reliability.figures import record, size

WRITERS = 2
READERS = 2
UPDATES = size("SESSIONSTORE_READER_UPDATES", 150)


def _writer(folder: str, updates: int) -> None:
    store = SessionStore(folder)

    def bump(session: StoredSession) -> StoredSession:
        version = session.metadata["version"]
        assert isinstance(version, int)
        return version_session(version + 1)

    for _ in range(updates):
        store.update(CRASH_ID, bump)


def _reader(
    folder: str,
    done: multiprocessing.synchronize.Event,
    out: multiprocessing.Queue[tuple[int, int, list[str]]],
) -> None:
    store = SessionStore(folder)
    seen, loads, problems = 0, 0, []
    while True:
        finished = done.is_set()  # read before the load: one more full pass after the end
        try:
            session = store.load(CRASH_ID)
        except Exception as exc:  # every error is a violation here
            problems.append(f"{type(exc).__name__}: {exc}")
            break
        loads += 1
        version = session.metadata.get("version")
        if not isinstance(version, int) or session != version_session(version):
            problems.append(f"load {loads}: not one whole version")
            break
        if version < seen:
            problems.append(f"load {loads}: version {version} after {seen}")
            break
        seen = version
        if finished:
            break
    out.put((loads, seen, problems))


def test_readers_never_see_errors_or_older_versions(tmp_path: Path) -> None:
    SessionStore(tmp_path).save(version_session(0))
    context = multiprocessing.get_context("fork")
    done = context.Event()
    out = context.Queue()
    readers = [
        context.Process(target=_reader, args=(str(tmp_path), done, out)) for _ in range(READERS)
    ]
    writers = [
        context.Process(target=_writer, args=(str(tmp_path), UPDATES)) for _ in range(WRITERS)
    ]
    for proc in readers + writers:
        proc.start()
    for proc in writers:
        proc.join()
    done.set()
    results = [out.get(timeout=120) for _ in readers]
    for proc in readers:
        proc.join()
    assert [p.exitcode for p in writers + readers] == [0] * (WRITERS + READERS)
    total_loads = sum(loads for loads, _, _ in results)
    record("readers: loads during writes", total_loads)
    record("readers: violations", sum(len(problems) for _, _, problems in results))
    for loads, seen, problems in results:
        assert problems == []
        assert loads > 0
        assert seen == WRITERS * UPDATES  # the last pass saw the final version
    assert SessionStore(tmp_path).load(CRASH_ID) == version_session(WRITERS * UPDATES)
