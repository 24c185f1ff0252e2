"""The progress bar: tqdm on stderr's bottom line, result lines scrolling above it.

A bar is drawn only for a person at a terminal: never for ``--json``,
``--json-lines`` or ``-q``, never when stderr is not a terminal (a pipe, a file, CI),
and never with ``NO_COLOR`` set or ``TERM=dumb``. Without a bar nothing here writes
a carriage return or an escape code. tqdm is imported only when a bar is drawn, so
``import sessionstore`` (and a command in a pipe) never loads it.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

__all__ = ["Progress", "wanted"]


def wanted(*, machine_output: bool, quiet: bool) -> bool:
    """True when a bar may be drawn: text output, not quiet, stderr a real terminal,
    and neither ``NO_COLOR`` (any non-empty value) nor ``TERM=dumb``."""
    if machine_output or quiet:
        return False
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


class Progress:
    """A bar of ``total`` steps labelled ``label``, live inside a ``with`` block.

    ``write(line)`` prints a result line on stdout: with a bar, through tqdm, which
    clears the bar, prints the line and draws the bar again below it, so lines are
    never glued to the bar. ``advance()`` counts one step. Closing clears the bar.
    """

    def __init__(self, total: int, label: str, *, enabled: bool) -> None:
        self.total = total
        self.label = label
        self.enabled = enabled and total > 0
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from tqdm import tqdm  # noqa: PLC0415  # only a bar on a terminal needs it

            self._bar = tqdm(
                total=self.total,
                desc=self.label,
                file=sys.stderr,
                leave=False,  # cleared at the end: the summary line takes its place
                dynamic_ncols=True,
                mininterval=0.1,
                unit="item",
            )
        return self

    def advance(self) -> None:
        """Count one step done."""
        if self._bar is not None:
            self._bar.update(1)

    def write(self, line: str) -> None:
        """Print ``line`` and a newline on stdout, above the bar when there is one."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            sys.stdout.write(line + "\n")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
