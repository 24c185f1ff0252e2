"""Which store a command works on (a folder or a PostgreSQL table), and keeping
passwords out of everything it prints.

The store comes from ``--dir`` or ``--dsn`` (with ``--table``), else from the
environment (``SESSIONSTORE_DIR``, ``SESSIONSTORE_DSN``: a password in the DSN then
stays out of ``ps`` and the shell's history), else the default folder
``.port_sessions``. Naming two stores (``--dir`` and ``--dsn``, or both variables
and neither option) or an empty ``--dsn ""`` is a usage error, never a silent choice.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sessionstore.store import DEFAULT_SESSION_DIR, BackendSessionStore, SessionStore

__all__ = [
    "DIR_ENV",
    "DSN_ENV",
    "Redactor",
    "Target",
    "UsageError",
    "existing_folder",
    "open_store",
    "postgres_install_hint",
    "resolve",
]

DIR_ENV = "SESSIONSTORE_DIR"
DSN_ENV = "SESSIONSTORE_DSN"


class UsageError(Exception):
    """A mistake in the command line that argparse cannot see (exit code 2)."""


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s]*@")
# An unquoted value stops at a quote too: in a shell-quoted DSN ('... password=x') the
# closing quote is the shell's, and must stay for the command to be pasted back.
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)")


class Redactor:
    """Removes every password of the DSNs a command was given from any text.

    Whatever the text (a driver's error, a libpq message quoting the connection
    string), ``user:secret@`` in a URL and ``password=secret`` become ``***``, and
    each known password (4 characters or more; shorter ones would blank out
    ordinary words) is replaced wherever it appears.
    """

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add_dsn(self, dsn: str | None) -> None:
        """Remember the password of ``dsn`` (a URL or ``key=value`` connection string)."""
        if not dsn:
            return
        with contextlib.suppress(ValueError):
            password = urlsplit(dsn).password
            if password:
                self.secrets.update({password, unquote(password)})
        for match in _KEYWORD_PASSWORD.finditer(dsn):
            value = match[2]
            self.secrets.add(value)
            if value.startswith("'") and value.endswith("'"):
                self.secrets.add(value[1:-1].replace("\\'", "'").replace("\\\\", "\\"))

    def __call__(self, text: str) -> str:
        text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
        text = _KEYWORD_PASSWORD.sub(r"\g<head>***", text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class Target:
    """The store a command works on."""

    kind: str
    """``folder`` or ``postgres``."""
    folder: Path | None = None
    dsn: str | None = None
    table: str = "sessions"
    source: str = "default"
    """How it was named: ``option``, ``environment`` or ``default``."""

    def options(self, redact: Callable[[str], str]) -> str:
        """The options that name this store in a suggested next command ('' when the
        environment or the default names it)."""
        if self.source != "option":
            return ""
        if self.kind == "folder":
            return f" --dir {shlex.quote(str(self.folder))}"
        table = f" --table {self.table}" if self.table != "sessions" else ""
        return f" --dsn {shlex.quote(redact(self.dsn or ''))}{table}"


def resolve(args: Any, redact: Redactor) -> Target:
    """The store named by ``args.dir``, ``args.dsn``, ``args.table`` and the environment.

    Raises ``UsageError`` for an empty ``--dsn``, for two stores named at once, and
    for ``--table`` without a table to apply to.
    """
    given_dir: str | None = args.dir
    given_dsn: str | None = args.dsn
    table: str | None = args.table
    env_dir = os.environ.get(DIR_ENV) or None
    env_dsn = os.environ.get(DSN_ENV) or None
    redact.add_dsn(given_dsn)
    redact.add_dsn(env_dsn)
    if given_dsn is not None and not given_dsn.strip():
        msg = (
            "--dsn is empty: give a PostgreSQL connection string (or set "
            f"{DSN_ENV}), or use --dir for a folder"
        )
        raise UsageError(msg)
    if given_dir is not None and not given_dir:
        msg = "--dir is empty: give a folder"
        raise UsageError(msg)
    if given_dir is not None and given_dsn is not None:
        msg = "--dir and --dsn name two stores: give one (a folder or a PostgreSQL table)"
        raise UsageError(msg)
    if given_dir is not None:
        target = Target("folder", folder=Path(given_dir), source="option")
    elif given_dsn is not None:
        target = Target("postgres", dsn=given_dsn, table=table or "sessions", source="option")
    elif env_dir and env_dsn:
        msg = (
            f"both {DIR_ENV} and {DSN_ENV} are set: unset one, or say which store with "
            "--dir or --dsn"
        )
        raise UsageError(msg)
    elif env_dsn:
        target = Target("postgres", dsn=env_dsn, table=table or "sessions", source="environment")
    elif env_dir:
        target = Target("folder", folder=Path(env_dir), source="environment")
    else:
        target = Target("folder", folder=DEFAULT_SESSION_DIR)
    if target.kind == "folder" and table is not None:
        msg = "--table names a PostgreSQL table: it needs --dsn (or SESSIONSTORE_DSN)"
        raise UsageError(msg)
    return target


def existing_folder(folder: Path) -> Path:
    """``folder`` if it is a folder. Raises ``UsageError`` when it is missing or not one."""
    if not folder.is_dir():
        msg = f"no such folder: {folder}" if not folder.exists() else f"not a folder: {folder}"
        raise UsageError(msg)
    return folder


def open_store(
    target: Target,
    resources: contextlib.ExitStack,
    *,
    max_bytes: int,
    must_exist: bool = True,
) -> BackendSessionStore:
    """A store on ``target``, closed when ``resources`` closes. A folder must exist
    unless ``must_exist`` is false; a table is never created here (``setup`` does).
    Raises ``UsageError``."""
    if target.kind == "folder":
        assert target.folder is not None  # a folder target always has one
        folder = existing_folder(target.folder) if must_exist else target.folder
        return SessionStore(folder, max_bytes=max_bytes)
    try:
        from sessionstore.postgres import PostgresSessionStore  # noqa: PLC0415  # optional extra
    except ImportError as exc:
        msg = f"PostgreSQL support is not installed ({exc}); {postgres_install_hint()}"
        raise UsageError(msg) from None
    try:
        store = PostgresSessionStore(target.dsn or "", table=target.table, max_bytes=max_bytes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    resources.callback(store.close)
    return store


def postgres_install_hint() -> str:
    """How to install the ``postgres`` extra, for this installation.

    sessionstore is not on a package index yet, so ``pip install
    'sessionstore[postgres]'`` fails; from a checkout the extra installs with the
    checkout's path. When this copy was installed from a folder, that folder is named.
    """
    checkout = _installed_from()
    where = shlex.quote(f"{checkout}[postgres]") if checkout else "'.[postgres]'"
    hint = f"install the postgres extra: python -m pip install {where}"
    if not checkout:
        hint += " (run in a checkout of sessionstore)"
    return hint + "; once sessionstore is published: python -m pip install 'sessionstore[postgres]'"


def _installed_from() -> str | None:
    """The folder this sessionstore was installed from (pip's ``direct_url.json``), if any."""
    try:
        text = metadata.distribution("sessionstore").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    url = record.get("url", "") if isinstance(record, dict) else ""
    if not url.startswith("file://") or "dir_info" not in record:
        return None
    return unquote(urlsplit(url).path)
