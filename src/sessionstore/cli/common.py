"""What every command shares: its context, items built from reports, hints, ids."""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionstore import maintenance
from sessionstore.cli.output import Output
from sessionstore.cli.stores import Redactor, Target, UsageError, resolve
from sessionstore.ids import is_valid_session_id
from sessionstore.maintenance import FileReport
from sessionstore.models import CURRENT_SCHEMA_VERSION

__all__ = [
    "Context",
    "check_ids",
    "check_owner",
    "file_item",
    "hints",
    "ident",
    "next_step",
]


@dataclass
class Context:
    """A command's arguments, output, redactor and resources (closed when it ends)."""

    args: argparse.Namespace
    out: Output
    redact: Redactor
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _target: Target | None = None

    @property
    def target(self) -> Target:
        """The store the command works on (see ``stores.resolve``)."""
        if self._target is None:
            self._target = resolve(self.args, self.redact)
        return self._target

    def store_json(
        self, target: Target | None = None, location: str | None = None
    ) -> dict[str, Any]:
        """``{"kind", "location"}`` (and ``table``) of a store, for the report."""
        target = target or self.target
        if target.kind == "folder":
            assert target.folder is not None  # a folder target always has one
            return {"kind": "folder", "location": str(target.folder.absolute())}
        return {"kind": "postgres", "location": location or "", "table": target.table}


def check_ids(ids: list[str]) -> list[str]:
    """``ids`` when every one is a valid session id. Raises ``UsageError`` naming the others."""
    bad = [i for i in ids if not is_valid_session_id(i)]
    if bad:
        msg = (
            f"not a valid session id: {', '.join(repr(b) for b in bad)} (1 to 128 of "
            "A-Z a-z 0-9 _ -, not starting with -)"
        )
        raise UsageError(msg)
    return ids


def check_owner(folder: Path, *, force: bool) -> bool:
    """Whether rewrites must keep each file's owner (always, unless ``force``).

    Raises ``UsageError`` when the user is neither root nor the folder's owner and
    ``force`` is false: the files it rewrote would become that user's.
    """
    euid = os.geteuid()
    owner = folder.stat().st_uid
    if euid in (0, owner):
        return True
    if force:
        return False
    msg = (
        f"you are uid {euid} but {folder} belongs to uid {owner}: files you rewrite would "
        f"become yours and the application's user could lose them; run as uid {owner} "
        "(or as root, which keeps every file's owner and mode), or pass --force"
    )
    raise UsageError(msg)


def ident(report: FileReport) -> str:
    """How a report's session is named on its line: the id, else the file name."""
    return report.session_id or report.name


def file_item(
    report: FileReport, target: Target, *, action: str | None = None, details: bool = True
) -> dict[str, Any]:
    """The report item of one file or row."""
    where = "file" if target.kind == "folder" else "row"
    item: dict[str, Any] = {
        "id": report.session_id,
        where: report.name,
        "status": report.status,
        "schema_version": report.schema_version,
        "action": action,
        "detail": report.detail,
    }
    if details:
        item.update(
            messages=report.messages,
            input_tokens=report.input_tokens,
            output_tokens=report.output_tokens,
            records=report.records,
            torn_bytes=report.torn_bytes,
            size=report.size,
            modified=report.modified,
        )
    if report.loses:
        item["loses"] = list(report.loses)
    if report.new_id is not None:
        item["new_id"] = report.new_id
    return item


def hints(out: Output, target: Target) -> list[str]:
    """One line per kind of problem in the summary: what it is and what to do next."""
    opts = target.options(out.redact)
    folder = target.kind == "folder"
    text = {
        "needs-migration": f"sessionstore migrate{opts} rewrites them as version "
        f"{CURRENT_SCHEMA_VERSION} (--dry-run first to see)",
        "repairable": f"sessionstore migrate{opts} stores their escaped lone surrogates as U+FFFD",
        "corrupt": (
            f"sessionstore doctor --fix{opts} moves them into .quarantine/ (bytes kept)"
            if folder
            else f"look with sessionstore show ID{opts}; a table has no quarantine"
        ),
        "too-new": "written by a newer sessionstore: upgrade sessionstore to read them "
        "(they are never touched)",
        "too-large": "over --max-bytes: pass the application store's max_bytes",
        "invalid-name": f"sessionstore migrate --rename-invalid{opts} (or doctor --rename) "
        "gives each a valid id",
        "not-a-regular-file": "links, FIFOs or folders at a session's name: remove or "
        "replace them by hand",
        "unreadable": "check their permissions (and run as the folder's owner)",
        "not-found": "no session has that id here: check the id and the store",
    }
    found = [
        f"hint: {out.summary[status]} {status}: {advice}"
        for status, advice in text.items()
        if out.summary[status]
    ]
    torn = out.summary.torn_tails
    if torn:
        fix = (
            f"sessionstore doctor --fix{opts} cuts them (the bytes are kept in .quarantine/)"
            if folder
            else f"sessionstore compact{opts} drops them"
        )
        found.append(
            f"hint: {torn} torn tail(s): appends that never finished (never acknowledged; "
            f"loads ignore them): {fix}"
        )
    return found


def next_step(out: Output, target: Target) -> str | None:
    """The command to run next, given what the report found, or None."""
    opts = target.options(out.redact)
    summary = out.summary
    if summary["needs-migration"] or summary["repairable"]:
        return f"next: sessionstore migrate --dry-run{opts}, then sessionstore migrate{opts}"
    if target.kind == "folder" and (summary["corrupt"] or summary["invalid-name"]):
        return f"next: sessionstore doctor{opts}"
    if summary.torn_tails:
        fix = "doctor --fix" if target.kind == "folder" else "compact"
        return f"next: sessionstore {fix}{opts}"
    return None


def summary_line(out: Output, where: str, noun: str, words: tuple[str, ...]) -> str:
    """``<where>: N <noun>(s): 3 current, 1 corrupt`` for the report's summary."""
    total = out.summary.total
    counts = out.summary.phrase(words)
    return f"{where}: {total} {noun}{'' if total == 1 else 's'}" + (f": {counts}" if counts else "")


STATUS_WORDS = (
    maintenance.CURRENT,
    maintenance.NEEDS_MIGRATION,
    maintenance.REPAIRABLE,
    maintenance.CORRUPT,
    maintenance.TOO_NEW,
    maintenance.TOO_LARGE,
    maintenance.INVALID_NAME,
    maintenance.NOT_REGULAR,
    maintenance.UNREADABLE,
    maintenance.NOT_FOUND,
)
"""Every status of a file or row, in the order summaries list them."""
