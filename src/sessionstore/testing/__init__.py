"""Test kit for sessionstore users: Hypothesis strategies and a backend conformance suite.

Needs the ``testing`` extra (``pip install 'sessionstore[testing]'``): Hypothesis
and pytest are imported only when this package is.
"""

from __future__ import annotations
