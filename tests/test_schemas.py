"""The checked-in JSON Schemas are exactly what the models generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from sessionstore.history import MODELS
from sessionstore.schemas import diff_schemas, generate_schemas, schema_file_name, write_schemas

SCHEMAS = Path(__file__).parent.parent / "schemas"


def test_checked_in_schemas_match_the_models() -> None:
    assert diff_schemas(SCHEMAS) == [], (
        "schemas/ is stale: regenerate with `python -m sessionstore.schemas schemas`"
    )


def test_there_is_one_schema_per_version() -> None:
    assert sorted(generate_schemas()) == sorted(schema_file_name(v) for v in MODELS)


def test_schema_of_v2_requires_the_seed_fields_and_forbids_others() -> None:
    schema = orjson.loads(generate_schemas()["session.v2.json"])
    assert set(schema["required"]) == {"session_id", "messages", "input_tokens", "output_tokens"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["input_tokens"]["maximum"] == 2**63 - 1


def test_diff_reports_a_changed_and_a_missing_schema(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    assert diff_schemas(tmp_path) == []
    (tmp_path / "session.v1.json").write_bytes(b"{}")
    (tmp_path / "session.v2.json").unlink()
    problems = diff_schemas(tmp_path)
    assert any("session.v1.json: differs" in p for p in problems)
    assert any("session.v2.json: missing" in p for p in problems)


def test_regenerate_command_writes_and_check_passes(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "sessionstore.schemas"]
    subprocess.run([*run, str(tmp_path)], check=True, capture_output=True)
    assert subprocess.run([*run, "--check", str(tmp_path)], check=False).returncode == 0
    (tmp_path / "session.v2.json").write_text("{}")
    assert (
        subprocess.run(
            [*run, "--check", str(tmp_path)], check=False, capture_output=True
        ).returncode
        == 1
    )
