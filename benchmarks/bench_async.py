"""The async API against the sync one: throughput under many tasks, and per-call cost.

Run from the repository root, in the project's virtual environment::

    python benchmarks/bench_async.py                 # folder and memory
    python benchmarks/bench_async.py --rounds 3      # a quick look
    SESSIONSTORE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        python benchmarks/bench_async.py --postgres  # PostgreSQL too

Goals (issue 13), each a ratio measured side by side in one run:

- throughput: 1,000 concurrent tasks appending to 100 sessions (durable, one key per
  append) move at least as many appends per second as the sync API with 16 threads
  doing the same appends (ratio async/sync >= 1.0);
- per-call cost: one task appending in a loop costs at most 1.3x the same loop of sync
  calls.

Each figure is the median over ``--rounds`` alternated rounds (sync, async, sync, ...).
It exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sessionstore import AsyncSessionStore, SessionStore

TASKS = 1000
SESSIONS = 100
THREADS = 16
THROUGHPUT_GOAL = 1.0
PER_CALL_GOAL = 1.3


def sync_throughput(make: Callable[[], Any], appends_per_task: int) -> float:
    """Appends per second: 16 threads share the 1,000 tasks' appends, in the order the
    tasks make them (each task's first append, then each task's second, ...)."""
    store = make()
    jobs = [(t, i) for i in range(appends_per_task) for t in range(TASKS)]

    def one(job: tuple[int, int]) -> None:
        task, i = job
        store.append(f"s{task % SESSIONS}", [f"task {task} message {i}"], key=f"{task}-{i}")

    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, jobs))
    return len(jobs) / (time.perf_counter() - start)


def async_throughput(make: Callable[[], Any], appends_per_task: int) -> float:
    """Appends per second: 1,000 tasks at once, each appending in turn."""

    async def main() -> float:
        async with make() as store:

            async def task(t: int) -> None:
                for i in range(appends_per_task):
                    await store.append(
                        f"s{t % SESSIONS}", [f"task {t} message {i}"], key=f"{t}-{i}"
                    )

            start = time.perf_counter()
            await asyncio.gather(*(task(t) for t in range(TASKS)))
            return TASKS * appends_per_task / (time.perf_counter() - start)

    return asyncio.run(main())


def sync_per_call(make: Callable[[], Any], calls: int) -> float:
    store = make()
    store.append("one", ["warm-up"])
    start = time.perf_counter()
    for i in range(calls):
        store.append("one", [f"message {i}"])
    return (time.perf_counter() - start) / calls


def async_per_call(make: Callable[[], Any], calls: int) -> float:
    async def main() -> float:
        async with make() as store:
            await store.append("one", ["warm-up"])
            start = time.perf_counter()
            for i in range(calls):
                await store.append("one", [f"message {i}"])
            return (time.perf_counter() - start) / calls

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--appends", type=int, default=3, help="appends per task (default 3)")
    parser.add_argument("--calls", type=int, default=300, help="calls in the per-call loop")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too (needs the DSN)")
    args = parser.parse_args()

    kinds: dict[str, tuple[Callable[[str], Any], Callable[[str], Any]]] = {
        "folder": (lambda d: SessionStore(d), lambda d: AsyncSessionStore(d)),
    }
    if args.postgres:
        dsn = os.environ["SESSIONSTORE_TEST_POSTGRES_DSN"]
        from sessionstore.postgres import (  # noqa: PLC0415
            AsyncPostgresSessionStore,
            PostgresSessionStore,
        )

        def pg_sync(d: str) -> Any:
            store = PostgresSessionStore(dsn, table=f"bench_{os.path.basename(d)}", max_size=16)
            store.setup()
            return store

        def pg_async(d: str) -> Any:
            table = f"bench_{os.path.basename(d)}_a"
            with PostgresSessionStore(dsn, table=table) as maker:
                maker.setup()  # the tables exist before the timed part
            return AsyncPostgresSessionStore(dsn, table=table, max_size=16)

        kinds["postgres"] = (pg_sync, pg_async)

    print(
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {TASKS} tasks x {args.appends} appends over "
        f"{SESSIONS} sessions vs {THREADS} threads; median of {args.rounds} rounds\n"
    )
    print("| store | measure | sync | async | ratio | goal |  |")
    print("|---|---|---|---|---|---|---|")
    failed = False
    for name, (make_sync, make_async) in kinds.items():
        ratios_t, ratios_c, sync_t, async_t, sync_c, async_c = [], [], [], [], [], []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
                s = sync_throughput(functools.partial(make_sync, d1), args.appends)
                a = async_throughput(functools.partial(make_async, d2), args.appends)
            with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
                sc = sync_per_call(functools.partial(make_sync, d1), args.calls)
                ac = async_per_call(functools.partial(make_async, d2), args.calls)
            sync_t.append(s)
            async_t.append(a)
            sync_c.append(sc)
            async_c.append(ac)
            ratios_t.append(a / s)
            ratios_c.append(ac / sc)
        rt, rc = statistics.median(ratios_t), statistics.median(ratios_c)
        ok_t, ok_c = rt >= THROUGHPUT_GOAL, rc <= PER_CALL_GOAL
        failed |= not (ok_t and ok_c)
        print(
            f"| {name} | appends/s, {TASKS} tasks vs {THREADS} threads | "
            f"{statistics.median(sync_t):.0f} | {statistics.median(async_t):.0f} | {rt:.2f}x | "
            f">= {THROUGHPUT_GOAL}x | {'met' if ok_t else 'MISSED'} |"
        )
        print(
            f"| {name} | one task, per append | {statistics.median(sync_c) * 1e3:.3f} ms | "
            f"{statistics.median(async_c) * 1e3:.3f} ms | {rc:.2f}x | <= {PER_CALL_GOAL}x | "
            f"{'met' if ok_c else 'MISSED'} |"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
