"""Run sync code on an event loop: each of its waits for I/O is awaited by the loop.

The async PostgreSQL store runs the sync store's code (its rules: ids, validation,
encoding, the append log, the write transactions) unchanged, in a greenlet. Where
that code waits for the server, its connection (``postgres_async_connections``)
calls ``await_`` with an awaitable of psycopg's async API: the greenlet switches to
the task that drives it (``drive``), which awaits it on the loop and switches back
with the result or the error. So a call holds no thread, and the loop runs other tasks while it
waits. SQLAlchemy's asyncio extension works the same way.

Cancellation. A driven call is told when its caller is gone (``Driven.abandon``).
From then on, the next wait that is marked *abortable* (one at which nothing the call
sent is in flight: before a transaction starts, before a statement outside a
pipeline, before COMMIT) raises ``Abandoned`` in the sync code instead of starting,
once; the sync code's cleanup (a rollback, giving the connection back) then runs to
its end. A wait that is not abortable (a pipeline in flight, a rollback) completes.
An awaitable of the caller's own (an async ``update`` function) is cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import greenlet

__all__ = ["Abandoned", "Driven", "await_", "current_call", "drive", "in_driven_call"]

T = TypeVar("T")


class Abandoned(BaseException):  # a signal, like CancelledError
    """Raised in the sync code of a call whose caller is gone, at an abortable wait."""


class _Request:
    """What the sync code asks the driver to await."""

    __slots__ = ("awaitable", "interrupt", "own")

    def __init__(
        self,
        awaitable: Awaitable[Any],
        own: bool,
        interrupt: Callable[[], None] | None,
    ) -> None:
        self.awaitable = awaitable
        self.own = own  # the caller's own awaitable: cancelled with the caller
        self.interrupt = interrupt  # asks the server to stop what this waits for


class Driven(greenlet.greenlet, Generic[T]):
    """The greenlet of one call. ``state`` is for the code it runs (the PostgreSQL
    backend keeps its open lock transactions there)."""

    def __init__(self, fn: Callable[[], T], state: Any) -> None:
        super().__init__(fn)
        self.state = state
        self.abandoned = False
        self.aborted = False
        self.request: _Request | None = None
        self.task: asyncio.Future[Any] | None = None  # the caller's awaitable, as a task

    def abandon(self) -> None:
        """The caller is gone: abort at the next abortable wait, cancel the caller's
        own awaitable if one runs, and interrupt a server wait that may be interrupted."""
        if self.abandoned:
            return
        self.abandoned = True
        if self.task is not None:
            self.task.cancel()
        request = self.request
        if request is not None and request.interrupt is not None:
            request.interrupt()


def in_driven_call() -> Driven[Any] | None:
    """The driven call this code runs in, or None outside one."""
    current = greenlet.getcurrent()
    return current if isinstance(current, Driven) else None


def current_call() -> Driven[Any]:
    """The driven call this code runs in. Raises ``RuntimeError`` outside one: the
    async store's code must never block a thread, least of all the loop's."""
    current = in_driven_call()
    if current is None:
        msg = "this PostgreSQL backend is async: use it through AsyncPostgresSessionStore"
        raise RuntimeError(msg)
    return current


def await_(
    awaitable: Awaitable[T],
    *,
    abortable: bool = False,
    own: bool = False,
    interrupt: Callable[[], None] | None = None,
) -> T:
    """Await ``awaitable`` on the loop from sync code run by ``drive``; return its result
    or raise its error. ``abortable``: nothing is in flight, so a call whose caller is
    gone may stop here (raises ``Abandoned``, once). ``own``: the caller's awaitable
    (run as a task in the caller's context, cancelled if the caller goes).
    ``interrupt``: called if the caller goes during the wait.

    Raises ``RuntimeError`` outside a driven call (the async store's code must never
    block a thread on the loop).
    """
    try:
        current = current_call()
    except RuntimeError:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise
    if abortable and current.abandoned and not current.aborted:
        current.aborted = True
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise Abandoned
    parent = current.parent
    assert parent is not None  # a driven greenlet is switched to by its driver
    result: T = parent.switch(_Request(awaitable, own, interrupt))
    return result


async def drive(call: Driven[T]) -> T:
    """Run ``call`` to its end, awaiting what it asks for; return its result or raise
    its error. A call abandoned before it starts never starts (raises ``Abandoned``).
    The caller's own awaitables run as tasks in a copy of this task's context."""
    if call.abandoned:
        raise Abandoned
    call.gr_context = contextvars.copy_context()
    value = call.switch()
    while not call.dead:
        request: _Request = value
        call.request = request
        try:
            if request.own:
                task = asyncio.ensure_future(request.awaitable)
                call.task = task
                if call.abandoned:
                    task.cancel()
                try:
                    result = await task
                finally:
                    call.task = None
            else:
                if call.abandoned and request.interrupt is not None:
                    request.interrupt()
                result = await request.awaitable
        except BaseException as exc:  # every error goes back to the code
            call.request = None
            value = call.throw(exc)
        else:
            call.request = None
            value = call.switch(result)
    return value  # type: ignore[no-any-return]
