"""The one report every command prints: as text for people, as JSON for programs.

Every command builds the same report: a header (report format version, command,
store, the schema version this sessionstore writes), ``items`` (one per session,
file, row or finding) and a closing ``ok`` and ``summary``. ``Output`` prints it in
one of three ways:

- text (default): one aligned line per item worth showing, a summary line, hints;
- ``--json``: one JSON document on stdout (``REPORT_FORMAT`` below; see docs/cli.md);
- ``--json-lines``: one JSON object per line, written as each item is known: a
  ``header`` line, ``item`` lines, then a ``summary`` (or ``error``) line.

Every string that leaves here is escaped (``escape``: a file name with bytes that
are not UTF-8 or with control characters never reaches a terminal raw) and passed
through the redactor (a database password never appears).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from sessionstore.cli.progress import Progress, wanted
from sessionstore.models import CURRENT_SCHEMA_VERSION

__all__ = [
    "ACTION_KEYS",
    "REPORT_FORMAT",
    "STATUS_KEYS",
    "Output",
    "Summary",
    "escape",
    "key",
]

REPORT_FORMAT = 1
"""The version of the JSON report's shape; raised when a key changes meaning or goes."""

STATUS_KEYS = (
    "current",
    "needs_migration",
    "repairable",
    "corrupt",
    "too_new",
    "too_large",
    "invalid_name",
    "not_a_regular_file",
    "unreadable",
    "not_found",
    "stale_temp",
    "fresh_temp",
    "stray_lock",
    "unsafe_folder",
    "torn_tail",
    "in_quarantine",
)
"""Summary keys counting the items of each status (every report has all of them)."""

ACTION_KEYS = (
    "migrated",
    "would_migrate",
    "unchanged",
    "skipped",
    "refused",
    "conflict",
    "renamed",
    "would_rename",
    "copied",
    "would_copy",
    "overwritten",
    "would_overwrite",
    "identical",
    "failed",
    "removed",
    "quarantined",
    "restored",
    "left_alone",
    "deleted",
    "written",
    "cut",
    "compacted",
    "would_compact",
)
"""Summary keys counting the items of each action (every report has all of them)."""


def key(word: str) -> str:
    """The summary key of a status or action: ``needs-migration`` -> ``needs_migration``."""
    return word.replace("-", "_")


def escape(text: str) -> str:
    """``text`` with every character a terminal could act on written as an escape.

    Bytes of a file name that are not UTF-8 (kept by ``os.listdir`` as lone
    surrogates) become ``\\xNN`` with the byte's value; other non-printable
    characters (controls such as ESC, format characters such as U+202E) become
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``. Printable text is unchanged.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        code = ord(char)
        if char.isprintable():
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


class Summary:
    """Counts of the items of a report, by status, by action and by schema version."""

    def __init__(self) -> None:
        self.total = 0
        self.problems = 0
        self.counts: Counter[str] = Counter()
        self.versions: Counter[int] = Counter()
        self.records = 0
        """Append records (not folded yet) in the items, summed."""
        self.torn_tails = 0
        """Items whose file or row ends in a torn tail."""

    def add(
        self,
        *,
        status: str | None = None,
        action: str | None = None,
        version: int | None = None,
        problem: bool = False,
        records: int | None = None,
        torn_bytes: int | None = None,
    ) -> None:
        """Count one item."""
        self.total += 1
        self.problems += problem
        self.records += records or 0
        self.torn_tails += bool(torn_bytes)
        for word in (status, action):
            if word is not None:
                self.counts[key(word)] += 1
        if version is not None:
            self.versions[version] += 1

    def __getitem__(self, name: str) -> int:
        return self.counts[key(name)]

    def as_json(self) -> dict[str, Any]:
        """The summary object: ``total``, ``problems``, every status and action key,
        ``records`` and ``torn_tails`` (see ``add``), and ``by_version`` (schema
        version, as a string, -> count)."""
        out: dict[str, Any] = {"total": self.total, "problems": self.problems}
        out.update({name: self.counts[name] for name in (*STATUS_KEYS, *ACTION_KEYS)})
        out.update(records=self.records, torn_tails=self.torn_tails)
        out["by_version"] = {str(v): n for v, n in sorted(self.versions.items())}
        return out

    def phrase(self, words: tuple[str, ...]) -> str:
        """``"3 current, 1 corrupt"`` for the non-zero counts of ``words``, in that order."""
        return ", ".join(f"{self[w]} {w}" for w in words if self[w])


class Output:
    """Where a command's report goes, in the form the options chose.

    ``mode`` is ``text``, ``json`` or ``jsonl``; ``quiet`` and ``verbose`` shape text
    only. ``redact`` is applied to every string printed (see ``stores.Redactor``).
    """

    def __init__(
        self,
        *,
        mode: str = "text",
        quiet: bool = False,
        verbose: bool = False,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.mode = mode
        self.quiet = quiet
        self.verbose = verbose
        self.redact = redact
        self.command: str | None = None
        self.store: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.summary = Summary()
        self.started = False
        self.finished = False
        self._progress: Progress | None = None

    @property
    def text(self) -> bool:
        """True for text output (not ``--json`` or ``--json-lines``)."""
        return self.mode == "text"

    def clean(self, text: str) -> str:
        """``text`` redacted and escaped, ready for a terminal or a JSON string."""
        return escape(self.redact(text))

    def _cleaned(self, value: object) -> object:
        if isinstance(value, str):
            return self.clean(value)
        if isinstance(value, dict):
            return {self.clean(str(k)): self._cleaned(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._cleaned(v) for v in value]
        return value

    def _json_line(self, document: Mapping[str, Any], *, indent: bool = False) -> None:
        option = orjson.OPT_INDENT_2 if indent else 0
        text = orjson.dumps(self._cleaned(dict(document)), option=option).decode()
        sys.stdout.write(text + "\n")
        if self.mode == "jsonl":
            sys.stdout.flush()  # a reader of the stream sees each item as it is known

    def header(self) -> dict[str, Any]:
        """The keys every report and every ``--json-lines`` header starts with."""
        from sessionstore import __version__  # noqa: PLC0415  # the package is loaded anyway

        return {
            "report_format": REPORT_FORMAT,
            "command": self.command,
            "sessionstore_version": __version__,
            "current_schema_version": CURRENT_SCHEMA_VERSION,
            "store": self.store,
            **self.extra,
        }

    def start(self, command: str, store: dict[str, Any] | None, **extra: Any) -> None:
        """Begin the report of ``command`` on ``store`` (``{"kind", "location"}``)."""
        self.command = command
        self.store = store
        self.extra = extra
        self.started = True
        if self.mode == "jsonl":
            self._json_line({"type": "header", **self.header()})

    def progress(self, total: int, label: str) -> Progress:
        """A progress bar for ``total`` items (drawn only where ``progress.wanted``)."""
        bar = Progress(total, label, enabled=wanted(machine_output=not self.text, quiet=self.quiet))
        self._progress = bar
        return bar

    def advance(self) -> None:
        """One item of the bar done."""
        if self._progress is not None:
            self._progress.advance()

    def line(self, text: str) -> None:
        """Print a line of text output (nothing under ``--json`` or ``--json-lines``)."""
        if not self.text:
            return
        line = self.clean(text)
        if self._progress is not None:
            self._progress.write(line)
        else:
            sys.stdout.write(line + "\n")

    def item(self, item: dict[str, Any], text: str | None = None) -> None:
        """Add one item to the report; ``text`` is its line in text output (None: none)."""
        if self.mode == "json":
            self.items.append(item)
        elif self.mode == "jsonl":
            self._json_line({"type": "item", **item})
        elif text is not None:
            self.line(text)

    def finish(self, *, ok: bool, **extra: Any) -> None:
        """End the report: the ``--json`` document, or the ``--json-lines`` summary line."""
        self.finished = True
        summary = self.summary
        if self.mode == "json":
            document = {
                **self.header(),
                "ok": ok,
                "summary": summary.as_json(),
                **extra,
                "items": self.items,
            }
            self._json_line(document, indent=True)
        elif self.mode == "jsonl":
            self._json_line({"type": "summary", "ok": ok, "summary": summary.as_json(), **extra})

    def error(self, kind: str, message: str, exit_code: int) -> None:
        """Report an error: ``error: ...`` on stderr, and under ``--json`` /
        ``--json-lines`` a JSON error on stdout too (the report, ``ok`` false)."""
        shown = self.clean(message)
        label = "interrupted" if kind == "interrupted" else "error"
        sys.stderr.write(f"{label}: {shown}\n")
        if self.text or self.finished:
            return
        error = {"kind": kind, "message": message, "exit_code": exit_code}
        if self.mode == "jsonl":
            if not self.started:
                self._json_line({"type": "header", **self.header()})
            self._json_line({"type": "error", "ok": False, "error": error})
            return
        self._json_line(
            {
                **self.header(),
                "ok": False,
                "summary": self.summary.as_json(),
                "error": error,
                "items": self.items,
            },
            indent=True,
        )
