"""Append-log benchmarks (issue 10): appends, a long conversation and loads, as ratios.

Run from the repository root, in the project's virtual environment::

    python benchmarks/bench_append.py             # full run (a few minutes)
    python benchmarks/bench_append.py --quick     # smoke run (about a minute)
    python benchmarks/bench_append.py --turns 2000  # shorter conversation (any mode)

Everything runs side by side in one process and one temp folder:

- ``SessionStore.append`` of one message (durable) at 10 and 100,000 stored
  messages against SQLite (WAL, ``synchronous=FULL``) inserting one row into a
  table holding as many rows; a durable JSONL append (open ``O_APPEND``, one
  write, fdatasync, close) is shown for reference;
- a conversation of 10,000 one-message turns from empty, the three writers taking
  turns (A B C, then B C A...), so that noise hits each side alike; its total and
  its 99th-percentile turn;
- ``load`` of a session whose records are just short of the fold threshold against
  ``load`` of the same session folded (``compact``);
- ``load`` of a folded current-version file against the floor (read + one
  ``model_validate_json`` on a bare 4-field model), ASCII and mixed text.

Single operations alternate the two sides (A B, B A, ...) and report the median of
per-pair ratios, like run.py. A ratio below 1 means sessionstore is faster. Exits 1
when a goal is missed. See benchmarks/README.md for the last results.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from run import (
    Pair,
    Report,
    Row,
    add_series,
    floor_load,
    fmt_time,
    machine,
    pair,
    scratch,
)
from run import message as mixed_message

from sessionstore import SessionStore, StoredSession
from sessionstore.appendlog import fold_threshold
from sessionstore.records import split_layout

MESSAGE_CHARS = 200


# --------------------------------------------------------------------------- data


def ascii_message(i: int) -> str:
    """A ~200-character message of ASCII text only."""
    return (f"message {i}: " + "the quick brown fox jumps over the lazy dog, " * 5)[:MESSAGE_CHARS]


def session(session_id: str, n: int, text: Callable[[int], str] = mixed_message) -> StoredSession:
    return StoredSession(
        session_id=session_id,
        messages=tuple(text(i) for i in range(n)),
        input_tokens=n * 50,
        output_tokens=n * 40,
    )


# --------------------------------------------------------------------------- the other writers


class SQLiteLog:
    """SQLite in WAL mode with ``synchronous=FULL``: one row per message, one commit each."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS messages ("
            " session_id TEXT NOT NULL, seq INTEGER NOT NULL, content TEXT NOT NULL,"
            " PRIMARY KEY (session_id, seq))"
        )
        self.next: dict[str, int] = {}

    def fill(self, session_id: str, n: int) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?)",
            ((session_id, i, mixed_message(i)) for i in range(n)),
        )
        self.db.execute("COMMIT")
        self.next[session_id] = n

    def insert(self, session_id: str, text: str) -> None:
        seq = self.next.get(session_id, 0)
        self.db.execute("INSERT INTO messages VALUES (?, ?, ?)", (session_id, seq, text))
        self.next[session_id] = seq + 1

    def close(self) -> None:
        self.db.close()


class JSONLLog:
    """What agent harnesses do, made durable: open O_APPEND, one write, fdatasync, close."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fill(self, session_id: str, n: int) -> None:
        with open(self.folder / f"{session_id}.jsonl", "wb") as f:
            for i in range(n):
                f.write(orjson.dumps({"role": "user", "content": mixed_message(i)}) + b"\n")
            os.fsync(f.fileno())

    def append(self, session_id: str, text: str) -> None:
        line = orjson.dumps({"role": "user", "content": text}) + b"\n"
        fd = os.open(
            self.folder / f"{session_id}.jsonl",
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
            0o600,
        )
        try:
            os.write(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    append_sizes: tuple[int, ...]
    append_pairs: int
    turns: int
    load_sizes: tuple[int, ...]
    load_pairs: dict[int, int]


FULL = Config(
    append_sizes=(10, 100_000),
    append_pairs=151,
    turns=10_000,
    load_sizes=(10, 1_000, 10_000),
    load_pairs={10: 201, 1_000: 101, 10_000: 31},
)
QUICK = Config(
    append_sizes=(10, 100_000),
    append_pairs=41,
    turns=2_000,
    load_sizes=(10, 1_000, 10_000),
    load_pairs={10: 41, 1_000: 21, 10_000: 9},
)


# --------------------------------------------------------------------------- benchmarks


def bench_append(cfg: Config, report: Report) -> None:
    print("append of one message (durable) vs SQLite WAL+FULL", flush=True)
    ours: dict[int, Pair] = {}
    jsonl: dict[int, Pair] = {}
    half: dict[int, Pair] = {}
    with scratch("append") as folder:
        store = SessionStore(folder / "store")
        sqlite = SQLiteLog(folder / "sqlite.db")
        lines = JSONLLog(folder)
        for n in cfg.append_sizes:
            sid = f"a{n}"
            SessionStore(folder / "store", durable=False).save(session(sid, n))
            sqlite.fill(sid, n)
            lines.fill(sid, n)
            os.sync()
            text = mixed_message(n + 1)
            # warmup=1: the first append after a save reads the whole file once.
            ours[n] = pair(
                lambda sid=sid, text=text: store.append(sid, [text], output_tokens=1),
                lambda sid=sid, text=text: sqlite.insert(sid, text),
                cfg.append_pairs,
                batch=False,
            )
            jsonl[n] = pair(
                lambda sid=sid, text=text: lines.append(sid, text),
                lambda sid=sid, text=text: sqlite.insert(sid, text),
                max(11, cfg.append_pairs // 3),
                batch=False,
            )
            if n == max(cfg.append_sizes):
                # The same size once the records have reached half the fold
                # threshold (the average between two folds): an append walks them.
                fill = SessionStore(folder / "store", durable=False)
                path = folder / "store" / f"{sid}.json"
                snapshot = len(path.read_bytes()) - len(split_layout(path.read_bytes()).records)
                while path.stat().st_size - snapshot < fold_threshold(snapshot) // 2:
                    fill.append(sid, [text])
                os.sync()
                half[n] = pair(
                    lambda sid=sid, text=text: store.append(sid, [text], output_tokens=1),
                    lambda sid=sid, text=text: sqlite.insert(sid, text),
                    cfg.append_pairs,
                    batch=False,
                )
            store.delete(sid)
        sqlite.close()
    add_series(
        report,
        "append (1 msg, durable) vs SQLite insert",
        ours,
        goal=lambda _n, r: ("<= 1.5x", r <= 1.5),
    )
    add_series(report, "durable JSONL append (reference) vs SQLite insert", jsonl)
    add_series(
        report, "append (info) with records at half the fold threshold vs SQLite insert", half
    )
    small, large = min(ours), max(ours)
    growth = ours[large].a_median / ours[small].a_median
    report.add(
        Row(
            f"append cost at {large:,} / at {small:,} msgs",
            "",
            fmt_time(ours[large].a_median),
            fmt_time(ours[small].a_median),
            growth,
            "<= 1.3x",
            growth <= 1.3,
        )
    )
    for n, p in half.items():
        report.add(
            Row(
                f"append cost at {n:,} msgs + records at half the threshold / at {small:,} (info)",
                "",
                fmt_time(p.a_median),
                fmt_time(ours[small].a_median),
                p.a_median / ours[small].a_median,
            )
        )


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def bench_conversation(cfg: Config, report: Report) -> None:
    turns = cfg.turns
    print(f"conversation of {turns:,} turns from empty", flush=True)
    with scratch("conversation") as folder:
        store = SessionStore(folder / "store")
        sqlite = SQLiteLog(folder / "sqlite.db")
        lines = JSONLLog(folder)
        texts = [mixed_message(i) for i in range(turns)]
        sides: list[tuple[str, Callable[[str], object]]] = [
            ("sessionstore", lambda t: store.append("chat", [t], output_tokens=40)),
            ("sqlite", lambda t: sqlite.insert("chat", t)),
            ("jsonl", lambda t: lines.append("chat", t)),
        ]
        times: dict[str, list[float]] = {name: [] for name, _ in sides}
        clock = time.perf_counter
        for i, text in enumerate(texts):
            k = i % len(sides)
            for name, fn in sides[k:] + sides[:k]:
                start = clock()
                fn(text)
                times[name].append(clock() - start)
        loaded = store.load("chat")
        assert loaded.messages == tuple(texts), "the conversation lost or reordered a turn"
        sqlite.close()
    ss, sq, jl = times["sessionstore"], times["sqlite"], times["jsonl"]
    total = sum(ss) / sum(sq)
    p99 = _p99(ss) / _p99(sq)
    size = f"{turns:,} turns"
    report.add(
        Row(
            "conversation total vs SQLite",
            size,
            fmt_time(sum(ss)),
            fmt_time(sum(sq)),
            total,
            "<= 1.5x",
            total <= 1.5,
        )
    )
    report.add(
        Row(
            "conversation p99 turn vs SQLite",
            size,
            fmt_time(_p99(ss)),
            fmt_time(_p99(sq)),
            p99,
            "<= 2x",
            p99 <= 2,
        )
    )
    report.add(
        Row(
            "conversation median turn vs SQLite (info)",
            size,
            fmt_time(statistics.median(ss)),
            fmt_time(statistics.median(sq)),
            statistics.median(ss) / statistics.median(sq),
        )
    )
    report.add(
        Row(
            "conversation max turn vs SQLite (info)",
            size,
            fmt_time(max(ss)),
            fmt_time(max(sq)),
            max(ss) / max(sq),
        )
    )
    report.add(
        Row(
            "durable JSONL conversation total (reference) vs SQLite",
            size,
            fmt_time(sum(jl)),
            fmt_time(sum(sq)),
            sum(jl) / sum(sq),
        )
    )


def _fill_to_threshold(store: SessionStore, path: Path, sid: str, n: int) -> int:
    """Append one message at a time until one more append would fold; return how many."""
    snapshot = path.stat().st_size
    added = 0
    while True:
        before = path.read_bytes()
        store.append(sid, [mixed_message(n + added)], output_tokens=1)
        if not split_layout(path.read_bytes()).records:
            # That append folded: put the file back as it was before it.
            path.write_bytes(before)
            return added
        added += 1
        if added > 10 * fold_threshold(snapshot):  # pragma: no cover - a fold never came
            raise RuntimeError("no fold")


def bench_load_pending(cfg: Config, report: Report) -> None:
    print("load with pending records vs the same session folded", flush=True)
    results: dict[int, Pair] = {}
    counts: dict[int, int] = {}
    with scratch("pending") as folder:
        pending = SessionStore(folder / "pending", durable=False)
        folded = SessionStore(folder / "folded", durable=False)
        (folder / "folded").mkdir()
        for n in cfg.load_sizes:
            sid = f"p{n}"
            pending.save(session(sid, n))
            path = folder / "pending" / f"{sid}.json"
            counts[n] = _fill_to_threshold(pending, path, sid, n)
            (folder / "folded" / f"{sid}.json").write_bytes(path.read_bytes())
            folded.compact(sid)
            assert pending.load(sid) == folded.load(sid)
            assert split_layout((folder / "folded" / f"{sid}.json").read_bytes()).records == b""
            results[n] = pair(
                lambda sid=sid: pending.load(sid),
                lambda sid=sid: folded.load(sid),
                cfg.load_pairs.get(n, 15),
            )
    for n, p in results.items():
        report.add(
            Row(
                "load with records vs folded",
                f"{n:,} msgs + {counts[n]} records",
                fmt_time(p.a_median),
                fmt_time(p.b_median),
                p.ratio,
                "<= 1.3x",
                p.ratio <= 1.3,
            )
        )


def bench_load_folded(cfg: Config, report: Report) -> None:
    print("load of a folded file vs floor", flush=True)
    with scratch("folded") as folder:
        store = SessionStore(folder, durable=False)
        for label, text in (("ASCII", ascii_message), ("mixed", mixed_message)):
            results: dict[int, Pair] = {}
            for n in cfg.load_sizes:
                sid = f"{label[0]}{n}"
                store.save(session(sid, n, text))
                path = folder / f"{sid}.json"
                results[n] = pair(
                    lambda sid=sid: store.load(sid),
                    lambda path=path: floor_load(path),
                    cfg.load_pairs.get(n, 15),
                )
            add_series(
                report,
                f"load folded vs floor, {label} text",
                results,
                goal=lambda _n, r: ("<= 1.2x", r <= 1.2),
            )


SECTIONS = ("append", "conversation", "pending", "folded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs, 2,000 turns")
    parser.add_argument("--turns", type=int, help="turns of the conversation (default 10,000)")
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="run only these sections (repeatable)"
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.turns is not None:
        cfg = Config(cfg.append_sizes, cfg.append_pairs, args.turns, cfg.load_sizes, cfg.load_pairs)
    only = set(args.only or SECTIONS)
    report = Report(columns=("sessionstore", "SQLite / folded / floor"))
    print(machine(), flush=True)
    start = time.perf_counter()
    if "append" in only:
        bench_append(cfg, report)
    if "conversation" in only:
        bench_conversation(cfg, report)
    if "pending" in only:
        bench_load_pending(cfg, report)
    if "folded" in only:
        bench_load_folded(cfg, report)
    print()
    print(f"sessionstore / other: median of per-pair ratios; {machine()}")
    print(f"mode: {'quick' if args.quick else 'full'}, {time.perf_counter() - start:.0f} s")
    print()
    print(report.table())
    missed = [row for row in report.rows if row.met is False]
    print()
    print(f"{len(missed)} goal(s) missed" if missed else "every goal met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
