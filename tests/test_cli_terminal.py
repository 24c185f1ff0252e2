"""The command on a real terminal (a pseudo-terminal), in pipes, and on Ctrl-C.

The progress bar must sit on the terminal's bottom line while result lines scroll
above it (issue 11.1: it was glued onto them), and must leave no trace in pipes,
with ``--json``/``-q``, or with ``NO_COLOR``/``TERM=dumb``. A tiny terminal emulator
replays exactly the bytes the terminal received.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from sessionstore.cli import main

SEED = b'{"session_id": "%s", "messages": ["m"], "input_tokens": 1, "output_tokens": 2}'
RESULT = re.compile(r"^(migrated|would-migrate) +1->3  s-\d{4}$")
BAR = re.compile(r"migrate: +\d+%\|.*\| *\d+/\d+ ")
SUMMARY = re.compile(r"^/.*: 300 files: 300 migrated$")
CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def make_folder(folder: Path, count: int, *, pad: str = "") -> Path:
    folder.mkdir()
    for i in range(count):
        name = f"s-{i:04d}{pad}"
        (folder / f"{name}.json").write_bytes(SEED % name.encode())
    return folder


def run_on_terminal(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python -m sessionstore ARGV`` with stdin, stdout and stderr on one
    pseudo-terminal of 100 columns; return the exit code and every byte it received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    environment = {**os.environ, "TERM": "xterm", "COLUMNS": "100", "LINES": "40"}
    environment.pop("NO_COLOR", None)
    environment.update(env or {})
    child = subprocess.Popen(
        [sys.executable, "-m", "sessionstore", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environment,
        start_new_session=True,
    )
    os.close(slave)
    received = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed, the child is done
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    return child.wait(), received.decode("utf-8")


class Screen:
    """The lines of a terminal (scrollback included) as the bytes leave them."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0
        self.bar_seen_at_bottom = 0

    def text(self, row: int) -> str:
        return "".join(self.rows[row]).rstrip()

    def feed(self, data: str, check: object) -> None:
        index = 0
        while index < len(data):
            char = data[index]
            if char == "\x1b":
                match = CSI.match(data, index)
                assert match, f"unexpected escape at {data[index : index + 10]!r}"
                count = int(match[1] or 1)
                if match[2] == "A":
                    self.row = max(0, self.row - count)
                elif match[2] == "K":
                    del self.rows[self.row][self.col :]
                index = match.end()
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.rows):
                    self.rows.append([])
            else:
                line = self.rows[self.row]
                line.extend(" " * (self.col - len(line) + 1))
                line[self.col] = char
                self.col += 1
            if char in "\r\n":
                check(self)  # type: ignore[operator]
            index += 1


def test_progress_stays_on_the_bottom_line_with_results_scrolling_above(tmp_path: Path) -> None:
    # Issue 11.1: the bar was glued onto result lines
    # ("migrate [####....] 11777/20000migrated: s-11776.json ...").
    folder = make_folder(tmp_path / "store", 300)
    code, received = run_on_terminal(["migrate", "--dir", str(folder)])
    assert code == 0, received

    def check(screen: Screen) -> None:
        for row in range(screen.row):
            text = screen.text(row)
            assert not BAR.search(text), f"a bar above the bottom line: {text!r}"
            assert not text or RESULT.match(text) or SUMMARY.match(text), f"damaged: {text!r}"
        if BAR.search(screen.text(screen.row)):
            screen.bar_seen_at_bottom += 1
            assert screen.row == len(screen.rows) - 1

    screen = Screen()
    screen.feed(received, check)
    assert screen.bar_seen_at_bottom > 10, "the bar was drawn below the results as they came"
    lines = [screen.text(row) for row in range(len(screen.rows)) if screen.text(row)]
    assert [line for line in lines if not RESULT.match(line)] == [
        f"{folder}: 300 files: 300 migrated"
    ], "the bar is gone at the end and nothing else is left"
    assert sorted(lines[:-1]) == [f"migrated        1->3  s-{i:04d}" for i in range(300)]


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--json"], {}),
        (["--json-lines"], {}),
        (["-q"], {}),
        ([], {"NO_COLOR": "1"}),
        ([], {"TERM": "dumb"}),
    ],
    ids=["json", "json-lines", "quiet", "NO_COLOR", "TERM=dumb"],
)
def test_no_bar_on_a_terminal_for_machines_quiet_or_plain_terminals(
    tmp_path: Path, argv: list[str], env: dict[str, str]
) -> None:
    folder = make_folder(tmp_path / "store", 50)
    code, received = run_on_terminal(["migrate", "--dry-run", "--dir", str(folder), *argv], env)
    assert code == 0
    assert not BAR.search(received)
    assert "\x1b" not in received
    assert "\r" not in received.replace("\r\n", "\n"), "no carriage return but the terminal's"


def test_in_a_pipe_there_is_no_carriage_return_and_no_escape_code(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "store", 50)
    done = subprocess.run(
        [sys.executable, "-m", "sessionstore", "migrate", "--dir", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TERM": "xterm"},
    )
    assert done.returncode == 0
    assert done.stderr == ""
    assert "\r" not in done.stdout
    assert "\x1b" not in done.stdout
    assert done.stdout.count("\n") == 51


def test_the_command_in_a_pipe_never_loads_tqdm(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "store", 3)
    script = (
        "import sys\nfrom sessionstore.cli import main\n"
        f"main(['validate', '--dir', {str(folder)!r}])\n"
        "sys.stderr.write(str('tqdm' in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stderr == "False"


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    # Issue 11.8: Ctrl-C exited 2, the code of a usage error.
    # No race: the child cannot finish before the signal arrives. Its report is many
    # times larger than the pipe it writes into, and only one byte of it is read
    # before the signal, so it is still running (writing, or blocked on the full
    # pipe) when SIGINT comes, whatever the interpreter's speed or buffer sizes.
    count, pad = 3000, "-" + "x" * 120  # ids of 127 characters: lines of ~150 bytes
    folder = make_folder(tmp_path / "store", count, pad=pad)
    child = subprocess.Popen(
        [sys.executable, "-m", "sessionstore", "migrate", "--dry-run", "--dir", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    capacity = 1 << 16  # Linux's default pipe size; asked for where the platform can tell
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if get_size is not None:
        capacity = fcntl.fcntl(child.stdout.fileno(), get_size)
    assert count * len(f"would-migrate   1->3  s-0000{pad}\n") > 4 * capacity
    assert os.read(child.stdout.fileno(), 1), "it is running: it wrote its first byte"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate()
    assert child.returncode == 130
    lines = err.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("interrupted: stopped by Ctrl-C; nothing is half-written")


def test_ctrl_c_under_json_is_a_json_error_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json  # noqa: PLC0415

    from sessionstore import maintenance  # noqa: PLC0415

    folder = make_folder(tmp_path / "store", 3)
    real = maintenance.inspect_folder

    def interrupted(*args: object, **kwargs: object) -> object:
        total, reports = real(*args, **kwargs)  # type: ignore[arg-type]

        def stop() -> object:
            yield next(reports)
            raise KeyboardInterrupt

        return total, stop()

    monkeypatch.setattr(maintenance, "inspect_folder", interrupted)
    assert main(["validate", "--dir", str(folder), "--json"]) == 130
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["ok"] is False
    assert report["error"]["kind"] == "interrupted"
    assert report["error"]["exit_code"] == 130
    assert [item["id"] for item in report["items"]] == ["s-0000"]
    assert err.startswith("interrupted: ")
