"""Run an async store's methods from sync code, so sync tests and rules check it too.

``BlockingView(async_store)`` has the sync store's methods; each call runs the async
method on an event loop in a thread of its own and waits for it. The conformance
rules and the library's own tests use it to check every async class against exactly
the rules the sync classes meet, instead of a copy of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["BlockingView", "with_max_bytes"]

_ASYNC_METHODS = frozenset(
    {
        "save",
        "create",
        "load",
        "load_with_etag",
        "load_document",
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
        self._entered = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sessionstore-blocking-view", daemon=True
        )
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop every call of the async store runs on."""
        return self._loop

    def open(self) -> BlockingView:
        """Enter the async store (``async with``'s set-up) on the view's loop; return the
        view. ``close`` then leaves it (``__aexit__``) instead of calling ``close()``.
        Raises what ``__aenter__`` raises (the loop's thread is then stopped)."""
        try:
            entered = self.run(self.async_store.__aenter__())
        except BaseException:
            self._stop()
            raise
        if entered is not None:
            self.async_store = entered
        self._entered = True
        return self

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run ``coroutine`` on the view's loop and return its result (or raise).

        With ``timeout``, raises ``TimeoutError`` when it has not finished within that
        many seconds (the loop is blocked, or the coroutine hangs); it is then
        cancelled."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:  # not the builtin one before Python 3.11
            if future.done():
                raise  # the coroutine's own error (a LockTimeoutError, say)
            future.cancel()
            msg = f"not done within {timeout} s"
            raise TimeoutError(msg) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "async_store":  # not set yet (copy, pickle)
            raise AttributeError(name)
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
        """The async store's backend (or its sync store's, for a store built on one)."""
        backend = getattr(self.async_store, "backend", None)
        return backend if backend is not None else self.async_store.sync.backend

    @property
    def max_bytes(self) -> int:
        """The async store's ``max_bytes``. Setting it gives this view a copy of the
        async store with that limit (see ``with_max_bytes``); ``copy.copy(view)`` then
        setting it leaves the original view and store as they were, as with a sync
        store."""
        return int(self.async_store.max_bytes)

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self.async_store = with_max_bytes(self.async_store, value)

    def __copy__(self) -> BlockingView:
        """A view on the same loop and async store (``close`` one of them only)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        return view

    def close(self) -> None:
        """Close the async store (``__aexit__`` after ``open``) and stop the loop."""
        try:
            if self._entered:
                self.run(self.async_store.__aexit__(None, None, None))
            else:
                self.run(self.async_store.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_STOP_TIMEOUT)
        if self._thread.is_alive():
            # A call blocks the loop's thread (a finding the test reports): leave the
            # daemon thread behind rather than hang the test run.
            return
        self._loop.close()

    def __repr__(self) -> str:
        return f"BlockingView({self.async_store!r})"


_STOP_TIMEOUT = 30.0
"""Seconds ``close`` waits for the loop's thread to stop before leaving it behind."""


def with_max_bytes(async_store: Any, limit: int) -> Any:
    """A shallow copy of ``async_store`` whose ``max_bytes`` is ``limit``, over the same
    storage; ``async_store`` itself is unchanged.

    A store whose ``max_bytes`` is read-only (the async classes built on a sync store,
    ``sync``) gets a copy of its sync store with the limit. Raises ``TypeError`` when
    neither can be set."""
    small = copy.copy(async_store)
    try:
        small.max_bytes = limit
    except AttributeError:
        sync = getattr(async_store, "sync", None)
        if sync is None:
            msg = f"cannot set max_bytes of {type(async_store).__name__}: it is read-only"
            raise TypeError(msg) from None
        small.sync = copy.copy(sync)
        small.sync.max_bytes = limit
    return small
