"""Let every entry point of the kit take an async store: detect it, run it blocking.

An async store (``AsyncSessionStore``, ``AsyncMemorySessionStore``,
``AsyncPostgresSessionStore`` or your own class with the same coroutine methods) is
recognised by its ``load`` being a coroutine function. The kit's rules then see it
through a ``BlockingView`` (its calls run on the view's event loop, in a thread of its
own), so the sync rules hold it to exactly what they hold the sync classes to; the
tasks rule (``concurrency.check_concurrent_tasks``) drives it directly, with many
tasks on that loop.

``blocking_subject`` does this to a whole ``StoreUnderTest``: the store and what
``reopen`` gives are entered (``async with``'s set-up) on a view's loop, the opener
becomes a ``BlockingOpener`` (picklable when the opener is, so a child process makes
its own view, with its own loop), and ``cleanup`` also closes the views.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sessionstore.testing.blocking import BlockingView
from sessionstore.testing.subject import StoreFactory, StoreUnderTest

__all__ = [
    "BlockingOpener",
    "blocking_factory",
    "blocking_store",
    "blocking_subject",
    "is_async_store",
    "sync_store",
    "sync_subject",
]


def is_async_store(store: object) -> bool:
    """True when ``store``'s ``load`` is a coroutine function (an async store)."""
    return inspect.iscoroutinefunction(getattr(store, "load", None))


def blocking_store(store: Any) -> Any:
    """``store`` itself when it is sync (or already a view); else a ``BlockingView``
    over it, entered (``__aenter__``) on the view's loop. The caller closes the view."""
    if isinstance(store, BlockingView) or not is_async_store(store):
        return store
    return BlockingView(store).open()


@dataclass(frozen=True)
class BlockingOpener:
    """Call ``opener`` and return its store, as a ``BlockingView`` when it is async.

    Picklable when ``opener`` is: a child process calls it and gets a view with an
    event loop of its own (an event loop cannot cross a process boundary)."""

    opener: Any

    def __call__(self) -> Any:
        return blocking_store(self.opener())


def blocking_subject(subject: StoreUnderTest) -> StoreUnderTest:
    """``subject`` as the sync rules can use it (see the module docstring); a subject
    of a sync store is returned unchanged. Its ``cleanup`` runs the old one, then
    closes the views made for it (by ``reopen`` and ``opener`` too, in this process)."""
    adapted, close_views = _adapt(subject)
    if adapted is subject:
        return subject
    original_cleanup = subject.cleanup

    def cleanup() -> None:
        try:
            if original_cleanup is not None:
                original_cleanup()
        finally:
            close_views()

    return replace(adapted, cleanup=cleanup)


@contextmanager
def sync_subject(subject: StoreUnderTest) -> Iterator[StoreUnderTest]:
    """``subject`` as the sync rules can use it, for one check: the views made for it
    are closed on exit; ``subject.cleanup`` is left to the caller."""
    adapted, close_views = _adapt(subject)
    try:
        yield adapted
    finally:
        close_views()


@contextmanager
def sync_store(store: Any) -> Iterator[Any]:
    """``blocking_store(store)`` for one check: a view made here is closed on exit."""
    adapted = blocking_store(store)
    try:
        yield adapted
    finally:
        if adapted is not store:
            adapted.close()


def _adapt(subject: StoreUnderTest) -> tuple[StoreUnderTest, Callable[[], None]]:
    """The adapted subject (``subject`` itself when its store is sync), and a function
    that closes every view made for it."""
    if not is_async_store(subject.store):
        return subject, lambda: None
    views: list[BlockingView] = []

    def track(store: Any) -> Any:
        if isinstance(store, BlockingView):
            views.append(store)
        return store

    reopen, opener = subject.reopen, subject.opener

    def reopened() -> Any:
        assert reopen is not None
        return track(blocking_store(reopen()))

    def opened() -> Any:
        assert opener is not None
        return track(blocking_store(opener()))

    def close_views() -> None:
        while views:
            views.pop().close()

    adapted = replace(
        subject,
        store=track(blocking_store(subject.store)),
        reopen=reopened if reopen is not None else None,
        opener=_TrackingOpener(opener, opened) if opener is not None else None,
    )
    return adapted, close_views


@dataclass(frozen=True)
class _TrackingOpener(BlockingOpener):
    """A ``BlockingOpener`` that, in this process, also hands its views to the subject's
    cleanup (``here``); pickled (for a child process), it is the plain ``BlockingOpener``."""

    here: Any = None

    def __call__(self) -> Any:
        return self.here()

    def __reduce__(self) -> tuple[Any, ...]:
        return (BlockingOpener, (self.opener,))


def blocking_factory(factory: StoreFactory) -> StoreFactory:
    """A factory whose subjects are ``blocking_subject(factory())``."""

    def make() -> StoreUnderTest:
        return blocking_subject(factory())

    make.__qualname__ = getattr(factory, "__qualname__", "factory")
    make.__doc__ = getattr(factory, "__doc__", None)
    return make
