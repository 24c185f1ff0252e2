"""``sessionstore compact``: fold the append records of sessions into their snapshots."""

from __future__ import annotations

from collections.abc import Iterator

from sessionstore import maintenance
from sessionstore.cli.common import Context, check_ids, file_item, ident
from sessionstore.cli.stores import open_store
from sessionstore.maintenance import Compaction

__all__ = ["compact"]

OK, PROBLEMS = 0, 1

ACTION_WORDS = ("compacted", "would-compact", "unchanged", "skipped", "failed")
_NOT_DONE = frozenset({"skipped", "failed"})
"""Actions that leave a session not compacted: the exit code is 1."""


def compact(ctx: Context) -> int:
    """Fold every session's records (or those of the named ids); report each one."""
    args = ctx.args
    out = ctx.out
    target = ctx.target
    ids = check_ids(args.ids) or None
    store = open_store(target, ctx.resources, max_bytes=args.max_bytes)
    results: tuple[int, Iterator[Compaction]]
    if target.kind == "folder":
        assert target.folder is not None  # a folder target always has one
        out.start("compact", ctx.store_json(), dry_run=args.dry_run)
        results = maintenance.compact_folder(
            target.folder, dry_run=args.dry_run, max_bytes=args.max_bytes, ids=ids
        )
    else:
        location = store.backend.description
        out.start("compact", ctx.store_json(location=location), dry_run=args.dry_run)
        results = maintenance.compact_store(store, dry_run=args.dry_run, ids=ids)
    total, done = results
    header = False
    before = after = 0
    with out.progress(total, "compact"):
        for result in done:
            report, action = result.report, result.action
            problem = action in _NOT_DONE
            out.summary.add(
                status=report.status,
                action=action,
                version=report.schema_version,
                problem=problem,
                # Records folded: those of a session left as it was do not count.
                records=report.records if action in ("compacted", "would-compact") else 0,
                torn_bytes=report.torn_bytes,
            )
            if action == "compacted":
                before += report.size or 0
                after += result.size_after or 0
            item = file_item(report, target, action=action)
            item["size_after"] = result.size_after
            show = problem or out.verbose or (action != "unchanged" and not out.quiet)
            if show and not header and not out.quiet:
                out.line(
                    f"{'ACTION':<14} {'RECORDS':>7} {'BEFORE':>9} {'AFTER':>9}  {'ID':<28}  DETAIL"
                )
                header = True
            out.item(item, _line(result) if show else None)
            out.advance()
    summary = out.summary
    ok = summary.problems == 0
    out.finish(ok=ok)
    if not out.quiet:
        _close(ctx, before, after)
    return OK if ok else PROBLEMS


def _line(result: Compaction) -> str:
    report = result.report
    records = "-" if report.records is None else str(report.records)
    size = "-" if report.size is None else str(report.size)
    after = "-" if result.size_after is None else str(result.size_after)
    detail = report.detail
    if result.action == "skipped":
        detail = f"{report.status}: {detail}"
    return (
        f"{result.action:<14} {records:>7} {size:>9} {after:>9}  {ident(report):<28}  {detail}"
    ).rstrip()


def _close(ctx: Context, before: int, after: int) -> None:
    out = ctx.out
    summary = out.summary
    where = (out.store or {}).get("location", "")
    noun = "file" if ctx.target.kind == "folder" else "row"
    plural = "" if summary.total == 1 else "s"
    counts = summary.phrase(ACTION_WORDS) or "nothing to do"
    folded = ""
    if summary["compacted"]:
        folded = f"; {summary.records} record(s) folded, {before} -> {after} bytes"
    elif summary["would-compact"]:
        folded = f"; {summary.records} record(s) would be folded"
    out.line(f"{where}: {summary.total} {noun}{plural}: {counts}{folded}")
    opts = ctx.target.options(out.redact)
    if summary["skipped"]:
        where_next = "doctor" if ctx.target.kind == "folder" else "validate"
        out.line(
            f"next: sessionstore {where_next}{opts} ({summary['skipped']} problem "
            "session(s) were left untouched)"
        )
    elif ctx.args.dry_run and summary["would-compact"]:
        out.line(f"next: sessionstore compact{opts}")
