"""Counters the reliability tests report (kills, faults, hostile inputs, violations).

With ``SESSIONSTORE_RELIABILITY_REPORT=path.json`` the totals of a run are written
there at the end (see ``conftest.py``); ``docs/reliability.md`` quotes them.
"""

from __future__ import annotations

import os
from collections import Counter

FIGURES: Counter[str] = Counter()


def record(name: str, amount: int = 1) -> None:
    """Add ``amount`` to the figure ``name``."""
    FIGURES[name] += amount


def size(knob: str, default: int) -> int:
    """A stress size: the environment variable ``knob`` if set, else ``default``."""
    return int(os.environ.get(knob, default))
