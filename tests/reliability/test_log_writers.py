"""13. Several processes appending to one session and to their own, killed and retried.

Each writer appends keyed messages to a shared session and to one of its own; the
parent SIGKILLs a random writer at random moments and restarts it at its first
unacknowledged append with the same keys, while reader processes load every session.
See ``logchecks.writers_violations``.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.figures import record, size
from tests.reliability.logchecks import Readers, writers_violations

WRITERS = size("SESSIONSTORE_LOG_WRITERS", 4)
APPENDS = size("SESSIONSTORE_LOG_APPENDS", 60)
KILLS = size("SESSIONSTORE_LOG_WRITER_KILLS", 40)


def test_writers_with_kills_and_keyed_retries_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    readers = Readers(tmp_path).start()
    try:
        result = writers_violations(tmp_path, WRITERS, APPENDS, KILLS, seed=20261127)
    finally:
        loads, reader_problems = readers.stop()
    record("log writers: acknowledged appends (shared + own)", 2 * result.acked)
    record("log writers: kills", result.kills)
    record("log writers: retried appends replayed by their key", result.replayed)
    record("log writers: violations", len(result.violations))
    record("log readers: loads during appends, folds and kills", loads)
    record("log readers: violations", len(reader_problems))
    assert result.violations == []
    assert reader_problems == []
    assert result.acked == WRITERS * APPENDS
    assert result.kills == KILLS
