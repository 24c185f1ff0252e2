"""Write the figures of a reliability run when SESSIONSTORE_RELIABILITY_REPORT is set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.reliability.figures import FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("SESSIONSTORE_RELIABILITY_REPORT")
    if target and FIGURES:
        Path(target).write_text(json.dumps(dict(sorted(FIGURES.items())), indent=2) + "\n")
