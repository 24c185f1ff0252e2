"""``sessionstore migrate``: up to the current schema version, or ``--to`` an older one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from sessionstore import maintenance
from sessionstore.cli.common import Context, check_ids, check_owner, file_item
from sessionstore.cli.stores import UsageError, existing_folder, open_store
from sessionstore.maintenance import FileReport
from sessionstore.models import CURRENT_SCHEMA_VERSION

__all__ = ["migrate"]

OK, PROBLEMS = 0, 1

ACTION_WORDS = (
    "migrated",
    "would-migrate",
    "renamed",
    "would-rename",
    "unchanged",
    "refused",
    "conflict",
    "skipped",
)
_NOT_DONE = frozenset({"skipped", "refused", "conflict"})
"""Actions that leave a file not at the target version: the exit code is 1."""
_PENDING = frozenset({"would-migrate", "would-rename"})

Runner = Callable[[bool], tuple[int, Iterator[tuple[FileReport, str]]]]
"""One pass of migrate over the store: ``run(dry_run)``."""


def migrate(ctx: Context) -> int:
    """Rewrite every session not at the target version; report each one."""
    args = ctx.args
    target = ctx.target
    out = ctx.out
    dry = args.dry_run or args.check
    ids = check_ids(args.ids) or None
    to_version: int = args.to
    if ids is not None and args.rename_invalid:
        msg = "--rename-invalid works on the whole folder: name no ids with it"
        raise UsageError(msg)
    if target.kind == "postgres":
        for flag, given in (("--backup", args.backup), ("--rename-invalid", args.rename_invalid)):
            if given:
                msg = f"{flag} works with a folder only (back up a table with pg_dump)"
                raise UsageError(msg)
        store = open_store(target, ctx.resources, max_bytes=args.max_bytes)
        out.start("migrate", ctx.store_json(location=store.backend.description), **_extra(args))

        def run(dry_run: bool) -> tuple[int, Iterator[tuple[FileReport, str]]]:
            return maintenance.migrate_store(
                store, dry_run=dry_run, ids=ids, to_version=to_version, allow_lossy=args.allow_lossy
            )

    else:
        assert target.folder is not None  # a folder target always has one
        folder = existing_folder(target.folder)
        backup = Path(args.backup) if args.backup else None
        if backup is not None and backup.resolve() == folder.resolve():
            msg = "--backup must be another folder than the store's"
            raise UsageError(msg)
        keep_owner = True if dry else check_owner(folder, force=args.force)
        out.start("migrate", ctx.store_json(), **_extra(args))

        def run(dry_run: bool) -> tuple[int, Iterator[tuple[FileReport, str]]]:
            return maintenance.migrate_folder(
                folder,
                dry_run=dry_run,
                backup=backup,
                max_bytes=args.max_bytes,
                ids=ids,
                to_version=to_version,
                allow_lossy=args.allow_lossy,
                rename_invalid=args.rename_invalid,
                keep_owner=keep_owner,
            )

    if to_version < CURRENT_SCHEMA_VERSION and not args.allow_lossy and not dry:
        # A rollback writes nothing unless it loses nothing, anywhere: look first.
        lossy = _lossy(run)
        if lossy:
            return _refuse(ctx, lossy)
    total, results = run(dry)
    with out.progress(total, "migrate"):
        for report, action in results:
            _item(ctx, report, action)
            out.advance()
    summary = out.summary
    not_done = sum(summary[a] for a in _NOT_DONE)
    pending = sum(summary[a] for a in _PENDING)
    ok = not_done == 0 and not (args.check and pending)
    out.finish(ok=ok)
    _close(ctx, dry)
    return OK if ok else PROBLEMS


def _extra(args: object) -> dict[str, object]:
    return {
        "dry_run": bool(getattr(args, "dry_run", False) or getattr(args, "check", False)),
        "to_version": getattr(args, "to", CURRENT_SCHEMA_VERSION),
    }


def _lossy(run: Runner) -> list[FileReport]:
    _, results = run(True)
    return [report for report, action in results if action == "refused"]


def _refuse(ctx: Context, lossy: list[FileReport]) -> int:
    out = ctx.out
    for report in lossy:
        _item(ctx, report, "refused")
    out.finish(ok=False)
    if not out.quiet:
        opts = ctx.target.options(out.redact)
        out.line(
            f"nothing was written: {len(lossy)} session(s) hold fields version {ctx.args.to} "
            "cannot keep (listed above)"
        )
        out.line(
            f"next: sessionstore migrate --to {ctx.args.to} --allow-lossy{opts} writes them "
            "anyway (--backup DIR keeps the old files)"
        )
    return PROBLEMS


def _item(ctx: Context, report: FileReport, action: str) -> None:
    out = ctx.out
    problem = action in _NOT_DONE
    out.summary.add(
        status=report.status, action=action, version=report.schema_version, problem=problem
    )
    text = None
    if problem or out.verbose or (action != "unchanged" and not out.quiet):
        text = _line(ctx, report, action)
    out.item(file_item(report, ctx.target, action=action), text)


def _line(ctx: Context, report: FileReport, action: str) -> str:
    read = "-" if report.schema_version is None else str(report.schema_version)
    versions = f"{read}->{ctx.args.to}" if action in ("migrated", "would-migrate") else read
    name = report.session_id or report.name
    detail = report.detail
    if report.loses:
        detail = f"loses {', '.join(report.loses)}" + (
            "" if action != "refused" else " (--allow-lossy writes it anyway)"
        )
    elif action == "skipped":
        detail = f"{report.status}: {detail}"
    elif report.status == maintenance.NEEDS_MIGRATION:
        detail = ""  # the versions column says it all
    return f"{action:<14} {versions:>5}  {name:<28}  {detail}".rstrip()


def _close(ctx: Context, dry: bool) -> None:
    out = ctx.out
    if out.quiet:
        return
    summary = out.summary
    where = (out.store or {}).get("location", "")
    counts = summary.phrase(ACTION_WORDS) or "nothing to do"
    noun = "file" if ctx.target.kind == "folder" else "row"
    plural = "" if summary.total == 1 else "s"
    out.line(f"{where}: {summary.total} {noun}{plural}: {counts}")
    opts = ctx.target.options(out.redact)
    to = "" if ctx.args.to == CURRENT_SCHEMA_VERSION else f" --to {ctx.args.to}"
    if summary["conflict"]:
        out.line(f"next: sessionstore migrate{to}{opts} (changed while migrating: run it again)")
    elif summary["skipped"]:
        where_next = "doctor" if ctx.target.kind == "folder" else "validate"
        out.line(
            f"next: sessionstore {where_next}{opts} ({summary['skipped']} problem "
            "session(s) were left untouched)"
        )
    elif dry and (summary["would-migrate"] or summary["would-rename"]):
        out.line(f"next: sessionstore migrate{to}{opts}")
