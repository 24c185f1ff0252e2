"""What a conformance test gets from your factory: a store, and how to reach its storage.

Imports nothing from Hypothesis or pytest, so a factory module can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sessionstore.store import BackendSessionStore

__all__ = ["AnyStore", "StoreFactory", "StoreUnderTest"]

AnyStore = BackendSessionStore | Any
"""A sync store, or an async one (``AsyncSessionStore``, ``AsyncMemorySessionStore``,
``AsyncPostgresSessionStore``, or any class whose methods are the sync store's as
coroutines): the kit takes either (see ``sessionstore.testing.adapt``)."""


@dataclass
class StoreUnderTest:
    """One store over empty storage, and what the suite may do with that storage.

    Only ``store`` is required; each optional field switches on the rules that need it
    (a rule whose field is missing is skipped, with a reason naming the field).

    - ``store``: the store to test, over storage that holds no session. It may be
      an async store (its ``load`` a coroutine function); ``reopen`` and ``opener``
      then give async stores too. The suite enters it (``async with``) on an event
      loop of its own and runs the sync rules through a ``BlockingView``, and the
      tasks rule with many tasks on that loop (``sessionstore.testing.adapt``).
    - ``reopen``: a new handle on the same storage, as after a restart; it may close
      the old handle, and the suite uses only the newest one afterwards.
    - ``opener``: a second, independent store object on the same storage (its own
      connections and handles; the first stays open). The two-store rule needs it;
      the concurrency rules use it for some of their threads and, unless
      ``multiprocess`` is false, call it in child processes (started with
      ``spawn``). It must then be picklable: a module-level function, a
      ``functools.partial`` of one, or an instance of a module-level class, holding
      only plain data (a path, a DSN, a table name), never the store itself.
    - ``multiprocess``: whether other processes can reach the storage (false for
      in-memory storage). When false, the concurrency rule runs threads only, and the
      fork rule checks that the child does not hang and sees its own writes, not
      that the parent sees them.
    - ``failing_save``: a context manager inside which a ``save`` fails with
      ``SessionWriteError`` before anything lands.
    - ``check``: an extra invariant the state machine runs after every step (no
      temporary files left, say).
    - ``cleanup``: releases the storage (drops the table, removes the folder); the
      suite calls it once, through ``close``, after the test that made the subject.
    """

    store: AnyStore
    reopen: Callable[[], AnyStore] | None = None
    failing_save: Callable[[], AbstractContextManager[object]] | None = None
    check: Callable[[], None] | None = None
    cleanup: Callable[[], None] | None = None
    opener: Callable[[], AnyStore] | None = None
    multiprocess: bool = True

    def close(self) -> None:
        """Run ``cleanup`` if there is one."""
        if self.cleanup is not None:
            self.cleanup()


StoreFactory = Callable[[], StoreUnderTest]
"""A function the suite calls for each test (and each Hypothesis example) to get a
``StoreUnderTest`` over new, empty storage."""
