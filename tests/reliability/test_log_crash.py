"""12. The append log under SIGKILL: appends and folds killed at random moments.

A forked child appends keyed, self-describing messages (about 4 KB each, so the
records pass the 16 KiB fold threshold every four appends and kills land in folds
too) and acknowledges each append on a pipe after it returns; it is killed after
1-3 acknowledgements plus 0-3 ms. Reader processes load every session in a loop the
whole time. See ``logchecks.log_crash_violations`` for what each kill checks.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.figures import record, size
from tests.reliability.logchecks import Readers, log_crash_violations

KILLS = size("SESSIONSTORE_LOG_KILLS", 300)


def test_kills_during_appends_and_folds_lose_nothing_and_readers_never_go_back(
    tmp_path: Path,
) -> None:
    readers = Readers(tmp_path).start()
    try:
        result = log_crash_violations(tmp_path, KILLS, seed=20261126)
    finally:
        loads, reader_problems = readers.stop()
    record("log crash kills", result.kills)
    record("log crash acknowledged appends", result.acked)
    record("log crash appends landed unacknowledged, replayed by the retry", result.unacked_landed)
    record("log crash kills that left a fold's temp file", result.fold_temps)
    record("log crash violations", len(result.violations))
    record("log readers: loads during appends, folds and kills", loads)
    record("log readers: violations", len(reader_problems))
    assert result.violations == []
    assert reader_problems == []
    assert result.kills == KILLS
    assert result.acked > 0, "the child must have acknowledged appends to check against"
    assert result.folds > 0, "folds must have happened during the kills"
    assert loads > 0
