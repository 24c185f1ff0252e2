"""The JSON Schema of every schema version: shipped in the package, and generated from the models.

``schema_json(version)`` returns the schema this installed sessionstore ships (the
files ``session.v<N>.json`` beside this module, package data of the wheel).
``generate_schemas`` builds them from the models; ``write_schemas`` and
``diff_schemas`` are what ``sessionstore schema export --out DIR`` and
``sessionstore schema check DIR`` run. The repository keeps the same files in its
top-level ``schemas/`` folder; CI checks both copies against the models.

Reading a shipped schema imports no model; generating imports the models of
every version (``sessionstore.history``) on first use only.
"""

from __future__ import annotations

import errno
import os
import stat
from importlib import resources
from pathlib import Path

from sessionstore.atomic import write_atomic
from sessionstore.models import CURRENT_SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSIONS",
    "diff_schemas",
    "generate_schemas",
    "schema_file_name",
    "schema_json",
    "write_schemas",
]

SCHEMA_VERSIONS = tuple(range(1, CURRENT_SCHEMA_VERSION + 1))
"""Every schema version this sessionstore reads, oldest first; each has a shipped schema."""

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def schema_file_name(version: int) -> str:
    """The file name of the schema of ``version``: ``session.v<version>.json``."""
    return f"session.v{version}.json"


def schema_json(version: int) -> bytes:
    """The JSON Schema (draft 2020-12) of schema ``version``, as shipped in this package.

    The bytes equal what ``generate_schemas`` makes and what ``schema export``
    writes. Raises ``ValueError`` for a version this sessionstore does not know.
    """
    if type(version) is not int or version not in SCHEMA_VERSIONS:
        msg = (
            f"no JSON Schema for schema version {version!r}: this sessionstore knows "
            f"versions {', '.join(map(str, SCHEMA_VERSIONS))}"
        )
        raise ValueError(msg)
    return resources.files(__name__).joinpath(schema_file_name(version)).read_bytes()


def generate_schemas() -> dict[str, bytes]:
    """File name -> JSON Schema bytes, built from the models: the session document of
    every schema version (``session.vN.json``) and the append record of every version
    that has records (``record.vN.json``)."""
    import orjson  # noqa: PLC0415  # generation is rare: keep reading a shipped schema light
    from pydantic import TypeAdapter  # noqa: PLC0415

    # The old models, on demand.
    from sessionstore.history import MODELS, RECORD_MODELS  # noqa: PLC0415

    named = [(schema_file_name(version), model) for version, model in MODELS.items()]
    named += [(f"record.v{version}.json", model) for version, model in RECORD_MODELS.items()]
    out = {}
    for name, model in named:
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **TypeAdapter(model).json_schema(mode="validation"),
        }
        out[name] = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    return out


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if missing); return the paths written.

    Each file is replaced atomically (a new file renamed over the old name), so a
    symbolic link planted at a schema's name is replaced, never written through.
    Raises ``OSError`` when a file cannot be written.
    """
    written = []
    for name, data in generate_schemas().items():
        write_atomic(directory, name, data)
        written.append(directory / name)
    return written


def diff_schemas(directory: Path) -> list[str]:
    """Problems of the schema files in ``directory`` against the models; ``[]`` when they match.

    One line per file that is missing, differs, is not a regular file (a link, a
    FIFO: never followed or opened as a schema) or names a version that has no
    schema. Raises ``OSError`` when a file cannot be read.
    """
    problems = []
    expected = generate_schemas()
    for name, data in expected.items():
        path = directory / name
        current = _read_regular_file(path)
        if current is None:
            problems.append(f"{path}: missing")
        elif isinstance(current, str):
            problems.append(f"{path}: {current}")
        elif current != data:
            problems.append(f"{path}: differs from the models")
    problems.extend(
        f"{path}: no schema version has this name (remove it)"
        for path in sorted([*directory.glob("session.v*.json"), *directory.glob("record.v*.json")])
        if path.name not in expected
    )
    return problems


def _read_regular_file(path: Path) -> bytes | str | None:
    """The bytes of ``path``; None when absent; a description when it is not a regular file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link, not a schema file"
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "is not a regular file"
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read()
    finally:
        os.close(fd)
