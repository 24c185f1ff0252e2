"""The ``sessionstore`` command: inspect, validate, migrate and repair stores of sessions.

``main(argv) -> int`` returns the exit code: 0 ok, 1 problems found, 2 usage or
operational error (bad arguments, a missing folder or table, an unexpected
error), 130 interrupted (Ctrl-C). Errors are one line on stderr, never a
traceback; under ``--json`` or ``--json-lines`` they are also JSON on stdout.

The package, one job per module: ``options`` (the parser), ``stores`` (which
store, and keeping passwords out of the output), ``output`` (the one report
shape, as text, JSON or JSON lines), ``progress`` (the bar), and the commands:
``inspecting`` (status, history, ls, show, validate), ``migrating`` (migrate),
``compacting`` (compact), ``doctoring`` (doctor) and ``managing`` (copy, delete,
setup, schema).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from sessionstore.cli import compacting, doctoring, inspecting, managing, migrating
from sessionstore.cli.common import Context
from sessionstore.cli.options import Parser, build_parser
from sessionstore.cli.output import Output
from sessionstore.cli.stores import DSN_ENV, Redactor, UsageError
from sessionstore.errors import InvalidSessionIdError, SessionStoreError

__all__ = ["main"]

OK, PROBLEMS, ERROR, INTERRUPTED = 0, 1, 2, 130

HANDLERS = {
    "status": inspecting.status,
    "history": inspecting.history,
    "ls": inspecting.ls,
    "show": inspecting.show,
    "validate": inspecting.validate,
    "migrate": migrating.migrate,
    "compact": compacting.compact,
    "doctor": doctoring.doctor,
    "copy": managing.copy,
    "delete": managing.delete,
    "setup": managing.setup,
    "schema export": managing.schema_export,
    "schema check": managing.schema_check,
}

_INTERRUPTED = (
    "stopped by Ctrl-C; nothing is half-written (every file or row is old or new): "
    "run the command again to finish"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    ``--help``, ``--version`` and argument errors raise ``SystemExit`` (0, 0 and 2)
    as argparse does; everything else returns the exit code.
    """
    for stream in (sys.stdout, sys.stderr):
        # A character the terminal's encoding cannot show is printed as an escape,
        # never raised as UnicodeEncodeError.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    words = list(sys.argv[1:] if argv is None else argv)
    redact = _redactor(words)
    mode = "jsonl" if "--json-lines" in words else "json" if "--json" in words else "text"
    out = Output(mode=mode, redact=redact)
    out.command = _command_in(words)
    Parser.on_error = None if mode == "text" else lambda text: out.error("usage", text, ERROR)
    try:
        args = build_parser(HANDLERS).parse_args(words)
    finally:
        Parser.on_error = None
    if getattr(args, "schema_command", None):
        args.command = f"schema {args.schema_command}"
    out.command = args.command
    ctx = Context(args, out, redact)
    try:
        if args.json and args.json_lines:
            raise UsageError("--json and --json-lines: give one")  # noqa: TRY301
        if args.quiet and args.verbose:
            raise UsageError("--quiet and --verbose: give one")  # noqa: TRY301
        out.quiet, out.verbose = args.quiet, args.verbose
        with ctx.resources:
            code: int = HANDLERS[args.command](ctx)
    except (UsageError, InvalidSessionIdError) as exc:
        out.error("usage", str(exc), ERROR)
        return ERROR
    except KeyboardInterrupt:
        out.error("interrupted", _INTERRUPTED, INTERRUPTED)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): nothing left to say, and nothing to
        # flush into the closed pipe at exit either.
        _silence_stdout()
        return OK
    except (SessionStoreError, OSError) as exc:
        out.error("operational", str(exc), ERROR)
        return ERROR
    except Exception as exc:  # any other failure: one line, exit 2, no traceback
        message = (
            f"unexpected {type(exc).__name__}: {exc} (a bug in sessionstore: please report it)"
        )
        out.error("unexpected", message, ERROR)
        return ERROR
    return code


def _command_in(words: list[str]) -> str | None:
    """The command named in ``words`` (for an error before it is parsed), or None."""
    for index, word in enumerate(words):
        if word == "schema" and index + 1 < len(words):
            name = f"schema {words[index + 1]}"
            return name if name in HANDLERS else None
        if word in HANDLERS:
            return word
    return None


def _redactor(words: list[str]) -> Redactor:
    """A redactor that knows every DSN on the command line and in the environment."""
    redact = Redactor()
    redact.add_dsn(os.environ.get(DSN_ENV))
    flags = ("--dsn", "--from-dsn", "--to-dsn")
    for index, word in enumerate(words):
        if word in flags and index + 1 < len(words):
            redact.add_dsn(words[index + 1])
        elif word.startswith(tuple(f"{flag}=" for flag in flags)):
            redact.add_dsn(word.partition("=")[2])
    return redact


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
