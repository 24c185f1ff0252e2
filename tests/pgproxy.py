"""A TCP proxy between a store and the test server, to make network faults on purpose.

- ``stop_forwarding()``: from now on nothing passes either way, on open and new
  connections alike (a partition, or a server that stops answering);
- ``lose_reply_to(b"COMMIT")``: the next connection that sends a message containing
  ``COMMIT`` has it delivered to the server, but everything the server answers from
  then on is dropped and the client's side is closed (``then="close"``) or left
  hanging (``then="hang"``): the reply to a commit that landed is lost. The
  server's side stays open until the proxy closes, so the commit is processed;
- ``delay``: seconds each chunk the server sends takes to arrive (a long wire, to
  count round trips: an operation takes about ``delay`` times its round trips).

The server is never touched: only the proxy's own sockets are closed. Connections go
through it unencrypted (``sslmode=disable``) so that the proxy can see the messages.
psycopg prepares a statement after 5 uses on one connection and then sends only its
name: arm ``lose_reply_to`` before a connection has sent 5 COMMITs.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_CHUNK = 65536


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.replies_lost = False
        self.late: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def close_client(self) -> None:
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Proxy:
    """Forwards 127.0.0.1:``port`` to the server of ``dsn``; see the module docstring."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self._params = params
        self._target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._mutex = threading.Lock()
        self._links: list[_Link] = []
        self._forwarding = True
        self._trap: bytes | None = None
        self._then = "close"
        self.delay = 0.0
        self.reply_lost = threading.Event()
        """Set when the server's answer to the trapped message was dropped."""
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def dsn(self, application_name: str) -> str:
        """A connection string to the server through the proxy."""
        params = {
            **self._params,
            "host": "127.0.0.1",
            "port": str(self.port),
            "sslmode": "disable",
            "application_name": application_name,
        }
        return make_conninfo("", **params)

    def stop_forwarding(self) -> None:
        with self._mutex:
            self._forwarding = False

    def lose_reply_to(self, marker: bytes, *, then: str = "close") -> None:
        assert then in ("close", "hang")
        with self._mutex:
            self._trap = marker
            self._then = then
            self.reply_lost.clear()

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            links, self._links = self._links, []
        self._listener.close()
        for link in links:
            link.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the pumps -----------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                # As libpq does: no Nagle delay on small messages.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._mutex:
                if self._closed:
                    link.close()
                    return
                self._links.append(link)
            for target in (self._to_server, self._to_client, self._deliver_late):
                threading.Thread(target=target, args=(link,), daemon=True).start()

    def _to_server(self, link: _Link) -> None:
        while data := self._recv(link.client):
            with self._mutex:
                forwarding = self._forwarding
                if forwarding and self._trap is not None and self._trap in data:
                    self._trap = None
                    link.replies_lost = True
            if forwarding and not self._send(link.server, data):
                break
        if link.replies_lost:
            # Keep the server's side open: what the client sent (the COMMIT) is
            # processed, and nothing resets the connection under the server's feet.
            link.close_client()
        else:
            link.close()

    def _to_client(self, link: _Link) -> None:
        while data := self._recv(link.server):
            with self._mutex:
                forwarding = self._forwarding
                then = self._then
            if link.replies_lost:
                self.reply_lost.set()
                if then == "close":
                    link.close_client()
                continue  # dropped
            if not forwarding:
                continue
            if self.delay:
                link.late.put((time.monotonic() + self.delay, data))
                continue
            if not self._send(link.client, data):
                break
        link.late.put((0.0, b""))
        link.close()

    def _deliver_late(self, link: _Link) -> None:
        """A delay line: each chunk reaches the client ``delay`` after it left the
        server, and chunks sent back to back arrive back to back (a long wire)."""
        while True:
            due, data = link.late.get()
            if not data:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            if not self._send(link.client, data):
                return

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(_CHUNK)
        except OSError:
            return b""

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> bool:
        try:
            sock.sendall(data)
        except OSError:
            return False
        return True
