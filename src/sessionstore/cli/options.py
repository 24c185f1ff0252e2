"""The command line: every command, its options and its ``--help``.

The options shared by every command (``--json``, ``--json-lines``, ``-q``, ``-v``)
and by every command that works on a store (``--dir``, ``--dsn``, ``--table``,
``--max-bytes``) are accepted before the command name or after it: the top-level
parser holds their defaults, and each command's parser leaves an option it was
not given unset (``SUPPRESS``) instead of overwriting what came before it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sessionstore.models import CURRENT_SCHEMA_VERSION
from sessionstore.store import DEFAULT_MAX_BYTES, DEFAULT_SESSION_DIR

__all__ = ["EXIT_CODES", "Parser", "build_parser"]

EXIT_CODES = "exit codes: 0 ok, 1 problems found, 2 usage or operational error, 130 interrupted"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors also reach ``--json`` readers.

    ``on_error(message)`` (set by ``main``) reports the error in the form the
    command line asked for before argparse prints the usage and exits with 2.
    """

    on_error: Callable[[str], None] | None = None

    def error(self, message: str) -> NoReturn:
        if Parser.on_error is not None:
            Parser.on_error(f"{self.prog}: {message}")
            self.exit(2)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"not a positive number of bytes: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        msg = f"not a number of seconds >= 0: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= CURRENT_SCHEMA_VERSION:
        msg = (
            f"not a schema version this sessionstore knows: {text!r} "
            f"(it knows 1 to {CURRENT_SCHEMA_VERSION}; see sessionstore history)"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


def _output_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    group = parser.add_argument_group("output (before or after the command)")
    group.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print one JSON report on stdout (errors too); see docs/cli.md",
    )
    group.add_argument(
        "--json-lines",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="stream the report as JSON lines: a header, one line per item, a summary",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print only problems and errors; no progress bar, summary or hints",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print every item, not only those that need attention",
    )


def _store_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    def default(value: object) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("store (before or after the command)")
    group.add_argument(
        "--dir",
        default=default(None),
        metavar="DIR",
        help=f"folder of sessions (default: $SESSIONSTORE_DIR, else {DEFAULT_SESSION_DIR})",
    )
    group.add_argument(
        "--dsn",
        default=default(None),
        metavar="DSN",
        help="work on a PostgreSQL table instead of a folder (default: $SESSIONSTORE_DSN; "
        "the variable keeps a password out of ps and the shell's history)",
    )
    group.add_argument(
        "--table",
        default=default(None),
        metavar="TABLE",
        help="the PostgreSQL table, with --dsn (default: sessions)",
    )
    group.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=default(DEFAULT_MAX_BYTES),
        metavar="BYTES",
        help="larger sessions are too large: not read, never quarantined; use the "
        f"application store's max_bytes (default: {DEFAULT_MAX_BYTES})",
    )


def build_parser(handlers: dict[str, Callable[..., int]]) -> Parser:  # noqa: PLR0915  # one list
    """The parser of the whole command line; ``handlers`` maps a command to its function."""
    from sessionstore import __version__  # noqa: PLC0415  # the package is loaded anyway

    parser = Parser(
        prog="sessionstore",
        description="Inspect, validate, migrate and repair stores of sessionstore sessions "
        "(folders and PostgreSQL tables).",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"sessionstore {__version__}")
    _output_options(parser, top=True)
    _store_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, summary: str, examples: Sequence[str], *, store: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog="examples:\n" + "".join(f"  {e}\n" for e in examples) + "\n" + EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _output_options(sub, top=False)
        if store:
            _store_options(sub, top=False)
        sub.set_defaults(handler=handlers[name])
        return sub

    def ids(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("ids", nargs="*", metavar="ID", help=f"{what} only these sessions")

    add(
        "status",
        "how many sessions at each schema version, what is wrong, what migrate would do",
        ["sessionstore status", "sessionstore status --dsn postgresql://app@db/app --json"],
    )
    add(
        "history",
        "the schema versions this sessionstore knows and the steps between them",
        ["sessionstore history"],
        store=False,
    )
    add(
        "ls",
        "list every session file with version, counts, size, time and status",
        ["sessionstore ls --dir .port_sessions", "sessionstore ls --json-lines | jq .id"],
    )
    sub = add(
        "show",
        "print a session as JSON, migrated in memory to the current version",
        ["sessionstore show chat-42 --dir .port_sessions"],
    )
    sub.add_argument("id", help="session id")
    sub = add(
        "validate",
        "check every session (or the ones named); writes nothing",
        ["sessionstore validate", "sessionstore validate chat-1 chat-2 --json"],
    )
    ids(sub, "check")
    sub = add(
        "migrate",
        "rewrite sessions as the current schema version (or --to an older one), atomically",
        [
            "sessionstore migrate --dry-run",
            "sessionstore migrate --backup backups/2026-11-25",
            "sessionstore migrate --check          # in CI: exit 1 if anything is old",
            "sessionstore migrate --to 1 --dry-run  # what a rollback would lose",
        ],
    )
    ids(sub, "migrate")
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="write nothing; say what would change")
    mode.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if anything would change"
    )
    sub.add_argument(
        "--to",
        type=_version,
        default=CURRENT_SCHEMA_VERSION,
        metavar="N",
        help=f"the schema version to write (default: {CURRENT_SCHEMA_VERSION}, the current "
        "one); a lower one rolls back, e.g. --to 1 for the original module",
    )
    sub.add_argument(
        "--allow-lossy",
        action="store_true",
        help="with --to: write even when an older version cannot hold some fields "
        "(each file's lost fields are listed)",
    )
    sub.add_argument("--backup", metavar="DIR", help="copy each file here before rewriting it")
    sub.add_argument(
        "--rename-invalid",
        action="store_true",
        help="give files whose names are not valid ids (my.session.json, café.json) a "
        "valid id; the old name is kept in the report and in the session's metadata",
    )
    sub.add_argument(
        "--force",
        action="store_true",
        help="run even as a user who does not own the folder (rewritten files then "
        "become that user's)",
    )
    sub = add(
        "compact",
        "fold the append records of every session (or the ones named) into its snapshot",
        [
            "sessionstore compact",
            "sessionstore compact chat-42 --json",
            "sessionstore compact --dry-run --dsn postgresql://app@db/app",
        ],
    )
    ids(sub, "compact")
    sub.add_argument("--dry-run", action="store_true", help="write nothing; say what would fold")
    sub = add(
        "doctor",
        "find what crashed writers and damage left, and what does not load; fix with --fix",
        [
            "sessionstore doctor",
            "sessionstore doctor --fix",
            "sessionstore doctor --rename",
            "sessionstore doctor --list-quarantine",
            "sessionstore doctor --restore chat-42.json.20261125T101500Z",
        ],
    )
    sub.add_argument(
        "--fix",
        action="store_true",
        help="remove stale temp and stray lock files; move corrupt files into "
        "DIR/.quarantine/; cut torn tails (appends that never finished), keeping their "
        "bytes in DIR/.quarantine/ (never deletes session data; each fix re-checks the "
        "file under its session's lock)",
    )
    sub.add_argument(
        "--rename",
        action="store_true",
        help="give files whose names are not valid ids a valid id (recorded in the report "
        "and in the session's metadata)",
    )
    sub.add_argument(
        "--grace",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="temp files younger than this may belong to a running writer (default: 3600)",
    )
    sub.add_argument(
        "--list-quarantine", action="store_true", help="list the files in DIR/.quarantine/"
    )
    sub.add_argument(
        "--restore",
        metavar="NAME",
        help="move DIR/.quarantine/NAME back to its session's file (if it has none)",
    )
    sub.add_argument(
        "--force",
        action="store_true",
        help="rename even as a user who does not own the folder",
    )
    sub = add(
        "delete",
        "delete one session (exit 1 if there was none)",
        ["sessionstore delete chat-42"],
    )
    sub.add_argument("id", help="session id")
    add(
        "setup",
        "create the PostgreSQL table (idempotent; needs --dsn or SESSIONSTORE_DSN)",
        ["SESSIONSTORE_DSN=postgresql://app@db/app sessionstore setup --table sessions"],
    )
    sub = add(
        "copy",
        "copy sessions between folders and PostgreSQL tables, verifying each",
        [
            "sessionstore copy --from .port_sessions --to-dsn postgresql://app@db/app",
            "sessionstore copy --from-dsn postgresql://app@db/app --to restored/ --dry-run",
        ],
        store=False,
    )
    ids(sub, "copy")
    sub.add_argument("--from", dest="from_dir", metavar="DIR", help="source folder")
    sub.add_argument("--from-dsn", metavar="DSN", help="source PostgreSQL database")
    sub.add_argument("--to", dest="to_dir", metavar="DIR", help="target folder")
    sub.add_argument("--to-dsn", metavar="DSN", help="target PostgreSQL database")
    sub.add_argument(
        "--table",
        default=argparse.SUPPRESS,
        help="PostgreSQL table, both ends (default: sessions)",
    )
    sub.add_argument(
        "--overwrite",
        action="store_true",
        help="replace target sessions whose content differs (refused by default)",
    )
    sub.add_argument("--dry-run", action="store_true", help="write nothing; say what would happen")
    sub.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=argparse.SUPPRESS,
        metavar="BYTES",
        help=f"the stores' max_bytes (default: {DEFAULT_MAX_BYTES})",
    )

    schema = commands.add_parser(
        "schema",
        help="export or check the JSON Schemas",
        description="export or check the JSON Schema of every version",
    )
    schema_commands = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    for name, summary, example in (
        ("export", "write session.vN.json for every version", "schema export --out schemas"),
        ("check", "exit 1 when a folder's schemas differ from the models", "schema check schemas"),
    ):
        sub = schema_commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  sessionstore {example}\n\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _output_options(sub, top=False)
        sub.set_defaults(handler=handlers[f"schema {name}"])
        if name == "export":
            sub.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
        else:
            sub.add_argument("folder", metavar="DIR")
    return parser
