"""PostgreSQL append cost: one message appended to a session of 10 and of 100,000
messages, beside a raw one-row INSERT commit on the same server (issue 10's goals:
the 100,000-message cost at most 1.5x the 10-message cost, and at most 2x the raw
insert).

Run from the repository root, in the project's virtual environment, with a server::

    python benchmarks/bench_postgres_append.py            # full run (about a minute)
    python benchmarks/bench_postgres_append.py --quick    # smoke run

The server comes from ``SESSIONSTORE_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the run uses its own tables
(``ssbench_append_<pid>``) and drops them at the end. The three operations run in
rounds, in a rotating order (A B C, B C A, ...), each timed alone; the table gives
the median and the mean per operation (the mean includes the folds an append
triggers past the fold threshold) and the ratios of the medians and of the means.
Each append goes through ``PostgresSessionStore.append`` with a key, as an agent
would; the raw insert is ``INSERT INTO t VALUES (...)`` in autocommit through
psycopg, with a row of the same size as the append's record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import fmt_time, machine, message, session

from sessionstore.postgres import PostgresSessionStore

DSN = os.environ.get("SESSIONSTORE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SIZES = (10, 100_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer rounds")
    parser.add_argument("--rounds", type=int, default=None, help="appends per operation")
    args = parser.parse_args()
    rounds = args.rounds or (200 if args.quick else 2000)
    table = f"ssbench_append_{os.getpid()}"
    raw_table = f"{table}_raw"
    store = PostgresSessionStore(DSN, table=table)
    store.setup()
    conn = psycopg.connect(DSN, autocommit=True)
    try:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, body bytea NOT NULL)").format(
                sql.Identifier(raw_table)
            )
        )
        for n in SIZES:
            store.save(session(f"s{n}", n))
        appended = dict.fromkeys(SIZES, 0)

        def appender(n: int) -> Callable[[], None]:
            def run() -> None:
                appended[n] += 1
                i = appended[n]
                store.append(f"s{n}", [message(n + i)], input_tokens=5, key=f"k{i}")

            return run

        record = len(message(0)) + 260  # about the bytes of one record line
        insert = sql.SQL("INSERT INTO {} (body) VALUES (%s)").format(sql.Identifier(raw_table))
        body = b"x" * record

        def raw() -> None:
            conn.execute(insert, [body])

        operations: dict[str, Callable[[], None]] = {
            "append, 10 messages": appender(SIZES[0]),
            "append, 100,000 messages": appender(SIZES[1]),
            "raw one-row INSERT commit": raw,
        }
        for operation in operations.values():  # warm up: connections, plans, caches
            for _ in range(20):
                operation()
        times: dict[str, list[float]] = {name: [] for name in operations}
        names = list(operations)
        for r in range(rounds):
            order = names[r % 3 :] + names[: r % 3]
            for name in order:
                start = time.perf_counter()
                operations[name]()
                times[name].append(time.perf_counter() - start)
        report(times, rounds)
        for n in SIZES:  # every append stored, once
            assert len(store.load(f"s{n}").messages) == n + appended[n]
    finally:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(raw_table)))
        conn.close()
        store.backend.drop()
        store.close()


def report(times: dict[str, list[float]], rounds: int) -> None:
    raw = times["raw one-row INSERT commit"]
    small = times["append, 10 messages"]
    print(f"PostgreSQL append, {rounds} operations each; {machine()}")
    print(f"server: {DSN.rsplit('@', 1)[-1]}")
    print()
    print(f"| {'operation':<28} | {'median':>9} | {'mean':>9} | {'p99':>9} |")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for name, values in times.items():
        p99 = sorted(values)[int(len(values) * 0.99) - 1]
        print(
            f"| {name:<28} | {fmt_time(statistics.median(values)):>9} |"
            f" {fmt_time(statistics.fmean(values)):>9} | {fmt_time(p99):>9} |"
        )
    print()
    print(f"| {'ratio':<40} | {'medians':>8} | {'means':>8} | goal |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|------|")
    big = times["append, 100,000 messages"]
    rows = [
        ("append 100,000 / append 10", big, small, "1.5x"),
        ("append 10 / raw insert", small, raw, "2x"),
        ("append 100,000 / raw insert", big, raw, "2x"),
    ]
    for label, a, b, goal in rows:
        medians = statistics.median(a) / statistics.median(b)
        means = statistics.fmean(a) / statistics.fmean(b)
        print(f"| {label:<40} | {medians:>7.2f}x | {means:>7.2f}x | {goal:>4} |")


if __name__ == "__main__":
    main()
