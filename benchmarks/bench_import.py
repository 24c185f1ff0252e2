"""Start-up cost: ``import sessionstore`` against the one-model floor, in fresh interpreters.

Run from the repository root, in the project's virtual environment::

    python benchmarks/bench_import.py             # 41 pairs (about 30 s)
    python benchmarks/bench_import.py --pairs 11  # a quick look

It exits 1 when the goal is missed.

The floor is the least an application that validates the seed's four fields with
Pydantic and writes with orjson pays at start-up: a module that imports pydantic and
orjson and defines one ``BaseModel`` with ``session_id``, ``messages``,
``input_tokens`` and ``output_tokens``. Each sample is a fresh ``python`` process
that times its own import with ``time.perf_counter`` (interpreter start-up is left
out, so the ratio is of the imports alone); the two sides alternate (A B, B A, ...)
and the figure is the median of the per-pair ratios. The goal is <= 1.1x. Also
shown, for information: the import followed by what an application command does
next (load one session; the floor reads the file and validates it), the whole
process (interpreter start-up included) and the modules each side loads. Children
may write ``.pyc`` files, as an installed wheel has them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.1

FLOOR_MODULE = '''\
"""The import floor: pydantic, orjson and one model with the seed's four fields."""

from __future__ import annotations

import orjson
from pydantic import BaseModel


class Session(BaseModel):
    session_id: str
    messages: tuple[str, ...]
    input_tokens: int
    output_tokens: int


dumps = orjson.dumps
'''

CHILD = """\
import sys, time
sys.path.insert(0, {folder!r})
start = time.perf_counter()
import {module}
imported = time.perf_counter()
{load}
loaded = time.perf_counter()
print(imported - start, loaded - start, len(sys.modules))
"""

LOAD = {
    "sessionstore": "sessionstore.load_session('bench', {folder!r})",
    "import_floor": "import_floor.Session.model_validate_json(open({path!r}, 'rb').read())",
}
"""What an application command does next: load one session (the floor: read and validate)."""

SESSION = b"""{
  "schema_version": 2,
  "session_id": "bench",
  "messages": ["Hi!", "Hello, how can I help?"],
  "input_tokens": 3,
  "output_tokens": 7,
  "created_at": null,
  "updated_at": null,
  "metadata": {}
}
"""


ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
"""The children may write ``.pyc`` files (the warm-up does): an installed wheel has them,
and compiling sources on every start would charge sessionstore for what users never pay."""


Sample = tuple[float, float, float, int]


def sample(module: str, folder: str) -> Sample:
    """(import s, import and first load s, whole process s, modules) of a fresh interpreter."""
    load = LOAD[module].format(folder=folder, path=str(Path(folder, "bench.json")))
    code = CHILD.format(folder=folder, module=module, load=load)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV
    ).stdout
    wall = time.perf_counter() - start
    imported, loaded, modules = out.split()
    return float(imported), float(loaded), wall, int(modules)


def measure(pairs: int, folder: str) -> dict[str, list[Sample]]:
    sides = {"sessionstore": "sessionstore", "floor": "import_floor"}
    results: dict[str, list[Sample]] = {name: [] for name in sides}
    for module in sides.values():  # warm-up: compile .pyc files, fill the page cache
        for _ in range(2):
            sample(module, folder)
    for i in range(pairs):
        order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
        for name, module in order:
            results[name].append(sample(module, folder))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=41, help="alternated pairs (default 41)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "import_floor.py").write_text(FLOOR_MODULE)
        Path(folder, "bench.json").write_bytes(SESSION)
        results = measure(args.pairs, folder)
    ours, floor = results["sessionstore"], results["floor"]

    def ratio(column: int) -> float:
        return statistics.median(a[column] / b[column] for a, b in zip(ours, floor, strict=True))

    def ms(side: list[Sample], column: int) -> str:
        return f"{statistics.median(s[column] for s in side) * 1000:.1f} ms"

    goal = ratio(0)

    import orjson  # noqa: PLC0415  # versions for the record only
    import pydantic  # noqa: PLC0415

    print(
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, pydantic {pydantic.VERSION}, orjson {orjson.__version__}; "
        f"{args.pairs} alternated pairs, median of per-pair ratios"
    )
    print()
    print("| measure | sessionstore | floor | ratio | goal |  |")
    print("|---|---|---|---|---|---|")
    met = "met" if goal <= GOAL else "MISSED"
    print(f"| `import` alone | {ms(ours, 0)} | {ms(floor, 0)} | {goal:.2f}x | <= {GOAL}x | {met} |")
    print(
        f"| `import`, then load one session (floor: read and validate) | {ms(ours, 1)} "
        f"| {ms(floor, 1)} | {ratio(1):.2f}x |  |  |"
    )
    print(
        f"| whole process (interpreter start-up included) | {ms(ours, 2)} "
        f"| {ms(floor, 2)} | {ratio(2):.2f}x |  |  |"
    )
    print(f"| modules in `sys.modules` | {ours[0][3]} | {floor[0][3]} |  |  |  |")
    return 0 if goal <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
