"""Test kit for sessionstore users: Hypothesis strategies and a backend conformance suite.

Needs the ``testing`` extra (``pip install 'sessionstore[testing]'``): Hypothesis
and pytest are imported only when this package is. Importing it registers the
kit's modules for pytest's assertion rewriting, so a failed check shows the values
it compared; import the kit from test modules or ``conftest.py`` (as usual), not
before pytest starts.

``StoreUnderTest`` and ``StoreFactory`` are what a factory for the suite returns
and is; ``sessionstore.testing.conformance`` holds the suite, ``strategies`` the
Hypothesis strategies. See ``docs/testing-kit.md``.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401  # checked here so the error names the extra
    import pytest
except ImportError as exc:
    raise ImportError(
        f"sessionstore.testing needs {exc.name or 'hypothesis and pytest'}, which the "
        "'testing' extra installs: pip install 'sessionstore[testing]'",
        name=exc.name,
    ) from exc

# Before the modules that assert are imported: afterwards it would be too late.
pytest.register_assert_rewrite(
    "sessionstore.testing.conformance",
    "sessionstore.testing.concurrency",
    "sessionstore.testing.limits",
    "sessionstore.testing.locks",
)

from sessionstore.testing.subject import StoreFactory, StoreUnderTest  # noqa: E402

__all__ = ["StoreFactory", "StoreUnderTest"]
