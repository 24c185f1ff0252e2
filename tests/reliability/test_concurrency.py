"""4. No lost updates across processes: appends under the lock, and if_match increments."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Any

from sessionstore import ConflictError, SessionStore, StoredSession
from tests.reliability.checks import lost_update_violations
from tests.reliability.figures import record, size

WRITERS = size("SESSIONSTORE_WRITERS", 4)
APPENDS = size("SESSIONSTORE_APPENDS", 60)
INCREMENTS = size("SESSIONSTORE_INCREMENTS", 40)


def test_concurrent_appends_lose_nothing_and_keep_each_writers_order(tmp_path: Path) -> None:
    problems = lost_update_violations(tmp_path, WRITERS, APPENDS)
    record("appends from concurrent processes", WRITERS * APPENDS)
    record("lost-update violations", len(problems))
    assert problems == []


def _increment(
    folder: str,
    wanted: int,
    results: multiprocessing.Queue[tuple[int, int]],
    everyone_has_read: Any,
) -> None:
    store = SessionStore(folder)
    successes = conflicts = 0
    first = True
    while successes < wanted:
        session, etag = store.load_with_etag("counter")
        if first:
            # Every writer holds the same etag before anyone saves (the "LLM call
            # between load and save"): exactly one wins, the others must conflict.
            everyone_has_read.wait()
            first = False
        bumped = replace(session, metadata={"n": session.metadata["n"] + 1})
        try:
            store.save(bumped, if_match=etag)
        except ConflictError:
            conflicts += 1
        else:
            successes += 1
    results.put((successes, conflicts))


def test_contended_if_match_increments_are_exact(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(
        StoredSession(
            session_id="counter", messages=(), input_tokens=0, output_tokens=0, metadata={"n": 0}
        )
    )
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[tuple[int, int]] = context.Queue()
    barrier = context.Barrier(WRITERS)
    procs = [
        context.Process(target=_increment, args=(str(tmp_path), INCREMENTS, results, barrier))
        for _ in range(WRITERS)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join()
    successes = sum(s for s, _ in outcomes)
    conflicts = sum(c for _, c in outcomes)
    record("if_match increments", successes)
    record("if_match conflicts observed", conflicts)
    assert store.load("counter").metadata["n"] == successes == WRITERS * INCREMENTS
    assert conflicts >= WRITERS - 1, "the writers must actually have contended"
