"""Shared test configuration: Hypothesis profiles.

Choose a profile with ``HYPOTHESIS_PROFILE``:

- ``ci`` (default): fast enough for every push;
- ``quick``: fewer examples, for the runs on the other Python versions in CI (the full
  ``ci`` profile runs on the main one);
- ``dev``: more examples for local work;
- ``long``: a soak run (``HYPOTHESIS_PROFILE=long pytest``), thousands of examples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=_SLOW_DATA)
settings.register_profile(
    "quick",
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=_SLOW_DATA,
)
settings.register_profile("dev", max_examples=300, deadline=None, suppress_health_check=_SLOW_DATA)
settings.register_profile(
    "long",
    max_examples=5000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=_SLOW_DATA,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
