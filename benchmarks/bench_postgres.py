"""PostgreSQL store benchmarks: save, load and append beside the file store, and
append_messages throughput with 1, 4 and 16 concurrent writer processes.

Run from the repository root, in the project's virtual environment, with a server::

    python benchmarks/bench_postgres.py            # full run (about 2 minutes)
    python benchmarks/bench_postgres.py --quick    # smoke run
    python benchmarks/run.py --postgres            # after the file-store benchmarks

The server comes from ``SESSIONSTORE_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``). The benchmark uses its own table
(``ssbench_<pid>``) and drops it at the end. Single-operation figures alternate the
two stores (A B, B A, ...) and report the median of per-pair ratios, like run.py;
a ratio above 1 means PostgreSQL is slower than the durable file store. Appends in
the concurrency runs are checked afterwards: every message must be stored exactly
once, in each writer's order.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from run import Pair, Report, Row, fmt_time, machine, message, pair, scratch, session

from sessionstore import SessionStore
from sessionstore.postgres import PostgresSessionStore
from sessionstore.store import BackendSessionStore

DSN = os.environ.get("SESSIONSTORE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
WRITERS = (1, 4, 16)


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    pairs: dict[int, int]
    append_reps: int
    appends_per_writer: int


FULL = Config(
    sizes=(10, 1_000, 10_000),
    pairs={10: 51, 1_000: 21, 10_000: 9},
    append_reps=9,
    appends_per_writer=200,
)
QUICK = Config(
    sizes=(10, 1_000, 10_000),
    pairs={10: 11, 1_000: 5, 10_000: 3},
    append_reps=3,
    appends_per_writer=40,
)


def server_version() -> str:
    with psycopg.connect(DSN) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def bench_single(cfg: Config, report: Report, pg: PostgresSessionStore, folder: Path) -> None:
    """save / load / append_messages of one session, PostgreSQL vs the durable file store."""
    files = SessionStore(folder)
    extra = message(7)
    for n in cfg.sizes:
        print(f"single operations, {n:,} messages", flush=True)
        s = session(f"p{n}", n)
        reps = cfg.pairs.get(n, 5)
        results: dict[str, Pair] = {}
        results["save"] = pair(lambda s=s: pg.save(s), lambda s=s: files.save(s), reps)
        results["load"] = pair(lambda n=n: pg.load(f"p{n}"), lambda n=n: files.load(f"p{n}"), reps)
        # Each append grows the session by one message; both stores grow alike.
        results["append_messages (1 msg)"] = pair(
            lambda n=n: pg.append_messages(f"p{n}", [extra], output_tokens=1),
            lambda n=n: files.append_messages(f"p{n}", [extra], output_tokens=1),
            cfg.append_reps,
            warmup=0,
            batch=False,
        )
        in_pg, in_files = pg.load(f"p{n}"), files.load(f"p{n}")
        assert in_pg.messages == in_files.messages
        assert in_pg.output_tokens == in_files.output_tokens
        for name, p in results.items():
            report.add(
                Row(
                    f"postgres {name} vs file store (durable)",
                    f"{n:,} msgs",
                    fmt_time(p.a_median),
                    fmt_time(p.b_median),
                    p.ratio,
                )
            )


def _writer(
    kind: str, where: str, table: str, writer: int, count: int, shared: bool, barrier: Any
) -> tuple[float, float]:
    """One writer process: its own store, ``count`` appends after the barrier."""
    store: BackendSessionStore = (
        PostgresSessionStore(where, table=table) if kind == "postgres" else SessionStore(where)
    )
    session_id = "shared" if shared else f"w{writer}"
    store.exists(session_id)  # connect (or touch the folder) before the clock starts
    barrier.wait()
    start = time.perf_counter()
    for i in range(count):
        store.append_messages(session_id, [f"w{writer}-{i} {message(i)}"], output_tokens=1)
    end = time.perf_counter()
    if isinstance(store, PostgresSessionStore):
        store.close()
    return start, end


def _check(store: BackendSessionStore, writers: int, count: int, *, shared: bool) -> None:
    """Every append is stored exactly once, in each writer's order, with its token."""
    ids = ["shared"] if shared else [f"w{k}" for k in range(writers)]
    seen: dict[int, list[int]] = {k: [] for k in range(writers)}
    tokens = 0
    for session_id in ids:
        s = store.load(session_id)
        tokens += s.output_tokens
        for text in s.messages:
            head = text.split(" ", 1)[0]
            w, i = head[1:].split("-")
            seen[int(w)].append(int(i))
    lost = {k: v for k, v in seen.items() if v != list(range(count))}
    assert not lost, f"lost, duplicated or reordered appends: {lost}"
    assert tokens == writers * count, (tokens, writers * count)


def bench_concurrency(cfg: Config, report: Report, table: str, folder: Path) -> None:
    """Total appends/s with 1, 4 and 16 writer processes, each with its own store."""
    context = multiprocessing.get_context("spawn")  # no inherited connections or locks
    count = cfg.appends_per_writer
    for shared in (False, True):
        scenario = "one shared session" if shared else "a session per writer"
        for writers in WRITERS:
            rates = {}
            for kind in ("postgres", "file"):
                print(f"concurrency: {kind}, {writers} writer(s), {scenario}", flush=True)
                store: BackendSessionStore
                if kind == "postgres":
                    where = DSN
                    pg = PostgresSessionStore(DSN, table=table)
                    pg.backend.drop()  # an empty table for every run
                    pg.setup()
                    store = pg
                else:
                    sub = folder / f"c{writers}{'s' if shared else 'p'}"
                    where = str(sub)
                    store = SessionStore(sub)
                with context.Manager() as manager:
                    barrier = manager.Barrier(writers)
                    with context.Pool(writers) as pool:
                        spans = pool.starmap(
                            _writer,
                            [
                                (kind, where, table, k, count, shared, barrier)
                                for k in range(writers)
                            ],
                        )
                elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
                _check(store, writers, count, shared=shared)
                if isinstance(store, PostgresSessionStore):
                    store.close()
                rates[kind] = writers * count / elapsed
            report.add(
                Row(
                    f"append_messages throughput, {scenario} (postgres vs file)",
                    f"{writers} writer(s) x {count}",
                    f"{rates['postgres']:,.0f} appends/s",
                    f"{rates['file']:,.0f} appends/s",
                    rates["file"] / rates["postgres"],
                    "no append lost",
                    True,
                )
            )


def run(*, quick: bool = False) -> Report:
    cfg = QUICK if quick else FULL
    table = f"ssbench_{os.getpid()}"
    report = Report(columns=("postgres", "file store"))
    pg = PostgresSessionStore(DSN, table=table)
    try:
        pg.setup()
        header = f"{machine()}, {server_version()} at {pg.backend.description}"
        print(header, flush=True)
        start = time.perf_counter()
        with scratch("postgres") as folder:
            bench_single(cfg, report, pg, folder / "single")
            bench_concurrency(cfg, report, table, folder)
    finally:
        pg.backend.drop()
        pg.close()
    print()
    print(f"postgres / file store: median of per-pair ratios; {header}")
    print(f"mode: {'quick' if quick else 'full'}, {time.perf_counter() - start:.0f} s")
    print("throughput rows: ratio = file appends/s / postgres appends/s (above 1: file is faster)")
    print()
    print(report.table())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few pairs, 40 appends per writer")
    args = parser.parse_args(argv)
    run(quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
