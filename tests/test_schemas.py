"""The JSON Schemas: the shipped and checked-in copies are exactly what the models generate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sessionstore.cli import main
from sessionstore.history import MODELS, RECORD_MODELS
from sessionstore.models import CURRENT_SCHEMA_VERSION
from sessionstore.schemas import (
    SCHEMA_VERSIONS,
    diff_schemas,
    generate_schemas,
    schema_file_name,
    schema_json,
    write_schemas,
)

ROOT = Path(__file__).parent.parent
SCHEMAS = ROOT / "schemas"
PACKAGED = ROOT / "src" / "sessionstore" / "schemas"
REGENERATE = (
    "regenerate with `sessionstore schema export --out schemas` and "
    "`sessionstore schema export --out src/sessionstore/schemas`"
)


@pytest.mark.parametrize("folder", [SCHEMAS, PACKAGED], ids=["schemas", "packaged"])
def test_checked_in_schemas_match_the_models(folder: Path) -> None:
    assert diff_schemas(folder) == [], f"{folder} is stale: {REGENERATE}"


def test_there_is_one_schema_per_version() -> None:
    assert sorted(generate_schemas()) == sorted(
        [*(schema_file_name(v) for v in MODELS), *(f"record.v{v}.json" for v in RECORD_MODELS)]
    )
    assert tuple(MODELS) == SCHEMA_VERSIONS == tuple(range(1, CURRENT_SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_schema_json_returns_the_shipped_schema_of_each_version(version: int) -> None:
    data = schema_json(version)
    assert data == generate_schemas()[schema_file_name(version)]
    assert orjson.loads(data)["title"] == f"Session, schema version {version}"


@pytest.mark.parametrize("version", [0, CURRENT_SCHEMA_VERSION + 1, "2", 2.0, True, None])
def test_schema_json_refuses_an_unknown_version(version: object) -> None:
    with pytest.raises(ValueError, match="no JSON Schema for schema version"):
        schema_json(version)  # type: ignore[arg-type]


def test_reading_a_shipped_schema_does_not_build_the_old_models() -> None:
    code = (
        "import sys; from sessionstore.schemas import schema_json; schema_json(1); "
        "print('sessionstore.history' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_schema_of_v2_requires_the_seed_fields_and_forbids_others() -> None:
    schema = orjson.loads(generate_schemas()["session.v2.json"])
    assert set(schema["required"]) == {"session_id", "messages", "input_tokens", "output_tokens"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["input_tokens"]["maximum"] == 2**63 - 1


def test_diff_reports_changed_missing_foreign_and_unexpected_files(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    assert diff_schemas(tmp_path) == []
    (tmp_path / "session.v1.json").write_bytes(b"{}")
    (tmp_path / "session.v2.json").unlink()
    (tmp_path / "session.v2.json").symlink_to(SCHEMAS / "session.v2.json")
    (tmp_path / "session.v9.json").write_bytes(b"{}")
    problems = diff_schemas(tmp_path)
    assert problems == [
        f"{tmp_path / 'session.v1.json'}: differs from the models",
        f"{tmp_path / 'session.v2.json'}: is a symbolic link, not a schema file",
        f"{tmp_path / 'session.v9.json'}: no schema version has this name (remove it)",
    ]
    (tmp_path / "session.v2.json").unlink()
    assert f"{tmp_path / 'session.v2.json'}: missing" in diff_schemas(tmp_path)


def test_check_does_not_open_a_fifo_at_a_schema_name(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    (tmp_path / "session.v2.json").unlink()
    os.mkfifo(tmp_path / "session.v2.json")
    # Opening the FIFO for reading would block until a writer came: it is refused instead.
    assert diff_schemas(tmp_path) == [f"{tmp_path / 'session.v2.json'}: is not a regular file"]


def test_export_replaces_a_planted_symlink_and_leaves_its_target_alone(tmp_path: Path) -> None:
    """Issue 9.21: ``schema export`` wrote through a link planted at a schema's name."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "session.v2.json").symlink_to(victim)
    assert main(["schema", "export", "--out", str(out)]) == 0
    assert victim.read_bytes() == b"precious"
    assert not (out / "session.v2.json").is_symlink()
    assert diff_schemas(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(generate_schemas())


def test_export_creates_the_folder_and_check_finds_a_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "schemas"
    assert main(["schema", "export", "--out", str(out)]) == 0
    assert main(["schema", "check", str(out)]) == 0
    (out / "session.v2.json").write_text("{}")
    capsys.readouterr()
    assert main(["schema", "check", str(out)]) == 1
    assert "session.v2.json: differs from the models" in capsys.readouterr().out


def test_python_m_schemas_is_not_a_command_and_creates_nothing(tmp_path: Path) -> None:
    """Issue 11.5: ``python -m sessionstore.schemas --help`` created a folder named ``--help``."""
    run = subprocess.run(
        [sys.executable, "-m", "sessionstore.schemas", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert list(tmp_path.iterdir()) == []
