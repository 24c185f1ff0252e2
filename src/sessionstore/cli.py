"""The ``sessionstore`` command: inspect, validate and migrate folders of sessions.

``main(argv) -> int`` returns the exit code: 0 ok, 1 problems found, 2 usage or
operational error (bad id, unreadable folder, interrupted, and any unexpected
error). Errors are printed as ``error: ...`` on stderr, never as a traceback.
``--json`` prints one JSON document on stdout with stable keys (see README).
File names and messages are printed escaped (``_escape``): a name with bytes that
are not UTF-8 or with control characters never reaches the terminal raw.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO, TypeVar

import orjson

from sessionstore import maintenance
from sessionstore.codec import encode
from sessionstore.errors import (
    InvalidSessionIdError,
    SessionStoreError,
)
from sessionstore.schemas import diff_schemas, write_schemas
from sessionstore.store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SESSION_DIR,
    BackendSessionStore,
    SessionStore,
)

__all__ = ["main"]

OK, PROBLEMS, ERROR = 0, 1, 2
_T = TypeVar("_T")


class _UsageError(Exception):
    """A mistake in the command line that argparse cannot see."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    for stream in (sys.stdout, sys.stderr):
        # A character the terminal's encoding cannot show is printed as an escape,
        # never raised as UnicodeEncodeError.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with contextlib.ExitStack() as args.resources:
            code: int = args.handler(args)
    except (_UsageError, SessionStoreError) as exc:
        _error(str(exc))
        return ERROR
    except KeyboardInterrupt:
        print("\ninterrupted: every file is either old or new; rerun to finish", file=sys.stderr)
        return ERROR
    except BrokenPipeError:
        # The reader went away (``| head``); nothing left to say.
        sys.stderr.close()
        return OK
    except OSError as exc:
        _error(str(exc))
        return ERROR
    except Exception as exc:  # any other failure: one line, exit 2, no traceback
        _error(f"unexpected {type(exc).__name__}: {exc} (a bug in sessionstore: please report it)")
        return ERROR
    return code


def _error(message: str) -> None:
    print(f"error: {_escape(message)}", file=sys.stderr)


def _escape(text: str) -> str:
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


def _say(text: str) -> None:
    print(_escape(text))


# --- commands --------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    directory = _existing_folder(args.dir)
    _, reports = maintenance.inspect_folder(directory, max_bytes=args.max_bytes)
    rows = list(reports) if args.json else None
    if args.json:
        assert rows is not None  # set just above
        _emit({"directory": str(directory), "sessions": [r.as_json() for r in rows]})
        return OK
    count = 0
    print(f"{'ID':<32} {'VER':>3} {'MSGS':>6} {'IN':>10} {'OUT':>10} {'SIZE':>9}  MODIFIED  STATUS")
    for report in reports:
        count += 1
        _say(
            f"{_escape(report.session_id or report.name):<32} {_show(report.schema_version):>3} "
            f"{_show(report.messages):>6} {_show(report.input_tokens):>10} "
            f"{_show(report.output_tokens):>10} {_show(report.size):>9}  "
            f"{_when(report.modified)}  {report.status}"
        )
    _say(f"{count} file(s) in {directory}")
    return OK


def _cmd_show(args: argparse.Namespace) -> int:
    store = SessionStore(_existing_folder(args.dir), max_bytes=args.max_bytes)
    try:
        session = store.load(args.id)
    except InvalidSessionIdError:
        raise
    except SessionStoreError as exc:
        # Not found, corrupt, too new, unreadable: the session cannot be shown.
        _error(str(exc))
        return PROBLEMS
    sys.stdout.write(encode(session).decode("utf-8"))
    return OK


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.dsn:
        store = _postgres_store(args, args.dsn, args.table)
        directory: object = store.backend.description
        total, reports = maintenance.inspect_store(store)
    else:
        directory = _existing_folder(args.dir)
        total, reports = maintenance.inspect_folder(directory, max_bytes=args.max_bytes)
    counts: Counter[str] = Counter()
    files = []
    for report in _progress(reports, total, "validate", args):
        counts[report.status] += 1
        if args.json:
            files.append(report.as_json())
        elif report.status != maintenance.CURRENT:
            _say(f"{report.status}: {report.name}: {report.detail}")
    problems = sum(counts[s] for s in maintenance.PROBLEMS)
    if args.json:
        _emit(
            {
                "directory": str(directory),
                "ok": problems == 0,
                "summary": _summary(counts, total),
                "files": files,
            }
        )
    else:
        _say(_summary_line(counts, total, directory))
    return PROBLEMS if problems else OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    dry = args.dry_run or args.check
    backup = Path(args.backup) if args.backup else None
    if args.dsn:
        if backup is not None:
            msg = "--backup works with --dir only; back up a table with pg_dump"
            raise _UsageError(msg)
        store = _postgres_store(args, args.dsn, args.table)
        directory: object = store.backend.description
        total, results = maintenance.migrate_store(store, dry_run=dry)
    else:
        folder = _existing_folder(args.dir)
        if backup is not None and backup.resolve() == folder.resolve():
            msg = "--backup must be another folder than --dir"
            raise _UsageError(msg)
        directory = folder
        total, results = maintenance.migrate_folder(
            folder, dry_run=dry, backup=backup, max_bytes=args.max_bytes
        )
    counts: Counter[str] = Counter()
    files = []
    for report, action in _progress(results, total, "migrate", args):
        counts[action] += 1
        counts[report.status] += 1
        if args.json:
            files.append({**report.as_json(), "action": action})
        elif action in ("migrated", "would migrate"):
            _say(f"{action}: {report.name} ({report.detail})")
        elif action == "skipped":
            _say(f"skipped: {report.status}: {report.name}: {report.detail}")
    problems = sum(counts[s] for s in maintenance.PROBLEMS)
    pending = counts["would migrate"]
    summary = {
        "files": total,
        "migrated": counts["migrated"],
        "would_migrate": pending,
        "unchanged": counts["unchanged"],
        "skipped": counts["skipped"],
    }
    if args.json:
        _emit(
            {
                "directory": str(directory),
                "dry_run": dry,
                "ok": problems == 0 and not (args.check and pending),
                "summary": summary,
                "files": files,
            }
        )
    else:
        verb = "would migrate" if dry else "migrated"
        print(
            f"{total} file(s): {summary['migrated'] or pending} {verb}, "
            f"{summary['unchanged']} already current, {summary['skipped']} skipped (problems)"
        )
    if problems or (args.check and pending):
        return PROBLEMS
    return OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    directory = _existing_folder(args.dir)
    findings = list(
        maintenance.find_debris(directory, grace_seconds=args.grace, max_bytes=args.max_bytes)
    )
    results = []
    unresolved = 0
    for item in _progress(iter(findings), len(findings), "doctor", args):
        action, resolved = "found", item.kind == maintenance.FRESH_TEMP
        if args.fix and not resolved:
            # Each fix re-checks the file under its session's lock first.
            action, resolved = maintenance.remove_debris(item, max_bytes=args.max_bytes)
        unresolved += not resolved
        results.append({**item.as_json(), "action": action})
        if not args.json:
            _say(f"{item.kind}: {item.path}: {item.detail} [{action}]")
    if args.json:
        _emit({"directory": str(directory), "ok": unresolved == 0, "findings": results})
    else:
        kinds = Counter(item.kind for item in findings)
        listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing to fix"
        if args.fix and findings:
            listed += f" ({unresolved} not fixed)" if unresolved else " (fixed)"
        _say(f"{directory}: {listed}")
    return PROBLEMS if unresolved else OK


def _cmd_copy(args: argparse.Namespace) -> int:
    if bool(args.from_dir) == bool(args.from_dsn) or bool(args.to_dir) == bool(args.to_dsn):
        msg = (
            "copy needs one source (--from DIR or --from-dsn DSN) "
            "and one target (--to DIR or --to-dsn DSN)"
        )
        raise _UsageError(msg)
    source: BackendSessionStore = (
        SessionStore(_existing_folder(args.from_dir))
        if args.from_dir
        else _postgres_store(args, args.from_dsn, args.table)
    )
    target: BackendSessionStore = (
        SessionStore(args.to_dir)
        if args.to_dir
        else _postgres_store(args, args.to_dsn, args.table, create=True)
    )
    counts: Counter[str] = Counter()
    results = []
    total = len(source.list())
    for session_id, outcome, detail in _progress(
        maintenance.copy_store(source, target), total, "copy", args
    ):
        counts[outcome] += 1
        if args.json:
            results.append({"session_id": session_id, "outcome": outcome, "detail": detail})
        elif outcome != "copied":
            _say(f"{outcome}: {session_id}: {detail}")
    if args.json:
        _emit(
            {
                "from": source.backend.description,
                "to": target.backend.description,
                "ok": counts["failed"] == 0,
                "summary": {
                    "sessions": total,
                    "copied": counts["copied"],
                    "failed": counts["failed"],
                },
                "sessions": results,
            }
        )
    else:
        print(
            f"{total} session(s): {counts['copied']} copied and verified, "
            f"{counts['failed']} failed "
            f"({source.backend.description} -> {target.backend.description})"
        )
    return PROBLEMS if counts["failed"] else OK


def _postgres_store(
    args: argparse.Namespace, dsn: str, table: str, *, create: bool = False
) -> BackendSessionStore:
    """A store on ``table``, closed when the command ends. Only a copy's target
    table is created (``create``): validate and migrate never run DDL, and a
    missing table is an error."""
    try:
        from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415  # optional extra
    except ImportError as exc:
        msg = f"PostgreSQL support is not installed ({exc}): pip install 'sessionstore[postgres]'"
        raise _UsageError(msg) from None
    try:
        store = PostgresSessionStore(dsn, table=table)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    args.resources.callback(store.close)
    if create:
        store.setup()
    return store


def _cmd_schema_export(args: argparse.Namespace) -> int:
    written = write_schemas(Path(args.out))
    if args.json:
        _emit({"written": [str(p) for p in written]})
    else:
        for path in written:
            _say(f"wrote {path}")
    return OK


def _cmd_schema_check(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        msg = f"no such folder: {folder}"
        raise _UsageError(msg)
    problems = diff_schemas(folder)
    if args.json:
        _emit({"directory": str(folder), "ok": not problems, "problems": problems})
    else:
        for problem in problems:
            _say(problem)
        _say(f"{folder}: " + ("schemas differ from the models" if problems else "schemas match"))
    return PROBLEMS if problems else OK


def _cmd_delete(args: argparse.Namespace) -> int:
    deleted = SessionStore(_existing_folder(args.dir)).delete(args.id)
    if args.json:
        _emit({"session_id": args.id, "deleted": deleted})
    else:
        _say(f"deleted {args.id}" if deleted else f"no session {args.id!r}: nothing deleted")
    return OK if deleted else PROBLEMS


# --- helpers ---------------------------------------------------------------


def _existing_folder(value: str) -> Path:
    folder = Path(value)
    if not folder.is_dir():
        msg = f"no such folder: {folder}" if not folder.exists() else f"not a folder: {folder}"
        raise _UsageError(msg)
    return folder


def _emit(document: dict[str, Any]) -> None:
    text = orjson.dumps(_escaped(document), option=orjson.OPT_INDENT_2).decode()
    sys.stdout.write(text + "\n")


def _escaped(value: object) -> object:
    """``value`` with every string in it (keys too) passed through ``_escape``."""
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, dict):
        return {_escape(str(k)): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    return value


def _show(value: object) -> str:
    return "-" if value is None else str(value)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-".ljust(20)
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(counts: Counter[str], total: int) -> dict[str, int]:
    statuses = [
        maintenance.CURRENT,
        maintenance.NEEDS_MIGRATION,
        maintenance.REPAIRABLE,
        *sorted(maintenance.PROBLEMS),
    ]
    return {"files": total, **{status: counts[status] for status in statuses}}


def _summary_line(counts: Counter[str], total: int, directory: object) -> str:
    parts = [
        f"{n} {status}" for status, n in _summary(counts, total).items() if n and status != "files"
    ]
    return f"{directory}: {total} file(s)" + (": " + ", ".join(parts) if parts else "")


def _progress(
    items: Iterator[_T], total: int, label: str, args: argparse.Namespace
) -> Iterator[_T]:
    """Pass ``items`` through, drawing a progress bar on stderr when it is a terminal."""
    stream: TextIO = sys.stderr
    if args.json or not stream.isatty() or total == 0:
        yield from items
        return
    last = 0.0
    for done, item in enumerate(items, 1):
        now = time.monotonic()
        if now - last > 0.1 or done == total:
            last = now
            filled = int(30 * done / total)
            stream.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
            stream.flush()
        yield item
    stream.write("\n")


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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        default=str(DEFAULT_SESSION_DIR),
        metavar="DIR",
        help=f"folder of sessions (default: {DEFAULT_SESSION_DIR})",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    limit = argparse.ArgumentParser(add_help=False)
    limit.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BYTES,
        metavar="BYTES",
        help="larger files are too large, not read and never quarantined; use the same "
        f"limit as the application's store (default: {DEFAULT_MAX_BYTES})",
    )

    parser = argparse.ArgumentParser(
        prog="sessionstore",
        description="Inspect, validate and migrate folders of sessionstore sessions.",
        epilog="Exit codes: 0 ok, 1 problems found, 2 usage or operational error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    table = argparse.ArgumentParser(add_help=False)
    table.add_argument("--table", default="sessions", help="PostgreSQL table (default: sessions)")
    dsn = argparse.ArgumentParser(add_help=False, parents=[table])
    dsn.add_argument("--dsn", metavar="DSN", help="work on a PostgreSQL table instead of --dir")

    def add(
        name: str, summary: str, example: str, *, parents: Sequence[argparse.ArgumentParser] = ()
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common, *parents],
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    sub = add(
        "ls",
        "list every session file with version, counts, size and time",
        "sessionstore ls --dir .port_sessions",
        parents=[limit],
    )
    sub.set_defaults(handler=_cmd_ls)

    sub = add(
        "show",
        "print a session as JSON, migrated in memory to the current version",
        "sessionstore show chat-42 --dir .port_sessions",
        parents=[limit],
    )
    sub.add_argument("id", help="session id")
    sub.set_defaults(handler=_cmd_show)

    sub = add(
        "validate",
        "check every *.json file; writes nothing (exit 1 on any problem)",
        "sessionstore validate --dir .port_sessions --json",
        parents=[dsn, limit],
    )
    sub.set_defaults(handler=_cmd_validate)

    sub = add(
        "migrate",
        "rewrite older-version files as the current version, atomically",
        "sessionstore migrate --dir .port_sessions --backup backups/2026-11-25",
        parents=[dsn, limit],
    )
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="write nothing; say what would change")
    mode.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any file needs migrating (for CI)",
    )
    sub.add_argument("--backup", metavar="DIR", help="copy each file here before rewriting it")
    sub.set_defaults(handler=_cmd_migrate)

    sub = add(
        "doctor",
        "find stale temp files, stray lock files and corrupt files",
        "sessionstore doctor --dir .port_sessions --fix",
        parents=[limit],
    )
    sub.add_argument(
        "--fix",
        action="store_true",
        help="remove stale temp and stray lock files; move corrupt files to "
        "DIR/.quarantine/ (never deletes session data; each fix re-checks the file "
        "under its session's lock)",
    )
    sub.add_argument(
        "--grace",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="temp files younger than this may belong to a running writer (default: 3600)",
    )
    sub.set_defaults(handler=_cmd_doctor)

    sub = add(
        "delete",
        "delete one session (exit 1 if there was none)",
        "sessionstore delete chat-42 --dir .port_sessions",
    )
    sub.add_argument("id", help="session id")
    sub.set_defaults(handler=_cmd_delete)

    sub = add(
        "copy",
        "copy every session between a folder and a PostgreSQL table, verifying each",
        "sessionstore copy --from .port_sessions --to-dsn postgresql://localhost/app",
        parents=[table],
    )
    sub.add_argument("--from", dest="from_dir", metavar="DIR", help="source folder")
    sub.add_argument("--from-dsn", metavar="DSN", help="source PostgreSQL database")
    sub.add_argument("--to", dest="to_dir", metavar="DIR", help="target folder")
    sub.add_argument("--to-dsn", metavar="DSN", help="target PostgreSQL database")
    sub.set_defaults(handler=_cmd_copy)

    schema = commands.add_parser(
        "schema",
        help="export or check the JSON Schemas",
        description="export or check the JSON Schema of every version",
    )
    schema_commands = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    sub = schema_commands.add_parser(
        "export",
        help="write session.vN.json for every version",
        parents=[common],
        epilog="example:\n  sessionstore schema export --out schemas",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    sub.set_defaults(handler=_cmd_schema_export)
    sub = schema_commands.add_parser(
        "check",
        help="exit 1 when a folder's schemas differ from the models",
        parents=[common],
        epilog="example:\n  sessionstore schema check schemas",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("folder", metavar="DIR")
    sub.set_defaults(handler=_cmd_schema_check)
    return parser
