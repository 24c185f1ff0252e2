# A small model of the original application's session command line, in its style.
# It imports its store as the module `session_store`; tests/test_dropin.py runs it with
# the original module (seed_session_store.py) and with sessionstore in that module's
# place, as the application was run when sessionstore replaced its module (issue 12).
# Like the original, it catches SessionNotFoundError around a load and
# SessionDeleteError around a delete, and nothing else.
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from session_store import (
    SessionDeleteError,
    SessionNotFoundError,
    delete_session,
    list_sessions,
    load_session,
)


def show_session(session_id: str, directory: Path | None = None) -> int:
    try:
        session = load_session(session_id, directory)
    except SessionNotFoundError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'session {session.session_id}: {len(session.messages)} messages, '
          f'{session.input_tokens} in / {session.output_tokens} out')
    for message in session.messages:
        print(f'  {message}')
    return 0


def show_sessions(directory: Path | None = None) -> int:
    for session_id in list_sessions(directory):
        print(session_id)
    return 0


def remove_session(session_id: str, directory: Path | None = None) -> int:
    try:
        deleted = delete_session(session_id, directory)
    except SessionDeleteError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    if deleted:
        print(f'deleted {session_id}')
        return 0
    print(f'no session {session_id}')
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='sessions', description='Inspect stored sessions.')
    parser.add_argument('--dir', type=Path, default=None, help='session folder')
    commands = parser.add_subparsers(dest='command', required=True)
    load = commands.add_parser('load', help='print one session')
    load.add_argument('session_id')
    commands.add_parser('list', help='list the stored sessions')
    delete = commands.add_parser('delete', help='delete one session')
    delete.add_argument('session_id')
    args = parser.parse_args(argv)

    if args.command == 'load':
        return show_session(args.session_id, args.dir)
    if args.command == 'list':
        return show_sessions(args.dir)
    return remove_session(args.session_id, args.dir)


if __name__ == '__main__':
    sys.exit(main())
