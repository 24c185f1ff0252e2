"""1. Crash safety: SIGKILL a saving child at random moments; nothing torn, nothing lost."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.checks import crash_violations
from tests.reliability.figures import record, size

KILLS = size("SESSIONSTORE_CRASH_KILLS", 200)


def test_kill_during_saves_leaves_a_whole_acknowledged_version(tmp_path: Path) -> None:
    result = crash_violations(tmp_path, KILLS, seed=20261125)
    record("crash kills", result.kills)
    record("crash acknowledged saves", result.acked_saves)
    record("crash orphan temp files (cleaned, never listed)", result.orphan_temps)
    record("crash violations", len(result.violations))
    assert result.violations == []
    assert result.kills == KILLS
    assert result.acked_saves > 0, "the child must have acknowledged saves to check against"
