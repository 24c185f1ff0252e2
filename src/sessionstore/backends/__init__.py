"""Storage mechanisms: bytes by session id.

Policy (ids, validation, migration) lives in ``sessionstore.store``.
"""

from __future__ import annotations

from sessionstore.backends.base import Backend, content_etag
from sessionstore.backends.filesystem import FileSystemBackend
from sessionstore.backends.memory import MemoryBackend

__all__ = ["Backend", "FileSystemBackend", "MemoryBackend", "content_etag"]
