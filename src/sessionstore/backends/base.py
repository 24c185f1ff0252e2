"""The interface every storage backend implements: bytes by session id.

Backends know nothing of sessions, versions or validation; ``store`` does that
once for all of them. Ids reach a backend already validated.

The write contract
------------------

One rule, kept by every backend (files, memory, PostgreSQL, yours):

    Every mutation of a session is serialized with every other mutation of
    that session, across threads, processes and store objects.

"Every mutation" is all of them: a plain ``write``, a conditional ``write``
(``if_match``), ``create``, ``delete``, the write inside ``update`` and
``append_messages``, a ``sessionstore migrate`` rewrite and a ``sessionstore
doctor`` quarantine. Each one takes the session's lock (``lock``) for its
whole read-check-write, so none can act on a version another has already
replaced: an acknowledged write is never lost, a deleted session never comes
back, counts are exact. The lock is:

- per session: writes of different sessions never wait for each other, so
  nested writes of unrelated sessions cannot deadlock;
- re-entrant per thread: a write inside ``update``'s function, of the same
  session or through a second store object on the same storage, does not
  deadlock on itself;
- shared by every store object on the same storage, whatever path, DSN or
  table spelling reached it;
- bounded by the backend's lock timeout (``LockTimeoutError``), or unbounded
  when the timeout is ``None``;
- not inherited by a forked child process: the parent keeps its locks.

Reads take no lock; a reader sees a whole old or a whole new document.

What a backend must do is stated on ``Backend``; ``sessionstore.testing.conformance``
checks it (see ``docs/testing-kit.md``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from sessionstore.records import stored_etag

__all__ = ["DEFAULT_MAX_BYTES", "Backend", "content_etag"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Documents larger than this are refused on load without being read."""


def content_etag(data: bytes) -> str:
    """The etag of stored bytes (same bytes, same etag): for a document, a digest of
    its exact bytes; for a session file with append records, the last record's hash
    (O(1)); for a folded snapshot, the etag the fold kept (``records.stored_etag``).

    Every backend shipped with sessionstore uses it, and ``BackendSessionStore``
    computes it from the bytes ``read`` returns for ``load_with_etag``; see the etag
    contract on ``Backend``.

    XXH3-128, 32 hex digits: an accidental collision is a 2**-128 chance, and at
    about 60 GB/s it costs a save almost nothing (BLAKE2b, 0.8 GB/s here, added a
    quarter to the time of a 200 KB save). An etag guards against lost updates
    between cooperating writers; it is not a signature.
    """
    return stored_etag(data)


@runtime_checkable
class Backend(Protocol):
    """Bytes by id, with conditional writes and a per-id lock, under the write contract
    of this module's docstring.

    Errors: each method raises the matching ``SessionStoreError`` subclass (with
    ``session_id`` and ``path`` set) for failures, never a raw driver error
    (``OSError``, ``psycopg.Error``, ...): ``SessionReadError`` for reads,
    ``SessionWriteError`` for writes (``CommitUnknownError`` when a write may have
    landed), ``LockTimeoutError`` when the lock is not had in time,
    ``SessionDeleteError`` for ``delete``, ``ConflictError`` and
    ``SessionTooLargeError`` as below. The conformance suite reports any other
    exception as a violation.

    The write contract: every mutation of a session (``write``, with or without
    ``if_match``, ``create``, ``delete``, and what a caller does while holding
    ``lock``) is serialized with every other mutation of that session, across
    threads, processes and backend objects on the same storage. So ``write``,
    ``create`` and ``delete`` must exclude ``lock`` holders of the same id (take the
    lock inside, or an equivalent), or an ``update`` could overwrite an acknowledged
    ``save``, or an ``append_messages`` bring a deleted session back. Each
    acknowledged mutation is visible to every later read, from any process.

    The etag contract, as the conformance suite checks it: an etag is an opaque
    string. The etag ``write`` or ``create`` returns is the one the store's
    ``load_with_etag`` then gives, until the next mutation; one etag never stands for
    two different contents of a session (not even after a delete and a new create),
    so a stale etag never matches; writing the same content again gives the same
    etag. Today ``BackendSessionStore.load_with_etag`` returns ``content_etag`` of
    the bytes ``read`` returns, so a backend must return ``content_etag(data)`` from
    its writes and compare ``if_match`` with ``content_etag`` of the stored bytes.
    """

    def location(self, session_id: str) -> object:
        """Where the document of ``session_id`` lives, for messages (a path, a table row)."""
        ...

    @property
    def description(self) -> str:
        """Where the whole store lives, for messages."""
        ...

    def read(self, session_id: str, *, max_bytes: int) -> bytes | None:
        """The stored bytes, exactly as written, or None when absent.

        Refuses a document over ``max_bytes`` with ``SessionTooLargeError`` (carrying
        ``size`` and ``max_bytes``), without reading it into memory; such a document
        still ``exists`` and is listed. Takes no lock.
        """
        ...

    def write(self, session_id: str, data: bytes, *, if_match: str | None = None) -> str:
        """Store ``data`` atomically (a reader sees the old bytes or the new, never a
        mix) and return its etag.

        With ``if_match``, only if the stored document has that etag, else
        ``ConflictError`` and nothing is written (also when no document is stored).
        The check and the write are one atomic step with respect to every other
        mutation of the id. May be called while the same thread holds ``lock`` of this
        or any other id, through this backend object or another one on the same
        storage, and must not deadlock then.
        """
        ...

    def create(self, session_id: str, data: bytes) -> str:
        """Store ``data`` only if the id is absent, and return its etag; else
        ``ConflictError`` and nothing is written. Atomic with respect to every other
        mutation of the id: of two concurrent creates, exactly one succeeds."""
        ...

    def delete(self, session_id: str) -> bool:
        """Remove the document; True if this call removed it, False if it was absent.

        After True, ``read`` returns None, ``exists`` is False and ``list_ids`` omits
        the id, in every process, until a later write or create; of two concurrent
        deletes, exactly one returns True.
        """
        ...

    def exists(self, session_id: str) -> bool:
        """True when a document is stored under ``session_id`` (usable or not)."""
        ...

    def list_ids(self) -> list[str]:
        """Every valid id stored, sorted as ``sorted()`` sorts them (by code point,
        not by a locale's collation); never a temporary or lock name."""
        ...

    def lock(self, session_id: str) -> AbstractContextManager[None]:
        """An exclusive lock of ``session_id`` across threads, processes and backend
        objects on the same storage, for read-modify-write (``update``,
        ``append_messages``).

        Re-entrant within a thread. Inside it, writes by the same thread to this id
        (through this backend object) and to any other id (through this or another
        backend object on the same storage) must not deadlock, nor may threads that
        each hold one id's lock and write other, distinct ids deadlock one another:
        ids must not share locks in a way that can form a cycle. A write to this id
        through another backend object in the same thread may land or be refused at
        once, but must not wait for this lock. Fork-safe: a child forked while another
        thread holds a lock does not inherit it held, and the parent's later writes do
        not wait for the child. Raises ``LockTimeoutError`` when not had in time.
        """
        ...
