"""Commands that change a store as a whole: ``copy``, ``delete``, ``setup``, ``schema``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sessionstore import maintenance
from sessionstore.cli.common import Context, check_ids
from sessionstore.cli.stores import Target, UsageError, open_store
from sessionstore.schemas import diff_schemas, write_schemas
from sessionstore.store import DEFAULT_MAX_BYTES

__all__ = ["copy", "delete", "schema_check", "schema_export", "setup"]

OK, PROBLEMS = 0, 1

COPY_WORDS = (
    "copied",
    "would-copy",
    "identical",
    "overwritten",
    "would-overwrite",
    "refused",
    "failed",
)


def _end(ctx: Context, flag: str, directory: str | None, dsn: str | None) -> Target:
    if (directory is not None and dsn is not None) or (directory is None and dsn is None):
        msg = (
            "copy needs one source (--from DIR or --from-dsn DSN) "
            "and one target (--to DIR or --to-dsn DSN)"
        )
        raise UsageError(msg)
    table = getattr(ctx.args, "table", None) or "sessions"
    if dsn is not None:
        ctx.redact.add_dsn(dsn)
        if not dsn.strip():
            msg = f"{flag}-dsn is empty: give a PostgreSQL connection string"
            raise UsageError(msg)
        return Target("postgres", dsn=dsn, table=table, source="option")
    if not directory:
        msg = f"{flag} is empty: give a folder"
        raise UsageError(msg)
    return Target("folder", folder=Path(directory), source="option")


def copy(ctx: Context) -> int:
    """Copy sessions between stores, refusing to overwrite different ones by default."""
    args = ctx.args
    out = ctx.out
    source_end = _end(ctx, "--from", args.from_dir, args.from_dsn)
    target_end = _end(ctx, "--to", args.to_dir, args.to_dsn)
    max_bytes = getattr(args, "max_bytes", None) or DEFAULT_MAX_BYTES
    source = open_store(source_end, ctx.resources, max_bytes=max_bytes)
    target = open_store(target_end, ctx.resources, max_bytes=max_bytes, must_exist=False)
    if target_end.kind == "postgres" and not args.dry_run:
        _setup(target)  # idempotent; the only command besides setup that creates a table
    source_json = _store_json(ctx, source_end, source.backend.description)
    target_json = _store_json(ctx, target_end, target.backend.description)
    out.start("copy", source_json, target=target_json, dry_run=args.dry_run)
    ids = check_ids(args.ids) or source.list()
    where = "file" if source_end.kind == "folder" else "row"
    with out.progress(len(ids), "copy"):
        for session_id, action, detail in maintenance.copy_store(
            source, target, ids=ids, overwrite=args.overwrite, dry_run=args.dry_run
        ):
            problem = action in ("refused", "failed")
            out.summary.add(action=action, problem=problem)
            name = (
                f"{session_id}.json"
                if source_end.kind == "folder"
                else str(source.backend.location(session_id))
            )
            item: dict[str, Any] = {
                "id": session_id,
                where: name,
                "status": None,
                "schema_version": None,
                "action": action,
                "detail": detail,
            }
            show = (
                problem or out.verbose or (action not in ("copied", "identical") and not out.quiet)
            )
            out.item(item, f"{action:<16} {session_id:<28}  {detail}".rstrip() if show else None)
            out.advance()
    summary = out.summary
    ok = summary.problems == 0
    out.finish(ok=ok)
    if not out.quiet:
        counts = summary.phrase(COPY_WORDS) or "nothing to copy"
        out.line(
            f"{summary.total} session(s): {counts} "
            f"({source_json['location']} -> {target_json['location']})"
        )
        if summary["refused"] and not args.overwrite:
            out.line("next: compare them with sessionstore show; --overwrite replaces them")
    return OK if ok else PROBLEMS


def _setup(store: object) -> None:
    """``setup()`` of the PostgreSQL store that ``open_store`` opened for a table."""
    setup = getattr(store, "setup", None)
    if setup is None:  # pragma: no cover - open_store gives a table a PostgresSessionStore
        msg = f"{store!r} cannot create its storage"
        raise TypeError(msg)
    setup()


def _store_json(ctx: Context, end: Target, description: str) -> dict[str, Any]:
    return ctx.store_json(end, location=description)


def delete(ctx: Context) -> int:
    """Delete one session; exit 1 when there was none."""
    out = ctx.out
    target = ctx.target
    session_id = ctx.args.id
    check_ids([session_id])
    store = open_store(target, ctx.resources, max_bytes=ctx.args.max_bytes)
    location = None if target.kind == "folder" else store.backend.description
    out.start("delete", ctx.store_json(location=location))
    deleted = store.delete(session_id)
    where = "file" if target.kind == "folder" else "row"
    name = (
        f"{session_id}.json" if target.kind == "folder" else str(store.backend.location(session_id))
    )
    status = "current" if deleted else maintenance.NOT_FOUND
    action = "deleted" if deleted else None
    out.summary.add(status=None if deleted else status, action=action, problem=not deleted)
    detail = "" if deleted else "no such session: nothing deleted"
    item = {
        "id": session_id,
        where: name,
        "status": None if deleted else status,
        "schema_version": None,
        "action": action,
        "detail": detail,
    }
    text = f"deleted {session_id}" if deleted else f"no session {session_id!r}: nothing deleted"
    out.item(item, text)
    out.finish(ok=deleted)
    return OK if deleted else PROBLEMS


def setup(ctx: Context) -> int:
    """Create the PostgreSQL table (idempotent)."""
    out = ctx.out
    target = ctx.target
    if target.kind != "postgres":
        msg = (
            "setup creates a PostgreSQL table: give --dsn (or set SESSIONSTORE_DSN); "
            "a folder needs no setup (the first save creates it)"
        )
        raise UsageError(msg)
    store = open_store(target, ctx.resources, max_bytes=ctx.args.max_bytes)
    out.start("setup", ctx.store_json(location=store.backend.description))
    _setup(store)
    out.finish(ok=True)
    if not out.quiet:
        out.line(f"{store.backend.description}: ready (created if it was missing)")
    return OK


def schema_export(ctx: Context) -> int:
    """Write the JSON Schema of every version into a folder."""
    out = ctx.out
    folder = Path(ctx.args.out)
    out.start("schema export", {"kind": "folder", "location": str(folder.absolute())})
    for path in write_schemas(folder):
        out.summary.add(action="written")
        item = {
            "id": None,
            "file": path.name,
            "status": None,
            "schema_version": None,
            "action": "written",
            "detail": "",
        }
        out.item(item, f"wrote {path}")
    out.finish(ok=True)
    return OK


def schema_check(ctx: Context) -> int:
    """Compare a folder of JSON Schemas with the models; exit 1 when they differ."""
    out = ctx.out
    folder = Path(ctx.args.folder)
    if not folder.is_dir():
        msg = f"no such folder: {folder}"
        raise UsageError(msg)
    out.start("schema check", {"kind": "folder", "location": str(folder.absolute())})
    for problem in diff_schemas(folder):
        out.summary.add(problem=True)
        name, _, detail = problem.partition(": ")
        item = {
            "id": None,
            "file": Path(name).name,
            "status": None,
            "schema_version": None,
            "action": None,
            "detail": detail,
        }
        out.item(item, problem)
    ok = out.summary.problems == 0
    out.finish(ok=ok)
    if not out.quiet:
        out.line(
            f"{folder}: " + ("schemas match the models" if ok else "schemas differ from the models")
        )
    return OK if ok else PROBLEMS
