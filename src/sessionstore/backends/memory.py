"""Sessions in a dict: for tests and caches. Same contract as the other backends."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sessionstore.backends.base import content_etag
from sessionstore.errors import ConflictError, SessionTooLargeError
from sessionstore.locking import lock_owner

__all__ = ["MemoryBackend"]

_instances: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held a session's lock at the fork: that
    # thread does not exist here, so its locks would never be released.
    for backend in list(_instances):
        backend._reset_locks()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Slot:
    """One session's lock: re-entrant per owner (``sessionstore.locking.lock_owner``:
    the thread, or an async call chain's token), so a token owner may take it in one
    thread and release it in another."""

    __slots__ = ("depth", "free", "owner", "users")

    def __init__(self) -> None:
        self.free = threading.Condition(threading.Lock())
        self.owner: object = None
        self.depth = 0
        self.users = 0  # holders and waiters; the slot is dropped at 0


class MemoryBackend:
    """Documents held in this process's memory; lost when it exits. Thread-safe.

    Keeps the write contract of ``sessionstore.backends.base`` within the process:
    one re-entrant lock per session (per thread, or per async call chain), taken by
    every write, waited for without bound.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._documents: dict[str, bytes] = {}
        self._reset_locks()
        _instances.add(self)

    def _reset_locks(self) -> None:
        self._guard = threading.Lock()
        self._slots: dict[str, _Slot] = {}

    @property
    def description(self) -> str:
        return f"<{self.name}>"

    def location(self, session_id: str) -> str:
        return f"<{self.name}>/{session_id}"

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        me = lock_owner()
        with self._guard:
            slot = self._slots.get(session_id)
            if slot is None:
                slot = self._slots[session_id] = _Slot()
            slot.users += 1
            slots = self._slots
        try:
            with slot.free:
                if slot.owner != me:
                    while slot.owner is not None:
                        slot.free.wait()
                    slot.owner = me
                slot.depth += 1
            try:
                yield
            finally:
                with slot.free:
                    slot.depth -= 1
                    if slot.depth == 0:
                        slot.owner = None
                        slot.free.notify()
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0 and slots.get(session_id) is slot:
                    del slots[session_id]

    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        data = self._documents.get(session_id)
        if data is not None and len(data) > max_bytes:
            raise SessionTooLargeError(
                f"session {session_id!r} in {self.location(session_id)}: is {len(data)} bytes, "
                f"over the store's max_bytes of {max_bytes}",
                session_id=session_id,
                path=self.location(session_id),
                size=len(data),
                max_bytes=max_bytes,
            )
        return data

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        with self.lock(session_id):
            if if_match is not None:
                current = self._documents.get(session_id)
                found = None if current is None else content_etag(current)
                if found != if_match:
                    raise ConflictError(
                        f"session {session_id!r} in {self.location(session_id)} changed since "
                        f"it was read (expected etag {if_match}, found {found or 'no session'}); "
                        "nothing written",
                        session_id=session_id,
                        path=self.location(session_id),
                    )
            self._documents[session_id] = bytes(data)
        return content_etag(data)

    def create(self, session_id: str, data: bytes) -> str:
        with self.lock(session_id):
            if session_id in self._documents:
                raise ConflictError(
                    f"session {session_id!r} already exists in {self.location(session_id)}; "
                    "nothing written",
                    session_id=session_id,
                    path=self.location(session_id),
                )
            self._documents[session_id] = bytes(data)
        return content_etag(data)

    def delete(self, session_id: str) -> bool:
        with self.lock(session_id):
            return self._documents.pop(session_id, None) is not None

    def exists(self, session_id: str) -> bool:
        return session_id in self._documents

    def list_ids(self) -> list[str]:
        # Copying a dict of str keys is one step under the GIL: no lock needed.
        return sorted(self._documents.copy())

    def __repr__(self) -> str:
        return f"MemoryBackend({self.name!r})"
