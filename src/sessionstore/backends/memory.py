"""Sessions in a dict: for tests and caches. Same contract as the other backends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sessionstore.backends.base import content_etag
from sessionstore.errors import ConflictError, SessionTooLargeError

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Documents held in this process's memory; lost when it exits. Thread-safe."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._documents: dict[str, bytes] = {}
        self._lock = threading.RLock()

    @property
    def description(self) -> str:
        return f"<{self.name}>"

    def location(self, session_id: str) -> str:
        return f"<{self.name}>/{session_id}"

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:  # noqa: ARG002  # one lock for all ids
        with self._lock:
            yield

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
        with self._lock:
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
        with self._lock:
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
        with self._lock:
            return self._documents.pop(session_id, None) is not None

    def exists(self, session_id: str) -> bool:
        return session_id in self._documents

    def list_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._documents)

    def __repr__(self) -> str:
        return f"MemoryBackend({self.name!r})"
