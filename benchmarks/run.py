"""sessionstore benchmark suite: every figure as a ratio to a physical floor or the seed.

Run from the repository root, in the project's virtual environment::

    python benchmarks/run.py            # full run (a few minutes)
    python benchmarks/run.py --quick    # smoke run (under a minute; smaller sizes, fewer pairs)

The machines this runs on are shared and noisy, so every comparison alternates the
two sides of a pair (A B, B A, A B, ...) and reports the median of the per-pair
ratios, never a ratio of totals. A ratio below 1 means sessionstore is faster.
Timing never goes into the test suite. See benchmarks/README.md for the goals and
the last results.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pydantic
from pydantic import BaseModel

from sessionstore import SessionStore, StoredSession, cli

ROOT = Path(__file__).resolve().parent.parent
SEED_PATH = ROOT / "tests" / "seed" / "seed_session_store.py"  # verbatim copy of the seed
OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
MESSAGE_CHARS = 200


def load_seed() -> ModuleType:
    """The seed module, loaded by file path (it is never importable from src/)."""
    spec = importlib.util.spec_from_file_location("seed_session_store", SEED_PATH)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the seed module from {SEED_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- data


def message(i: int) -> str:
    """A ~200-character message; one in eight has non-ASCII text (accents, an emoji)."""
    head = f"message {i}: "
    body = "the quick brown fox jumps over the lazy dog, " * 5
    if i % 8 == 0:
        body = "déjà vu — naïve café, 東京 and 🚀 " + body
    return (head + body)[:MESSAGE_CHARS]


def messages(n: int) -> tuple[str, ...]:
    return tuple(message(i) for i in range(n))


def session(session_id: str, n: int) -> StoredSession:
    return StoredSession(
        session_id=session_id, messages=messages(n), input_tokens=n * 50, output_tokens=n * 40
    )


class Bare(BaseModel):
    """The floor's model: the seed's four fields, nothing else checked."""

    session_id: str
    messages: tuple[str, ...]
    input_tokens: int
    output_tokens: int


# --------------------------------------------------------------------------- floors

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def floor_save(directory: Path, name: str, document: dict[str, Any], *, durable: bool) -> None:
    """The least a durable atomic save can do: dumps, temp write, fsync, replace, fsync folder."""
    data = orjson.dumps(document, option=OPTIONS)
    temp = directory / f".{name}.floor.tmp"
    fd = os.open(temp, _TEMP_FLAGS, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / name)
    if durable:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def floor_load(path: Path) -> Bare:
    """The least a validated load can do: read the bytes, validate a bare 4-field model."""
    with open(path, "rb") as f:
        data = f.read()
    return Bare.model_validate_json(data)


def floor_list(directory: Path) -> list[str]:
    with os.scandir(directory) as entries:
        return sorted(e.name[:-5] for e in entries if e.name.endswith(".json"))


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Seconds per call of ``fn``, over ``repeat`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


@dataclass
class Pair:
    """Alternated timings (seconds per call) of A (sessionstore) and B (floor or seed)."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(x / y for x, y in zip(self.a, self.b, strict=True))

    @property
    def a_median(self) -> float:
        return statistics.median(self.a)

    @property
    def b_median(self) -> float:
        return statistics.median(self.b)


SAMPLE_SECONDS = 0.02
"""Each timed sample runs a side this long (calls are batched), so that timer
resolution and the cold caches after the other side ran do not dominate small calls."""


def pair(
    a: Callable[[], object],
    b: Callable[[], object],
    pairs: int,
    *,
    warmup: int = 1,
    batch: bool = True,
) -> Pair:
    """Time ``a`` and ``b`` alternately (A B, B A, A B, ...); return per-call timings.

    With ``batch``, each sample is a run of back-to-back calls lasting about
    ``SAMPLE_SECONDS``; the garbage collector is off during samples and run between pairs.
    """
    for _ in range(warmup):
        a()
        b()
    repeat = 1
    if batch:
        slowest = max(timed(a), timed(b))
        repeat = max(1, min(2_000, round(SAMPLE_SECONDS / max(slowest, 1e-7))))
    result = Pair()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(pairs):
            order = ((a, result.a), (b, result.b)) if i % 2 == 0 else ((b, result.b), (a, result.a))
            for fn, out in order:
                out.append(timed(fn, repeat))
            gc.collect()
    finally:
        if gc_was:
            gc.enable()
    return result


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


@dataclass
class Row:
    name: str
    size: str
    ours: str
    other: str
    ratio: float | None
    goal: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        verdict = {True: "met", False: "MISSED", None: ""}[self.met]
        return [self.name, self.size, self.ours, self.other, ratio, self.goal, verdict]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: tuple[str, str] = ("sessionstore", "floor / seed")

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print("  " + " | ".join(row.cells()), flush=True)

    def table(self) -> str:
        head = ["benchmark", "size", *self.columns, "ratio", "goal", ""]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row.cells()) + " |" for row in self.rows]
        return "\n".join(lines)


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"ssbench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def add_series(
    report: Report,
    label: str,
    pairs: dict[int, Pair],
    *,
    limit: float | None = None,
    goal: Callable[[int, float], tuple[str, bool | None]] | None = None,
) -> None:
    """One row per session size; with ``limit``, a last row checking the worst ratio
    against it; with ``goal``, each row's own goal text and verdict."""
    for n, p in pairs.items():
        text, met = goal(n, p.ratio) if goal is not None else ("", None)
        ours, other = fmt_time(p.a_median), fmt_time(p.b_median)
        report.add(Row(label, f"{n:,} msgs", ours, other, p.ratio, text, met))
    if limit is not None:
        size = max(pairs, key=lambda k: pairs[k].ratio)
        ratio = pairs[size].ratio
        report.add(Row("  worst", f"{size:,}", "", "", ratio, f"<= {limit}x", ratio <= limit))


def seed_copy(seed: ModuleType, s: StoredSession, session_id: str) -> Any:
    """The seed's own ``StoredSession`` with the content of ``s``."""
    return seed.StoredSession(
        session_id=session_id,
        messages=s.messages,
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
    )


# --------------------------------------------------------------------------- benchmarks


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    pairs_durable: int
    pairs_fast: Callable[[int], int]
    list_count: int
    append_sizes: tuple[int, ...]
    append_reps: int
    migrate_files: int
    migrate_pairs: int
    memory_messages: int


FULL = Config(
    sizes=(10, 1_000, 10_000),
    pairs_durable=31,
    pairs_fast=lambda n: {10: 301, 1_000: 101, 10_000: 31}.get(n, 15),
    list_count=100_000,
    append_sizes=(10, 1_000, 10_000, 100_000),
    append_reps=9,
    migrate_files=10_000,
    migrate_pairs=3,
    memory_messages=100_000,
)
QUICK = Config(
    sizes=(10, 1_000, 10_000),
    pairs_durable=7,
    pairs_fast=lambda n: {10: 51, 1_000: 21, 10_000: 7}.get(n, 5),
    list_count=10_000,
    append_sizes=(10, 1_000, 10_000),
    append_reps=3,
    migrate_files=300,
    migrate_pairs=1,
    memory_messages=100_000,
)


def bench_save(cfg: Config, report: Report, seed: ModuleType) -> None:
    print("save", flush=True)
    durable: dict[int, Pair] = {}
    fast: dict[int, Pair] = {}
    seed_pairs: dict[int, Pair] = {}
    with scratch("save") as folder:
        store = SessionStore(folder)
        quick_store = SessionStore(folder, durable=False)
        for n in cfg.sizes:
            s = session(f"s{n}", n)
            doc = {
                "session_id": s.session_id,
                "messages": list(s.messages),
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
            }
            full_doc = {**doc, "schema_version": 2, "created_at": None, "updated_at": None}
            full_doc["metadata"] = {}
            seed_session = seed_copy(seed, s, f"seed{n}")
            durable[n] = pair(
                lambda s=s: store.save(s),
                lambda d=full_doc, n=n: floor_save(folder, f"f{n}.json", d, durable=True),
                cfg.pairs_durable,
            )
            fast[n] = pair(
                lambda s=s: quick_store.save(s),
                lambda d=full_doc, n=n: floor_save(folder, f"f{n}.json", d, durable=False),
                cfg.pairs_fast(n),
            )
            seed_pairs[n] = pair(
                lambda s=s: store.save(s),
                lambda ss=seed_session: seed.save_session(ss, folder),
                cfg.pairs_durable,
            )
    add_series(report, "save (durable) vs floor", durable, limit=1.15)
    add_series(report, "save (durable=False) vs floor without fsync", fast, limit=1.3)
    add_series(
        report,
        "save (durable) vs seed save (not durable)",
        seed_pairs,
        goal=lambda n, r: ("< 1x (faster)", r < 1) if n == 1_000 else ("", None),
    )


def bench_load(cfg: Config, report: Report, seed: ModuleType) -> None:
    print("load", flush=True)
    current: dict[int, Pair] = {}
    legacy: dict[int, Pair] = {}
    vs_seed: dict[int, Pair] = {}
    with scratch("load") as folder:
        store = SessionStore(folder)
        for n in cfg.sizes:
            s = session(f"c{n}", n)
            store.save(s)
            seed_session = seed_copy(seed, s, f"v{n}")
            seed.save_session(seed_session, folder)
            assert store.load(f"v{n}").messages == s.messages
            reps = cfg.pairs_fast(n)
            current[n] = pair(
                lambda n=n: store.load(f"c{n}"),
                lambda n=n: floor_load(folder / f"c{n}.json"),
                reps,
            )
            legacy[n] = pair(
                lambda n=n: store.load(f"v{n}"),
                lambda n=n: floor_load(folder / f"v{n}.json"),
                reps,
            )
            vs_seed[n] = pair(
                lambda n=n: store.load(f"v{n}"),
                lambda n=n: seed.load_session(f"v{n}", folder),
                reps,
            )
    add_series(report, "load current vs floor", current, limit=1.3)
    add_series(report, "load version 1 (seed file) vs floor", legacy, limit=2.0)
    add_series(
        report,
        "load version 1 vs seed load",
        vs_seed,
        goal=lambda n, r: ("<= 0.67x (1.5x faster)", r <= 1 / 1.5) if n >= 1_000 else ("", None),
    )


def bench_list(cfg: Config, report: Report) -> None:
    count = cfg.list_count
    print(f"list of {count:,} sessions", flush=True)
    with scratch("list") as folder:
        for i in range(count):
            fd = os.open(folder / f"sess-{i:06d}.json", os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        # What a live store also holds: temp files and the lock folder.
        os.close(os.open(folder / ".sess-000001.json.0123456789abcdef.tmp", os.O_CREAT, 0o600))
        os.mkdir(folder / ".locks")
        store = SessionStore(folder)
        assert store.list() == floor_list(folder)[: len(store.list())]
        p = pair(store.list, lambda: floor_list(folder), 15 if count >= 100_000 else 9)
    report.add(
        Row(
            "list() vs scandir + suffix filter + sort",
            f"{count:,} files",
            fmt_time(p.a_median),
            fmt_time(p.b_median),
            p.ratio,
            "<= 1.5x",
            p.ratio <= 1.5,
        )
    )


def bench_append(cfg: Config, report: Report) -> None:
    print("append_messages", flush=True)
    results: dict[int, Pair] = {}
    with scratch("append") as folder:
        store = SessionStore(folder)
        extra = message(7)
        for n in cfg.append_sizes:
            s = session(f"a{n}", n)
            store.save(s)
            full_doc = {
                **dict(s),
                "messages": [*s.messages, extra],
                "created_at": None,
                "updated_at": None,
            }
            results[n] = pair(
                lambda n=n: store.append_messages(f"a{n}", [extra], output_tokens=1),
                lambda d=full_doc, n=n: floor_save(folder, f"f{n}.json", d, durable=True),
                cfg.append_reps,
                warmup=0,
                batch=False,
            )
            store.delete(f"a{n}")
    base = None
    for n, p in results.items():
        base = base or p.a_median
        report.add(
            Row(
                "append_messages(1 msg) vs durable floor save of the result",
                f"{n:,} msgs",
                fmt_time(p.a_median),
                fmt_time(p.b_median),
                p.ratio,
                f"{p.a_median / base:.1f}x the 10-msg cost",
            )
        )


def bench_migrate(cfg: Config, report: Report) -> None:
    count = cfg.migrate_files
    print(f"migrate of {count:,} version-1 files", flush=True)
    documents = [
        json.dumps(
            {
                "session_id": f"m{i:05d}",
                "messages": list(messages(10)),
                "input_tokens": 500,
                "output_tokens": 400,
            },
            indent=2,
        ).encode()
        for i in range(count)
    ]

    def populate(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for i, data in enumerate(documents):
            (folder / f"m{i:05d}.json").write_bytes(data)
        os.sync()

    def migrate(folder: Path) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["migrate", "--dir", str(folder)])
        assert code == 0, code

    def floor(folder: Path) -> None:
        # One durable write per file: read, upgrade, dumps, temp, fsync, replace, fsync folder.
        for name in sorted(os.listdir(folder)):
            with open(folder / name, "rb") as f:
                doc = orjson.loads(f.read())
            doc = {
                "schema_version": 2,
                **doc,
                "created_at": None,
                "updated_at": None,
                "metadata": {},
            }
            floor_save(folder, name, doc, durable=True)

    a_times: list[float] = []
    b_times: list[float] = []
    with scratch("migrate") as base:
        folder = base / "sessions"
        for i in range(cfg.migrate_pairs):
            sides = [(migrate, a_times), (floor, b_times)]
            for fn, out in sides if i % 2 == 0 else sides[::-1]:
                populate(folder)
                out.append(timed(lambda fn=fn: fn(folder)))
        assert SessionStore(folder).load("m00000").schema_version == 2
    p = Pair(a_times, b_times)
    report.add(
        Row(
            "migrate (files/s) vs one durable write per file",
            f"{count:,} files",
            f"{count / p.a_median:,.0f} files/s",
            f"{count / p.b_median:,.0f} files/s",
            p.ratio,
            "<= 1.5x",
            p.ratio <= 1.5,
        )
    )


_MEMORY_CHILD = r"""
import gc, sys, tracemalloc
from pathlib import Path
from sessionstore import SessionStore

def status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

folder, sid, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = SessionStore(folder)
gc.collect()
if mode == "tracemalloc":
    tracemalloc.start()
    s = store.load(sid)
    print(tracemalloc.get_traced_memory()[1])
else:
    # ru_maxrss survives exec (it would report the parent's peak): reset the
    # high-water mark instead (Linux >= 4.0) and read VmHWM after the load.
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    s = store.load(sid)
    print(status("VmHWM:") - before)
"""


def bench_memory(cfg: Config, report: Report) -> None:
    n = cfg.memory_messages
    print("peak memory of a 20 MB load", flush=True)
    with scratch("memory") as folder:
        store = SessionStore(folder, durable=False)
        store.save(session("big", n))
        size = (folder / "big.json").stat().st_size
        peaks = {}
        for mode in ("rss", "tracemalloc"):
            out = subprocess.run(
                [sys.executable, "-c", _MEMORY_CHILD, str(folder), "big", mode],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            peaks[mode] = int(out.strip())
    labels = {
        "rss": ("peak RSS growth during load()", "< 4x file size"),
        "tracemalloc": ("peak tracemalloc during load() (info)", "see README"),
    }
    for mode, peak in peaks.items():
        label, goal = labels[mode]
        report.add(
            Row(
                label,
                f"{size / 1e6:.1f} MB file",
                f"{peak / 1e6:.1f} MB",
                "",
                peak / size,
                goal,
                peak / size < 4 if mode == "rss" else None,
            )
        )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}, orjson {orjson.__version__}, "
        f"pydantic {pydantic.VERSION}, temp folder {tempfile.gettempdir()}"
    )


SECTIONS = ("save", "load", "list", "append", "migrate", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few pairs (< 1 min)")
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="run only these sections (repeatable)"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="then run benchmarks/bench_postgres.py (server: SESSIONSTORE_TEST_POSTGRES_DSN)",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    only = set(args.only or SECTIONS)
    seed = load_seed()
    report = Report()
    print(machine(), flush=True)
    start = time.perf_counter()
    if "save" in only:
        bench_save(cfg, report, seed)
    if "load" in only:
        bench_load(cfg, report, seed)
    if "list" in only:
        bench_list(cfg, report)
    if "append" in only:
        bench_append(cfg, report)
    if "migrate" in only:
        bench_migrate(cfg, report)
    if "memory" in only:
        bench_memory(cfg, report)
    print()
    print(f"sessionstore / floor (or seed): median of per-pair ratios; {machine()}")
    print(f"mode: {'quick' if args.quick else 'full'}, {time.perf_counter() - start:.0f} s")
    print()
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    missed = [row for row in report.rows if row.met is False]
    print()
    print(f"{len(missed)} goal(s) missed" if missed else "every goal met")
    if args.postgres:
        print(flush=True)
        # Imported here so that the file-store run needs neither psycopg nor a server.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        importlib.import_module("bench_postgres").run(quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
