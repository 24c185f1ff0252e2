"""``sessionstore doctor``: find debris and what does not load; fix, rename, restore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sessionstore import maintenance
from sessionstore.backends.filesystem import classify_name, quarantined_session_id
from sessionstore.cli.common import Context, check_owner
from sessionstore.cli.stores import UsageError, existing_folder, open_store
from sessionstore.errors import ConflictError

__all__ = ["doctor"]

OK, PROBLEMS = 0, 1

_FIXED_BY_FIX = frozenset(
    {maintenance.STALE_TEMP, maintenance.STRAY_LOCK, maintenance.CORRUPT, maintenance.TORN_TAIL}
)
"""Finding kinds ``--fix`` acts on (each re-checked under the session's lock)."""

KIND_WORDS = (
    maintenance.STALE_TEMP,
    maintenance.FRESH_TEMP,
    maintenance.STRAY_LOCK,
    maintenance.TORN_TAIL,
    maintenance.CORRUPT,
    maintenance.INVALID_NAME,
    maintenance.TOO_NEW,
    maintenance.TOO_LARGE,
    maintenance.NOT_REGULAR,
    maintenance.UNREADABLE,
    maintenance.UNSAFE_FOLDER,
)
ACTION_WORDS = ("removed", "cut", "quarantined", "renamed", "restored", "left-alone", "failed")


def doctor(ctx: Context) -> int:
    """Report (and with ``--fix`` / ``--rename`` repair) what is wrong in a store."""
    args = ctx.args
    target = ctx.target
    if args.list_quarantine or args.restore:
        if args.list_quarantine and args.restore:
            msg = "--list-quarantine and --restore: give one"
            raise UsageError(msg)
        if target.kind != "folder":
            msg = (
                "a PostgreSQL table has no quarantine: --list-quarantine and --restore "
                "need a folder"
            )
            raise UsageError(msg)
        assert target.folder is not None  # a folder target always has one
        folder = existing_folder(target.folder)
        ctx.out.start("doctor", ctx.store_json())
        if args.restore:
            return _restore(ctx, folder, args.restore)
        return _list_quarantine(ctx, folder)
    if target.kind == "postgres":
        return _doctor_store(ctx)
    assert target.folder is not None  # a folder target always has one
    folder = existing_folder(target.folder)
    keep_owner = check_owner(folder, force=args.force) if args.rename else True
    ctx.out.start("doctor", ctx.store_json())
    findings = list(
        maintenance.find_debris(folder, grace_seconds=args.grace, max_bytes=args.max_bytes)
    )
    out = ctx.out
    with out.progress(len(findings), "doctor"):
        for finding in findings:
            action, detail, resolved, new_id = _act(ctx, finding, keep_owner)
            _item(ctx, finding, action, detail, resolved, new_id, folder)
            out.advance()
    return _close(ctx)


_HINT = {
    maintenance.STALE_TEMP: "doctor --fix removes it",
    maintenance.STRAY_LOCK: "doctor --fix removes it",
    maintenance.CORRUPT: "doctor --fix moves it into .quarantine/ (bytes kept)",
    maintenance.TORN_TAIL: "doctor --fix cuts it (the bytes are kept in .quarantine/)",
}


def _act(
    ctx: Context, finding: maintenance.Debris, keep_owner: bool
) -> tuple[str | None, str, bool, str | None]:
    """``(action, detail, resolved, new id)`` for one finding, fixing it if asked."""
    args = ctx.args
    kind = finding.kind
    if kind == maintenance.INVALID_NAME and args.rename:
        report, action = maintenance.rename_invalid(
            Path(finding.directory), finding.name, max_bytes=args.max_bytes, keep_owner=keep_owner
        )
        return action, report.detail, action == "renamed", report.new_id
    if args.fix and kind in _FIXED_BY_FIX:
        text, resolved = maintenance.remove_debris(finding, max_bytes=args.max_bytes)
        word, _, why = text.partition(": ")
        if word.startswith("moved to "):
            return "quarantined", text, resolved, None
        if word == "left alone":
            return "left-alone", why, resolved, None
        return word, why or finding.detail, resolved, None
    why = _HINT.get(kind) or maintenance.LEFT_ALONE.get(kind, "")
    if kind == maintenance.INVALID_NAME:
        why = ""  # the finding's detail says whether it loads and what --rename does
    detail = f"{finding.detail}; {why}" if why else finding.detail
    left: str | None = "left-alone" if args.fix and kind not in _FIXED_BY_FIX else None
    return left, detail, kind == maintenance.FRESH_TEMP, None


def _item(  # noqa: PLR0917  # a private helper with two call sites
    ctx: Context,
    finding: maintenance.Debris,
    action: str | None,
    detail: str,
    resolved: bool,
    new_id: str | None,
    folder: Path | None,
) -> None:
    out = ctx.out
    out.summary.add(status=finding.kind, action=action, problem=not resolved)
    where = _relative(finding.path, folder)
    session_id = None
    if finding.kind in (maintenance.STALE_TEMP, maintenance.FRESH_TEMP):
        session_id = classify_name(finding.name).session_id
    elif finding.kind not in (maintenance.INVALID_NAME, maintenance.UNSAFE_FOLDER):
        session_id = finding.name or None
    item: dict[str, Any] = {
        "id": session_id,
        ("file" if folder is not None else "row"): where,
        "status": finding.kind,
        "schema_version": None,
        "action": action,
        "detail": detail,
    }
    if new_id is not None:
        item["new_id"] = new_id
    show = not resolved or out.verbose or (action is not None and not out.quiet)
    done = f"[{action}] " if action else ""
    out.item(item, f"{finding.kind:<18} {where:<36}  {done}{detail}".rstrip() if show else None)


def _relative(path: str, folder: Path | None) -> str:
    if folder is None:
        return path
    base = os.fspath(folder.absolute())
    return path[len(base) + 1 :] if path.startswith(base + os.sep) else path


def _close(ctx: Context) -> int:
    out = ctx.out
    summary = out.summary
    ok = summary.problems == 0
    out.finish(ok=ok)
    if out.quiet:
        return OK if ok else PROBLEMS
    where = (out.store or {}).get("location", "")
    found = summary.phrase(KIND_WORDS) or "nothing to fix"
    done = summary.phrase(ACTION_WORDS)
    out.line(f"{where}: {found}" + (f" ({done})" if done else ""))
    opts = ctx.target.options(out.redact)
    args = ctx.args
    if ctx.target.kind == "folder":
        fixable = (
            sum(summary[k] for k in _FIXED_BY_FIX)
            - summary["removed"]
            - summary["quarantined"]
            - summary["cut"]
        )
        if not args.fix and fixable > 0:
            out.line(f"next: sessionstore doctor --fix{opts}")
        elif not args.rename and summary["invalid-name"]:
            out.line(f"next: sessionstore doctor --rename{opts}")
    return OK if ok else PROBLEMS


def _doctor_store(ctx: Context) -> int:
    store = open_store(ctx.target, ctx.resources, max_bytes=ctx.args.max_bytes)
    ctx.out.start("doctor", ctx.store_json(location=store.backend.description))
    findings = maintenance.find_store_problems(store)
    for finding in findings:
        why = "a table has no quarantine: look with sessionstore show, then delete it"
        detail = finding.detail if not ctx.args.fix else f"{finding.detail}; left alone: {why}"
        action = "left-alone" if ctx.args.fix else None
        _item(ctx, finding, action, detail, False, None, None)
    return _close(ctx)


def _list_quarantine(ctx: Context, folder: Path) -> int:
    out = ctx.out
    for entry in maintenance.list_quarantine(folder):
        out.summary.add(status="in-quarantine")
        item = {
            "id": entry.session_id,
            "file": f"{maintenance.QUARANTINE_DIR_NAME}/{entry.name}",
            "status": "in-quarantine",
            "schema_version": None,
            "action": None,
            "detail": f"{entry.size} bytes",
            "size": entry.size,
            "modified": entry.modified,
        }
        out.item(item, f"{entry.session_id or '-':<28}  {entry.name}  ({entry.size} bytes)")
    out.finish(ok=True)
    if not out.quiet:
        count = out.summary.total
        out.line(
            f"{folder / maintenance.QUARANTINE_DIR_NAME}: {count} file{'' if count == 1 else 's'}"
        )
        if count:
            out.line(
                f"next: sessionstore doctor --restore NAME{ctx.target.options(out.redact)} "
                "moves one back (when its session has no file)"
            )
    return OK


def _restore(ctx: Context, folder: Path, name: str) -> int:
    out = ctx.out
    session_id = quarantined_session_id(name)
    try:
        restored = maintenance.restore_quarantined(folder, name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except ConflictError as exc:
        action, detail, ok = "refused", str(exc), False
    else:
        if restored is None:
            action, detail, ok = "failed", f"no file {name} in the quarantine", False
        else:
            action, detail, ok = "restored", f"moved back to {restored}", True
    out.summary.add(status="in-quarantine", action=action, problem=not ok)
    item = {
        "id": session_id,
        "file": f"{maintenance.QUARANTINE_DIR_NAME}/{name}",
        "status": "in-quarantine",
        "schema_version": None,
        "action": action,
        "detail": detail,
    }
    out.item(item, f"{action}: {name}: {detail}")
    out.finish(ok=ok)
    return OK if ok else PROBLEMS
