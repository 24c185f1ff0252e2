"""15. Deliberately broken variants of the append log: each is caught by a check.

The mechanism of ``test_broken_variants.py``: every variant is a monkeypatched
replacement of one piece of the real code; the named check (``logchecks``) must
report a violation on it and none on the real code. An append that skips its
fdatasync is caught by the recorded calls, like the save's "no file fsync": a
crash of the process cannot show it, only a power loss could.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionstore import appendlog, codec, records, store
from sessionstore.appendlog import Append, AppendResult, Target
from sessionstore.backends import filesystem
from sessionstore.codec import encode
from sessionstore.records import Chain, KeyResult, Layout, RecordError, encode_store_line
from tests.reliability.figures import record
from tests.reliability.logchecks import (
    append_recipe_violations,
    damaged_record_violations,
    fold_keeps_violations,
    fold_race_violations,
    keyed_retry_violations,
    torn_tail_violations,
)


def _no_fdatasync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filesystem, "sync_data", lambda fd: None)


def _torn_tail_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    real = filesystem.FileSystemBackend.append_record

    def variant(
        self: Any, session_id: str, line: bytes, *, identity: object, size: int, keep: int
    ) -> None:
        real(self, session_id, line, identity=identity, size=size, keep=size)  # no cut

    monkeypatch.setattr(filesystem.FileSystemBackend, "append_record", variant)


def _damaged_record_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = records.read_chain

    def variant(
        layout: Layout, *, snapshot_etag: str, message_count: int, remembered: dict[str, KeyResult]
    ) -> Chain:
        # Keep the records up to the first one that does not check out; treat the
        # rest as if it were a torn tail.
        lines = layout.records.splitlines(keepends=True)
        for end in range(len(lines), -1, -1):
            shorter = Layout(
                layout.document, layout.snapshot_end, layout.store, b"".join(lines[:end]), 0
            )
            try:
                return real(
                    shorter,
                    snapshot_etag=snapshot_etag,
                    message_count=message_count,
                    remembered=remembered,
                )
            except RecordError:
                continue
        raise AssertionError  # pragma: no cover - zero lines always check out

    monkeypatch.setattr(codec, "read_chain", variant)


def _keys_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    real = appendlog.append_locked

    def variant(target: Target, append: Append, *, if_match: str | None) -> AppendResult:
        plain = Append(append.messages, append.input_tokens, append.output_tokens, None, append.now)
        return real(target, plain, if_match=if_match)

    # store.append reaches it through appendlog.append_session, append_messages directly.
    monkeypatch.setattr(appendlog, "append_locked", variant)


def _fold(monkeypatch: pytest.MonkeyPatch, store_line: Callable[[Any], bytes | None]) -> None:
    def variant(target: Target) -> str:
        decoded = appendlog._decode(target)
        assert decoded is not None
        line = store_line(decoded)
        data = encode(decoded.session) if line is None else encode(decoded.session, store_line=line)
        return target.backend.write(target.session_id, target.check_size(decoded.session, data))

    monkeypatch.setattr(appendlog, "fold_locked", variant)


def _fold_without_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    def variant(self: Any, session_id: str) -> str:
        return appendlog.fold_locked(self._target(session_id))  # no self.backend.lock

    monkeypatch.setattr(store.BackendSessionStore, "compact", variant)


Variant = Callable[[pytest.MonkeyPatch], None]

VARIANTS: dict[str, tuple[Variant, str]] = {
    "append without fdatasync": (_no_fdatasync, "append recipe"),
    "append not cutting a torn tail": (_torn_tail_kept, "torn tail"),
    "load dropping a damaged middle record": (_damaged_record_dropped, "damaged record"),
    "append ignoring keys": (_keys_ignored, "keyed retry"),
    "fold losing the keys": (
        lambda mp: _fold(mp, lambda d: encode_store_line(d.etag, {})),
        "fold keeps",
    ),
    "fold changing the etag": (lambda mp: _fold(mp, lambda d: None), "fold keeps"),
    "fold not under the lock": (_fold_without_the_lock, "fold race"),
}

CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "append recipe": append_recipe_violations,
    "torn tail": torn_tail_violations,
    "damaged record": damaged_record_violations,
    "keyed retry": keyed_retry_violations,
    "fold keeps": fold_keeps_violations,
    "fold race": fold_race_violations,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_broken_log_variant_is_caught(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install, check = VARIANTS[variant]
    install(monkeypatch)
    violations = CHECKS[check](tmp_path)
    record("broken variants caught", 1 if violations else 0)
    assert violations, f"the {check} check did not notice the variant {variant!r}"


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_the_same_log_checks_pass_on_the_real_code(check: str, tmp_path: Path) -> None:
    assert CHECKS[check](tmp_path) == []


def test_every_log_check_guards_a_variant() -> None:
    assert {check for _, check in VARIANTS.values()} == set(CHECKS)
