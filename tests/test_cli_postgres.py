"""The ``sessionstore`` command on a PostgreSQL table: validate/migrate ``--dsn`` and
``copy`` between a folder and a table. Needs ``SESSIONSTORE_TEST_POSTGRES_DSN``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sessionstore import (
    CURRENT_SCHEMA_VERSION,
    BackendSessionStore,
    SessionStore,
    SessionTooLargeError,
    StoredSession,
    maintenance,
)
from sessionstore.backends.base import content_etag
from sessionstore.backends.postgres import PostgresBackend
from sessionstore.cli import main
from sessionstore.postgres import PostgresSessionStore
from tests.pg import DSN, requires_postgres, unique_table

pytestmark = requires_postgres

CORPUS = Path(__file__).parent / "corpus"
CORPUS_IDS = sorted(path.stem for path in CORPUS.glob("*.json"))


def _rows(table: str) -> dict[str, tuple[int | None, bytes]]:
    with psycopg.connect(DSN, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, schema_version, document FROM {}").format(sql.Identifier(table))
        ).fetchall()
    return {row[0]: (row[1], bytes(row[2])) for row in rows}


def _table_exists(table: str) -> bool:
    with psycopg.connect(DSN, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s)", [table]).fetchone()
    return row is not None and row[0] is not None


@pytest.fixture
def table() -> Iterator[str]:
    name = unique_table("cli")
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
                sql.Identifier(name), sql.Identifier(f"{name}_journal")
            )
        )


@pytest.fixture
def seeded(table: str) -> str:
    """A table holding the raw bytes of the corpus (seed-written and current documents)."""
    assert main(["copy", "--from", str(CORPUS), "--to-dsn", DSN, "--table", table]) == 0
    # ``copy`` writes current-version documents; put the seed's bytes back as they were.
    with psycopg.connect(DSN, autocommit=True) as conn:
        for path in CORPUS.glob("v1-*.json"):
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET document = %s, etag = %s, schema_version = 1 WHERE id = %s"
                ).format(sql.Identifier(table)),
                [path.read_bytes(), content_etag(path.read_bytes()), path.stem],
            )
    return table


def test_copy_folder_to_table_and_back_is_verified(
    table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["copy", "--from", str(CORPUS), "--to-dsn", DSN, "--table", table, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["summary"]["total"], report["summary"]["copied"]) == (8, 8)
    assert report["summary"]["problems"] == 0
    assert sorted(_rows(table)) == CORPUS_IDS
    back = tmp_path / "back"
    assert main(["copy", "--from-dsn", DSN, "--table", table, "--to", str(back)]) == 0
    assert "8 session(s): 8 copied" in capsys.readouterr().out
    original = SessionStore(CORPUS)
    copied = SessionStore(back)
    assert copied.list() == CORPUS_IDS
    for session_id in CORPUS_IDS:
        assert copied.load(session_id) == original.load(session_id)


def test_validate_and_migrate_with_dsn(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = _rows(seeded)
    old = sorted(i for i, (version, _) in before.items() if version != CURRENT_SCHEMA_VERSION)
    assert old  # the corpus has documents of older versions

    # Older versions load (migrated in memory): not a problem for validate.
    assert main(["validate", "--dsn", DSN, "--table", seeded, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["needs_migration"] + report["summary"]["repairable"] == len(old)
    assert main(["migrate", "--dsn", DSN, "--table", seeded, "--check"]) == 1
    assert main(["migrate", "--dsn", DSN, "--table", seeded, "--dry-run"]) == 0
    capsys.readouterr()
    assert _rows(seeded) == before  # validate, --check and --dry-run wrote nothing

    assert main(["migrate", "--dsn", DSN, "--table", seeded, "--json"]) == 0
    migrated = json.loads(capsys.readouterr().out)
    assert migrated["summary"]["migrated"] == len(old)
    after = _rows(seeded)
    assert {i for i in after if after[i][0] == CURRENT_SCHEMA_VERSION} == set(CORPUS_IDS)
    for session_id in set(CORPUS_IDS) - set(old):
        assert after[session_id] == before[session_id]  # current rows untouched

    assert main(["migrate", "--dsn", DSN, "--table", seeded]) == 0  # idempotent
    assert _rows(seeded) == after
    assert main(["validate", "--dsn", DSN, "--table", seeded]) == 0


def test_validate_on_a_missing_table_creates_nothing(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--dsn", DSN, "--table", table]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert "Traceback" not in err
    assert not _table_exists(table)


@pytest.mark.parametrize("bad_table", ["1x", "a;drop", "a.b.c"])
def test_bad_table_name_is_a_usage_error(
    bad_table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--dsn", DSN, "--table", bad_table]) == 2
    assert "table must be an identifier" in capsys.readouterr().err


def test_unreachable_server_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "src"
    shutil.copytree(CORPUS, folder)
    dead = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2"
    assert main(["copy", "--from", str(folder), "--to-dsn", dead]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "127.0.0.1:1" in err
    assert "Traceback" not in err


def test_copy_needs_exactly_one_source_and_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["copy", "--from", str(CORPUS), "--from-dsn", DSN, "--to", "x"]) == 2
    assert "one source" in capsys.readouterr().err


def test_validate_and_migrate_read_the_table_in_batches(
    seeded: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    monkeypatch.setattr(maintenance, "READ_BATCH", 3)
    batches: list[int] = []
    real = PostgresBackend.read_many

    def counted(self: PostgresBackend, ids: list[str], *, max_bytes: int) -> object:
        batches.append(len(ids))
        return real(self, ids, max_bytes=max_bytes)

    monkeypatch.setattr(PostgresBackend, "read_many", counted)
    monkeypatch.setattr(PostgresBackend, "read", None)  # one by one would fail loudly
    assert main(["migrate", "--dsn", DSN, "--table", seeded, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["total"] == len(CORPUS_IDS)
    assert batches == [3, 3, 2]
    assert {version for version, _ in _rows(seeded).values()} == {CURRENT_SCHEMA_VERSION}


def test_read_many_reports_oversized_documents_and_skips_absent_ids(table: str) -> None:

    with PostgresSessionStore(DSN, table=table) as store:
        store.setup()
        small = StoredSession(session_id="small", messages=(), input_tokens=0, output_tokens=0)
        big = StoredSession(
            session_id="big", messages=("x" * 5000,), input_tokens=0, output_tokens=0
        )
        store.save(small)
        store.save(big)
        found = store.backend.read_many(["small", "big", "absent"], max_bytes=1000)
    assert set(found) == {"small", "big"}
    assert isinstance(found["small"], bytes)
    assert isinstance(found["big"], SessionTooLargeError)
    assert "max_bytes" in str(found["big"])


# --- issue 11: the command on a table -------------------------------------------------


def _put(table: str, session_id: str, data: bytes) -> None:
    """Store raw bytes as another writer would, bypassing sessionstore."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, schema_version, document, etag, updated_at) "
                "VALUES (%s, 1, %s, %s, now()) ON CONFLICT (id) DO UPDATE SET "
                "document = EXCLUDED.document, etag = EXCLUDED.etag"
            ).format(sql.Identifier(table)),
            [session_id, data, content_etag(data)],
        )


def test_migrate_dsn_reports_a_row_it_could_not_rewrite_and_exits_1(
    seeded: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 11.2: a row that lost its compare-and-swap (another writer changed it) was
    # counted as "already current": exit 0, "ok": true, and --check right after said
    # it still needed migrating.
    other = (
        b'{"session_id": "v1-seed-basic", "messages": ["other"], '
        b'"input_tokens": 1, "output_tokens": 1}'
    )
    real_save = BackendSessionStore.save

    def racing_save(self: BackendSessionStore, session: StoredSession, **kwargs: object) -> str:
        if session.session_id == "v1-seed-basic":
            _put(seeded, "v1-seed-basic", other)  # another writer, between read and write
        return real_save(self, session, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BackendSessionStore, "save", racing_save)
    code = main(["migrate", "--dsn", DSN, "--table", seeded, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["ok"] is False
    row = next(i for i in report["items"] if i["id"] == "v1-seed-basic")
    assert row["action"] == "conflict"
    assert "run migrate again" in row["detail"]
    assert report["summary"]["conflict"] == 1
    assert _rows(seeded)["v1-seed-basic"][1] == other, "the other writer's row is kept"
    monkeypatch.undo()
    assert main(["migrate", "--dsn", DSN, "--table", seeded, "--check"]) == 1  # consistent
    assert main(["migrate", "--dsn", DSN, "--table", seeded]) == 0  # a rerun finishes it
    capsys.readouterr()


def test_copy_refuses_to_overwrite_a_different_session_unless_asked(
    table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 11.4: copy overwrote newer data in the target without a word.
    with PostgresSessionStore(DSN, table=table) as store:
        store.setup()
        newer = StoredSession("v2-full", ("newer, only in the table",), 1, 1)
        store.save(newer)
        store.save(SessionStore(CORPUS).load("v2-minimal"))  # the same as the source
    argv = ["copy", "--from", str(CORPUS), "--to-dsn", DSN, "--table", table, "--json"]

    assert main([*argv, "--dry-run"]) == 1
    dry = json.loads(capsys.readouterr().out)
    actions = {i["id"]: i["action"] for i in dry["items"]}
    assert (actions["v2-full"], actions["v2-minimal"], actions["v1-seed-basic"]) == (
        "refused",
        "identical",
        "would-copy",
    )
    assert sorted(_rows(table)) == ["v2-full", "v2-minimal"], "--dry-run wrote nothing"

    assert main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    summary = report["summary"]
    assert (summary["copied"], summary["identical"], summary["refused"]) == (6, 1, 1)
    refused = next(i for i in report["items"] if i["id"] == "v2-full")
    assert "--overwrite" in refused["detail"]
    assert "1 messages there" in refused["detail"]
    with PostgresSessionStore(DSN, table=table) as store:
        assert store.load("v2-full") == newer

    assert main([*argv, "--overwrite", "--dry-run"]) == 0
    assert {i["id"]: i["action"] for i in json.loads(capsys.readouterr().out)["items"]}[
        "v2-full"
    ] == "would-overwrite"
    assert main([*argv, "--overwrite"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["summary"]["overwritten"], report["summary"]["identical"]) == (1, 7)
    with PostgresSessionStore(DSN, table=table) as store:
        assert store.load("v2-full") == SessionStore(CORPUS).load("v2-full")


def test_every_store_command_takes_dsn_and_the_environment(
    table: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSIONSTORE_DSN", DSN)
    assert main(["validate", "--table", table]) == 2  # no table yet: an error, none created
    assert not _table_exists(table)
    capsys.readouterr()
    assert main(["setup", "--table", table, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert _table_exists(table)
    assert main(["setup", "--table", table]) == 0  # idempotent
    _put(
        table,
        "old",
        b'{"session_id": "old", "messages": ["m"], "input_tokens": 1, "output_tokens": 2}',
    )
    _put(table, "bad", b"{ torn")
    capsys.readouterr()

    assert main(["ls", "--table", table, "--json"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)["items"]] == ["bad", "old"]
    assert main(["status", "--table", table, "--json"]) == 1
    status = json.loads(capsys.readouterr().out)
    assert (status["summary"]["needs_migration"], status["summary"]["corrupt"]) == (1, 1)
    assert status["store"]["kind"] == "postgres"
    assert main(["show", "old", "--table", table]) == 0
    assert json.loads(capsys.readouterr().out)["messages"] == ["m"]
    assert main(["doctor", "--table", table, "--json"]) == 1
    doctor = json.loads(capsys.readouterr().out)
    assert [(i["id"], i["status"]) for i in doctor["items"]] == [("bad", "corrupt")]
    assert main(["migrate", "old", "--table", table]) == 0  # one id only
    assert main(["delete", "bad", "--table", table]) == 0
    assert main(["delete", "bad", "--table", table]) == 1
    capsys.readouterr()
    assert main(["validate", "--table", table]) == 0


def test_no_password_is_ever_printed(
    table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-Passw0rd"
    bad = f"postgresql://postgres:{secret}@127.0.0.1:1/test?connect_timeout=1"
    for argv in (
        ["validate", "--dsn", bad, "--table", table],
        ["validate", "--dsn", bad, "--table", table, "--json"],
        ["status", "--dsn", f"host=127.0.0.1 port=1 password={secret} connect_timeout=1"],
        ["validate", "--dsn", f"postgresql://postgres:{secret}@[bad"],
        ["copy", "--from", str(CORPUS), "--to-dsn", bad, "--json-lines"],
    ):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert secret not in out + err, argv
        assert err.startswith("error: ")
    monkeypatch.setenv("SESSIONSTORE_DSN", bad)
    assert main(["migrate", "--table", table]) == 2
    out, err = capsys.readouterr()
    assert secret not in out + err


def test_compact_folds_a_rows_records_and_migrate_leaves_them_alone(
    seeded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with PostgresSessionStore(DSN, table=seeded) as store:
        store.append("v2-full", ["one"], key="k1")
        store.append("v2-full", ["two"], key="k2")
        session, etag = store.load_with_etag("v2-full")
        stored = store.backend.read("v2-full", max_bytes=store.max_bytes)  # document + records
    assert stored is not None
    with_records = _rows(seeded)["v2-full"]

    assert main(["status", "--dsn", DSN, "--table", seeded, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    row = next(item for item in status["items"] if item["id"] == "v2-full")
    assert (row["records"], row["torn_bytes"], status["summary"]["records"]) == (2, 0, 2)
    assert main(["migrate", "--dsn", DSN, "--table", seeded, "v2-full", "--json"]) == 0
    migrated = json.loads(capsys.readouterr().out)
    assert migrated["items"][0]["action"] == "unchanged"
    assert _rows(seeded)["v2-full"] == with_records, "a current row with records is not rewritten"

    assert main(["compact", "--dsn", DSN, "--table", seeded, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    actions = {item["id"]: item["action"] for item in report["items"]}
    assert actions.pop("v2-full") == "compacted"
    assert set(actions.values()) == {"unchanged"}
    folded = next(item for item in report["items"] if item["id"] == "v2-full")
    assert (folded["records"], folded["size"]) == (2, len(stored))
    assert folded["size_after"] == len(_rows(seeded)["v2-full"][1])
    assert report["summary"]["records"] == 2
    with PostgresSessionStore(DSN, table=seeded) as store:
        assert store.load_with_etag("v2-full") == (session, etag), "same session, same etag"
