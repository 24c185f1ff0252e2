"""``python -m sessionstore``: the same command as ``sessionstore``."""

from __future__ import annotations

from sessionstore.cli import main

raise SystemExit(main())
