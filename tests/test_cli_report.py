"""The one report shape: every command's ``--json`` and ``--json-lines`` output is
checked against the JSON Schema published in docs/cli.md; errors are JSON too; the
options, environment variables and exit codes people rely on."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sessionstore import SessionStore, StoredSession, maintenance
from sessionstore.cli import main
from tests.test_cli import copy_refused

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"
CORPUS = Path(__file__).parent / "corpus"
REFUSED = Path(__file__).parent / "corpus_refused"


def published_schema() -> dict[str, Any]:
    text = DOCS.read_text()
    match = re.search(r"<!-- schema:report -->\n```json\n(.*?)\n```", text, re.S)
    assert match, "docs/cli.md has the report's JSON Schema after <!-- schema:report -->"
    schema: dict[str, Any] = json.loads(match[1])
    return schema


SCHEMA = published_schema()
REPORT = jsonschema.Draft202012Validator(SCHEMA)
LINE = jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/line"})


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Seed files, older files, a corrupt and a too-new one, an invalid name, and a
    current file with two append records and a torn tail."""
    folder = tmp_path / "store"
    shutil.copytree(CORPUS, folder)
    copy_refused(folder)
    sessions = SessionStore(folder)
    sessions.save(StoredSession("v3-log", ("hello",), 1, 1))
    sessions.append("v3-log", ["one"], input_tokens=1, key="k1")
    sessions.append("v3-log", ["two"], output_tokens=1, key="k2")
    with (folder / "v3-log.json").open("ab") as file:
        file.write(b'{"seq":3,"prev":"')
    (folder / "my.session.json").write_text(
        '{"session_id": "my.session", "messages": ["hi"], "input_tokens": 1, "output_tokens": 1}'
    )
    return folder


def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    document: dict[str, Any] = json.loads(out)
    REPORT.validate(document)
    assert document["ok"] is (code == 0)
    assert "Traceback" not in err
    return code, document


def lines(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    code = main([*argv, "--json-lines"])
    out, _ = capsys.readouterr()
    parsed = [json.loads(line) for line in out.splitlines()]
    for line in parsed:
        LINE.validate(line)
    return code, parsed


def commands(folder: Path, tmp_path: Path) -> list[list[str]]:
    d = ["--dir", str(folder)]
    return [
        ["status", *d],
        ["history"],
        ["ls", *d],
        ["show", "v2-full", *d],
        ["show", "ghost", *d],
        ["validate", *d],
        ["validate", "v2-full", "ghost", *d],
        ["migrate", "--dry-run", *d],
        ["migrate", "--to", "1", "--dry-run", *d],
        ["migrate", "--rename-invalid", *d],
        ["compact", "--dry-run", *d],
        ["doctor", *d],
        ["doctor", "--fix", *d],
        ["doctor", "--list-quarantine", *d],
        ["compact", *d],
        ["copy", "--from", str(folder), "--to", str(tmp_path / "copy")],
        ["delete", "v2-minimal", *d],
        ["schema", "export", "--out", str(tmp_path / "schemas")],
        ["schema", "check", str(tmp_path / "schemas")],
    ]


def test_every_commands_report_follows_the_published_schema(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    seen = set()
    for argv in commands(store, tmp_path):
        code, document = report(capsys, *argv)
        assert code in (0, 1), argv
        assert document["command"] == " ".join(argv[:2]) if argv[0] == "schema" else argv[0]
        assert document["current_schema_version"] == 3
        assert document["summary"]["total"] == len(document["items"]), argv
        seen.add(document["command"])
    assert len(seen) == 12  # every command but setup, which needs PostgreSQL


def test_every_commands_json_lines_follow_the_published_schema(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    for argv in commands(store, tmp_path):
        code, parsed = lines(capsys, *argv)
        assert parsed[0]["type"] == "header"
        assert parsed[-1]["type"] == "summary"
        assert {p["type"] for p in parsed[1:-1]} <= {"item"}
        assert parsed[-1]["summary"]["total"] == len(parsed) - 2
        assert parsed[-1]["ok"] is (code == 0)


def test_json_lines_writes_each_item_before_the_scan_ends(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A 20,000-file folder must not build a 6 MB document first: each item is on
    # stdout (flushed) before the next file is even inspected.
    folder = tmp_path / "big"
    store = SessionStore(folder, durable=False)
    for i in range(20):
        store.save(StoredSession(f"s-{i:02d}", ("m",), 0, 0))
    real = maintenance.inspect_folder
    printed_before_next: list[int] = []

    def watched(*args: Any, **kwargs: Any) -> tuple[int, Iterator[maintenance.FileReport]]:
        total, reports = real(*args, **kwargs)

        def each() -> Iterator[maintenance.FileReport]:
            for index, item in enumerate(reports):
                if index:
                    printed_before_next.append(capsys.readouterr().out.count('"type":"item"'))
                yield item

        return total, each()

    monkeypatch.setattr(maintenance, "inspect_folder", watched)
    assert main(["validate", "--dir", str(folder), "--json-lines"]) == 0
    assert printed_before_next == [1] * 19


def test_errors_under_json_are_json_on_stdout_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["validate", "--dir", str(tmp_path / "nope"), "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    document = json.loads(out)
    REPORT.validate(document)
    assert document["error"] == {
        "kind": "usage",
        "message": f"no such folder: {tmp_path / 'nope'}",
        "exit_code": 2,
    }
    assert err == f"error: no such folder: {tmp_path / 'nope'}\n"
    with pytest.raises(SystemExit) as info:
        main(["validate", "--max-bytes", "0", "--json"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    document = json.loads(out)
    REPORT.validate(document)
    assert "positive number of bytes" in document["error"]["message"]
    assert main(["validate", "--dir", str(tmp_path / "nope"), "--json-lines"]) == 2
    parsed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for line in parsed:
        LINE.validate(line)
    assert [p["type"] for p in parsed] == ["header", "error"]


def test_options_go_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    outputs = []
    for argv in (
        ["validate", "--dir", str(store), "--json"],
        ["--json", "validate", "--dir", str(store)],
        ["--dir", str(store), "--json", "validate"],
        ["--json", "--dir", str(store), "validate", "-q"],
    ):
        assert main(argv) == 1
        document = json.loads(capsys.readouterr().out)
        outputs.append(document["items"])
    assert all(items == outputs[0] for items in outputs)
    assert len(outputs[0]) == 13


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import sessionstore  # noqa: PLC0415

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"sessionstore {sessionstore.__version__}\n"


def test_empty_dsn_is_a_usage_error_not_the_folder(
    capsys: pytest.CaptureFixture[str], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11.3: --dsn "" silently worked on the folder instead.
    monkeypatch.chdir(store.parent)
    shutil.copytree(CORPUS, store.parent / ".port_sessions")
    assert main(["validate", "--dsn", ""]) == 2
    assert "--dsn is empty" in capsys.readouterr().err
    assert main(["validate", "--dsn", "   "]) == 2


def test_dir_with_dsn_is_a_usage_error_not_ignored(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    # Issue 11.3: --dir together with --dsn was silently ignored.
    code = main(["validate", "--dir", str(store), "--dsn", "postgresql://u@127.0.0.1:1/x"])
    assert code == 2
    assert "--dir and --dsn name two stores" in capsys.readouterr().err
    code = main(["--dsn", "postgresql://u@127.0.0.1:1/x", "ls", "--dir", str(store)])
    assert code == 2
    assert main(["validate", "--dir", str(store), "--table", "t"]) == 2
    assert "--table names a PostgreSQL table" in capsys.readouterr().err


def test_the_store_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SESSIONSTORE_DIR", str(store))
    code, document = report(capsys, "status")
    assert document["store"] == {"kind": "folder", "location": str(store)}
    assert code == 1
    other = tmp_path / "other"
    SessionStore(other).save(StoredSession("x", ("m",), 0, 0))
    code, document = report(capsys, "status", "--dir", str(other))  # an option wins
    assert (code, document["summary"]["total"]) == (0, 1)
    monkeypatch.setenv("SESSIONSTORE_DSN", "postgresql://u@127.0.0.1:1/x")
    assert main(["status"]) == 2
    assert "both SESSIONSTORE_DIR and SESSIONSTORE_DSN are set" in capsys.readouterr().err
    assert main(["status", "--dir", str(other)]) == 0  # naming one is enough
    monkeypatch.setenv("SESSIONSTORE_DSN", "")
    assert main(["status"]) == 1  # an empty variable is no variable


def test_quiet_prints_only_problems_and_verbose_everything(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    assert main(["validate", "--dir", str(store), "-q"]) == 1
    quiet = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in quiet) == [
        "corrupt",
        "corrupt",
        "invalid-name",
        "too-new",
    ]
    assert main(["validate", "--dir", str(store), "-v"]) == 1
    verbose = capsys.readouterr().out
    assert re.search(r"^needs-migration +2  v2-full +version 2, current is 3$", verbose, re.M)
    assert re.search(r"^current +3  v3-log +torn tail of 17 bytes", verbose, re.M)
    assert main(["validate", "--dir", str(store), "-q", "-v"]) == 2


def test_human_output_has_aligned_columns_hints_and_a_next_command(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    assert main(["validate", "--dir", str(store)]) == 1
    out = capsys.readouterr().out.splitlines()
    table = [line for line in out[1:] if not line.startswith(("hint:", "next:", str(store)))]
    assert len({line.index("  ", 19) for line in table}) == 1, "the ID column is aligned"
    assert sum(line.count("v1-seed-basic") for line in out) == 1, "the id once per line"
    assert f"hint: 2 corrupt: sessionstore doctor --fix --dir {store}" in "\n".join(out)
    assert out[-1] == f"next: sessionstore migrate --dry-run --dir {store}, then " + (
        f"sessionstore migrate --dir {store}"
    )


def test_status_counts_versions_and_says_what_migrate_would_do(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, document = report(capsys, "status", "--dir", str(store))
    assert code == 1
    summary = document["summary"]
    assert summary["by_version"] == {"1": 6, "2": 2, "3": 1}
    assert (summary["corrupt"], summary["too_new"], summary["invalid_name"]) == (2, 1, 1)
    assert (summary["records"], summary["torn_tails"]) == (2, 1)
    assert document["would_migrate"] == 8
    log = next(item for item in document["items"] if item["id"] == "v3-log")
    assert (log["status"], log["records"], log["torn_bytes"]) == ("current", 2, 17)
    assert main(["status", "--dir", str(store)]) == 1
    out = capsys.readouterr().out
    assert "writes:    schema version 3" in out
    assert re.search(r"^  version 1: +6  older: migrate rewrites them$", out, re.M)
    assert re.search(r"^  version 2: +2  older: migrate rewrites them$", out, re.M)
    assert re.search(r"^  version 3: +1  current$", out, re.M)
    assert re.search(r"^  problems: +4  2 corrupt, 1 too-new, 1 invalid-name$", out, re.M)
    assert re.search(r"^  records: +2  appended, not folded yet", out, re.M)
    assert re.search(r"^  torn tails: +1  file\(s\) end in an append that never", out, re.M)
    assert "migrate would rewrite 8 as version 3, skip 4 problem file(s)" in out
    assert "hint: 1 torn tail(s): appends that never finished" in out


def test_history_lists_every_version_and_step_from_the_registry(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessionstore import migrations  # noqa: PLC0415

    code, document = report(capsys, "history")
    assert code == 0
    assert [(i["schema_version"], i["status"]) for i in document["items"]] == [
        (3, "current"),
        (2, "older"),
        (1, "older"),
    ]
    assert document["items"][2]["upgrade_to"] == 2
    assert document["items"][1]["upgrade_to"] == 3
    assert document["items"][0]["downgrade_to"] == 2
    assert document["items"][0]["detail"] == migrations.DESCRIPTIONS[3]
    assert main(["history"]) == 0
    out = capsys.readouterr().out
    assert "2 -> 1  sessionstore migrate --to 1: drops schema_version" in out


def test_psycopg_missing_says_how_to_install_the_extra_from_a_checkout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11.6: the hint said pip install 'sessionstore[postgres]', which fails: the
    # package is on no index.
    for name in ("psycopg", "sessionstore.postgres", "sessionstore.backends.postgres"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["validate", "--dsn", "postgresql://u@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "python -m pip install '" in err
    assert "[postgres]'" in err
    assert "once sessionstore is published: python -m pip install 'sessionstore[postgres]'" in err
