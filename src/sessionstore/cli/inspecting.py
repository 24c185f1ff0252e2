"""Commands that only read: ``status``, ``history``, ``ls``, ``show``, ``validate``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timezone

import orjson

from sessionstore import maintenance
from sessionstore.cli.common import (
    STATUS_WORDS,
    Context,
    check_ids,
    file_item,
    hints,
    ident,
    next_step,
    summary_line,
)
from sessionstore.cli.stores import open_store
from sessionstore.codec import encode
from sessionstore.errors import InvalidSessionIdError, SessionStoreError
from sessionstore.maintenance import FileReport
from sessionstore.migrations import DESCRIPTIONS, DOWN_DESCRIPTIONS, DOWN_STEPS, STEPS
from sessionstore.models import CURRENT_SCHEMA_VERSION

__all__ = ["history", "ls", "show", "status", "validate"]

OK, PROBLEMS = 0, 1


def _reports(ctx: Context, ids: list[str] | None = None) -> tuple[int, Iterator[FileReport]]:
    """The reports of every file or row of the command's store (or of ``ids``)."""
    target = ctx.target
    store = open_store(target, ctx.resources, max_bytes=ctx.args.max_bytes)
    if target.kind == "folder":
        ctx.out.start(ctx.args.command, ctx.store_json())
        assert target.folder is not None  # a folder target always has one
        return maintenance.inspect_folder(target.folder, max_bytes=ctx.args.max_bytes, ids=ids)
    ctx.out.start(ctx.args.command, ctx.store_json(location=store.backend.description))
    return maintenance.inspect_store(store, ids=ids)


def _where(ctx: Context) -> str:
    store = ctx.out.store or {}
    return str(store.get("location", ""))


def _count(ctx: Context, report: FileReport) -> bool:
    problem = report.status in maintenance.PROBLEMS
    ctx.out.summary.add(
        status=report.status,
        version=report.schema_version,
        problem=problem,
        records=report.records,
        torn_bytes=report.torn_bytes,
    )
    return problem


def _line(report: FileReport) -> str:
    version = "-" if report.schema_version is None else str(report.schema_version)
    return f"{report.status:<18} {version:>3}  {ident(report):<28}  {report.detail}".rstrip()


def _close(ctx: Context) -> None:
    out = ctx.out
    if out.quiet:
        return
    noun = "file" if ctx.target.kind == "folder" else "row"
    out.line(summary_line(out, _where(ctx), noun, STATUS_WORDS))
    for hint in hints(out, ctx.target):
        out.line(hint)
    step = next_step(out, ctx.target)
    if step:
        out.line(step)


def validate(ctx: Context) -> int:
    """Check every session (or the named ones); exit 1 when any does not load."""
    ids = check_ids(ctx.args.ids) or None
    total, reports = _reports(ctx, ids)
    out = ctx.out
    header = False
    with out.progress(total, "validate"):
        for report in reports:
            problem = _count(ctx, report)
            notable = report.status != maintenance.CURRENT or bool(report.torn_bytes)
            show = problem or out.verbose or (notable and not out.quiet)
            if show and not header and not out.quiet:
                out.line(f"{'STATUS':<18} {'VER':>3}  {'ID':<28}  DETAIL")
                header = True
            out.item(file_item(report, ctx.target), _line(report) if show else None)
            out.advance()
    ok = out.summary.problems == 0
    out.finish(ok=ok)
    _close(ctx)
    return OK if ok else PROBLEMS


def status(ctx: Context) -> int:
    """How many sessions at each version, what is wrong, what migrate would do."""
    total, reports = _reports(ctx)
    out = ctx.out
    with out.progress(total, "status"):
        for report in reports:
            _count(ctx, report)
            out.item(file_item(report, ctx.target), _line(report) if out.verbose else None)
            out.advance()
    summary = out.summary
    pending = summary["needs-migration"] + summary["repairable"]
    ok = summary.problems == 0
    out.finish(ok=ok, would_migrate=pending)
    if out.quiet:
        return OK if ok else PROBLEMS
    store = out.store or {}
    out.line(f"store:     {_where(ctx)} ({store.get('kind')})")
    out.line(
        f"writes:    schema version {CURRENT_SCHEMA_VERSION} (reads 1 to "
        f"{CURRENT_SCHEMA_VERSION}; see sessionstore history)"
    )
    label = "files:" if ctx.target.kind == "folder" else "rows:"
    out.line(f"{label:<11}{summary.total}")
    for version, count in sorted(summary.versions.items()):
        state = "current" if version == CURRENT_SCHEMA_VERSION else "older: migrate rewrites them"
        out.line(f"  version {version}: {count:>8}  {state}")
    problems = summary.phrase(tuple(s for s in STATUS_WORDS if s in maintenance.PROBLEMS))
    if problems:
        out.line(f"  problems:  {summary.problems:>8}  {problems}")
    opts = ctx.target.options(out.redact)
    if summary.records:
        out.line(
            f"  records:   {summary.records:>8}  appended, not folded yet (they fold by "
            f"themselves; sessionstore compact{opts} folds them now)"
        )
    if summary.torn_tails:
        out.line(
            f"  torn tails:{summary.torn_tails:>8}  file(s) end in an append that never "
            "finished (loads ignore it)"
        )
    if pending:
        skipped = f", skip {summary.problems} problem file(s)" if summary.problems else ""
        out.line(f"migrate would rewrite {pending} as version {CURRENT_SCHEMA_VERSION}{skipped}")
    elif not summary.problems:
        out.line("migrate would do nothing: every session is current")
    for hint in hints(out, ctx.target):
        out.line(hint)
    step = next_step(out, ctx.target)
    if step:
        out.line(step)
    return OK if ok else PROBLEMS


def history(ctx: Context) -> int:
    """The schema versions this sessionstore knows and the steps between them."""
    out = ctx.out
    out.start("history", None)
    out.line(
        f"schema versions (this sessionstore writes {CURRENT_SCHEMA_VERSION}, reads 1 to "
        f"{CURRENT_SCHEMA_VERSION}):"
    )
    for version in range(CURRENT_SCHEMA_VERSION, 0, -1):
        state = "current" if version == CURRENT_SCHEMA_VERSION else "older"
        up = STEPS.get(version)
        down = DOWN_STEPS.get(version)
        out.summary.add(status="current" if state == "current" else None, version=version)
        item = {
            "id": None,
            "schema_version": version,
            "status": state,
            "action": None,
            "detail": DESCRIPTIONS.get(version, ""),
            "upgrade_to": version + 1 if up is not None else None,
            "downgrade_to": version - 1 if down is not None else None,
            "downgrade_detail": DOWN_DESCRIPTIONS.get(version) if down is not None else None,
        }
        marker = "(current)" if state == "current" else ""
        out.item(item, f"  v{version} {marker:<9} {DESCRIPTIONS.get(version, '')}")
    out.line("steps:")
    for version in sorted(STEPS):
        out.line(f"  {version} -> {version + 1}  sessionstore migrate (on load, in memory)")
    for version in sorted(DOWN_STEPS, reverse=True):
        out.line(
            f"  {version} -> {version - 1}  sessionstore migrate --to {version - 1}: "
            f"{DOWN_DESCRIPTIONS.get(version, '')}"
        )
    out.finish(ok=True)
    return OK


def ls(ctx: Context) -> int:
    """Every session file (or row) with its version, counts, size, time and status."""
    total, reports = _reports(ctx)
    out = ctx.out
    if not out.quiet:
        out.line(
            f"{'ID':<28} {'VER':>3} {'MSGS':>6} {'IN':>10} {'OUT':>10} {'SIZE':>9}  "
            f"{'MODIFIED':<20}  STATUS"
        )
    with out.progress(total, "ls"):
        for report in reports:
            problem = _count(ctx, report)
            text = (
                f"{ident(report):<28} {_show(report.schema_version):>3} "
                f"{_show(report.messages):>6} {_show(report.input_tokens):>10} "
                f"{_show(report.output_tokens):>10} {_show(report.size):>9}  "
                f"{_when(report.modified):<20}  {report.status}"
            )
            out.item(file_item(report, ctx.target), text if problem or not out.quiet else None)
            out.advance()
    out.finish(ok=True)
    if not out.quiet:
        out.line(
            summary_line(
                out, _where(ctx), "file" if ctx.target.kind == "folder" else "row", STATUS_WORDS
            )
        )
    return OK


def show(ctx: Context) -> int:
    """Print one session, migrated in memory to the current version."""
    out = ctx.out
    target = ctx.target
    store = open_store(target, ctx.resources, max_bytes=ctx.args.max_bytes)
    location = None if target.kind == "folder" else store.backend.description
    out.start("show", ctx.store_json(location=location))
    session_id = ctx.args.id
    check_ids([session_id])
    where = "file" if target.kind == "folder" else "row"
    name = (
        f"{session_id}.json" if target.kind == "folder" else str(store.backend.location(session_id))
    )
    try:
        session = store.load(session_id)
    except InvalidSessionIdError:
        raise
    except SessionStoreError as exc:
        # Not found, corrupt, too new, unreadable: the session cannot be shown.
        state = _status_of(exc)
        out.summary.add(status=state, problem=True)
        out.item(
            {
                "id": session_id,
                where: name,
                "status": state,
                "schema_version": None,
                "action": None,
                "detail": str(exc),
            }
        )
        out.finish(ok=False)
        if out.text:
            sys.stderr.write(f"error: {out.clean(str(exc))}\n")
        return PROBLEMS
    document = encode(session)
    out.summary.add(status=maintenance.CURRENT, version=session.schema_version)
    out.item(
        {
            "id": session_id,
            where: name,
            "status": maintenance.CURRENT,
            "schema_version": session.schema_version,
            "action": None,
            "detail": "",
            "session": orjson.loads(document),
        }
    )
    out.finish(ok=True)
    if out.text:
        sys.stdout.write(out.redact(document.decode("utf-8")))
    return OK


def _status_of(exc: SessionStoreError) -> str:
    from sessionstore.errors import (  # noqa: PLC0415
        CorruptSessionError,
        NotARegularFileError,
        SchemaVersionError,
        SessionNotFoundError,
        SessionTooLargeError,
    )

    for cls, state in (
        (SessionNotFoundError, maintenance.NOT_FOUND),
        (SchemaVersionError, maintenance.TOO_NEW),
        (SessionTooLargeError, maintenance.TOO_LARGE),
        (NotARegularFileError, maintenance.NOT_REGULAR),
        (CorruptSessionError, maintenance.CORRUPT),
    ):
        if isinstance(exc, cls):
            return state
    return maintenance.UNREADABLE


def _show(value: object) -> str:
    return "-" if value is None else str(value)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
