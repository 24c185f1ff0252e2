"""JSON Schema of every schema version, generated from the models.

``python -m sessionstore.schemas [DIR]`` writes ``session.v<N>.json`` into DIR
(default ``schemas``); ``--check`` only compares and exits 1 on a difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from pydantic import TypeAdapter

from sessionstore.history import MODELS

__all__ = ["diff_schemas", "generate_schemas", "schema_file_name", "write_schemas"]


def schema_file_name(version: int) -> str:
    """The file name of the schema of ``version``."""
    return f"session.v{version}.json"


def generate_schemas() -> dict[str, bytes]:
    """File name -> JSON Schema bytes, for every schema version."""
    out = {}
    for version, model in MODELS.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **TypeAdapter(model).json_schema(mode="validation"),
        }
        out[schema_file_name(version)] = orjson.dumps(
            schema, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        )
    return out


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if missing); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in generate_schemas().items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


def diff_schemas(directory: Path) -> list[str]:
    """Names of the schema files in ``directory`` that are missing or differ from the models."""
    problems = []
    for name, data in generate_schemas().items():
        path = directory / name
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            problems.append(f"{path}: missing")
            continue
        if current != data:
            problems.append(f"{path}: differs from the models")
    return problems


def _main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [arg for arg in argv if arg != "--check"]
    directory = Path(args[0]) if args else Path("schemas")
    if check:
        problems = diff_schemas(directory)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for path in write_schemas(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
