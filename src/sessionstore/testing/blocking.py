"""Run an async store's methods from sync code, so sync tests and rules check it too.

``BlockingView(async_store)`` has the sync store's methods; each call runs the async
method on an event loop in a thread of its own and waits for it. The conformance
rules and the library's own tests use it to check every async class against exactly
the rules the sync classes meet, instead of a copy of them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["BlockingView"]

_ASYNC_METHODS = frozenset(
    {
        "save",
        "create",
        "load",
        "load_with_etag",
        "exists",
        "delete",
        "list",
        "update",
        "append",
        "append_messages",
        "compact",
        "setup",
    }
)


class BlockingView:
    """The sync face of an async store (see the module docstring). ``close()`` closes
    the async store and stops the loop's thread."""

    def __init__(self, async_store: Any) -> None:
        self.async_store = async_store
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sessionstore-blocking-view", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on the view's loop and return its result (or raise)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.async_store, name)
        if name not in _ASYNC_METHODS:
            return target
        if name == "update":

            def update(session_id: str, fn: Any) -> Any:
                return self.run(target(session_id, fn))

            return update

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(target(*args, **kwargs))

        return call

    @property
    def backend(self) -> Any:
        return self.async_store.sync.backend

    def close(self) -> None:
        try:
            self.run(self.async_store.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __repr__(self) -> str:
        return f"BlockingView({self.async_store!r})"
