"""Small request/response services that the master answers from its own selector loop:
the control socket (control.py) and /metrics (metrics.py).

Rules:
- Called in the master only. Every socket is non-blocking and registered in the master's
  one selector; the loop calls `ready()` on whatever the selector returns. Nothing here
  waits, so a client can never stall the master: it gets MAX_CLIENTS connections, a
  buffer cap per connection and DEADLINE seconds from accept to the last byte of the
  answer, after which it is dropped (the master's wait includes `next_deadline()`).
- One request and one response per connection, then close: no keep-alive, no state.
- `answer(data, eof)` is the service: it returns the whole response as bytes once the
  request in `data` is complete, or None to wait for more bytes.
"""

from __future__ import annotations

import math
import selectors
import socket
from collections.abc import Callable

from .log import logger
from .sockets import Listener

DEADLINE = 5.0  # seconds from accept to the end of the response
MAX_CLIENTS = 32  # connections served at once per endpoint; more are closed at accept
RECV_SIZE = 16384

Answer = Callable[[bytes, bool], "bytes | None"]


class Endpoint:
    """A listening socket in the master's selector and the connections it accepted."""

    def __init__(self, listener: Listener, sel: selectors.BaseSelector, answer: Answer,
                 max_request: int, name: str) -> None:
        self.listener = listener
        self.sel = sel
        self.answer = answer
        self.max_request = max_request
        self.name = name  # for logs: "control socket", "metrics"
        self.clients: set[Client] = set()
        listener.sock.setblocking(False)
        sel.register(listener.sock, selectors.EVENT_READ, self)

    def ready(self, now: float) -> None:
        """The listener is readable: accept what is queued (a few at a time)."""
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self.listener.sock.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE and friends: the next turn tries again
                logger.warning("%s: accept(): %s", self.name, exc.strerror)
                return
            if len(self.clients) >= MAX_CLIENTS:
                sock.close()
                continue
            self.clients.add(Client(self, sock, now))

    def next_deadline(self) -> float:
        return min((c.deadline for c in self.clients), default=math.inf)

    def expire(self, now: float) -> None:
        for client in [c for c in self.clients if c.deadline <= now]:
            logger.debug("%s: client dropped after %.0f s", self.name, DEADLINE)
            client.close()

    def fds(self) -> list[int]:
        return [self.listener.fileno(), *(c.sock.fileno() for c in self.clients)]

    def close(self) -> None:
        for client in list(self.clients):
            client.close()
        self.sel.unregister(self.listener.sock)
        self.listener.close()


class Client:
    """One accepted connection: read a request, write the answer, close."""

    def __init__(self, endpoint: Endpoint, sock: socket.socket, now: float) -> None:
        sock.setblocking(False)
        self.endpoint = endpoint
        self.sock = sock
        self.deadline = now + DEADLINE
        self.data = b""
        self.out: memoryview | None = None
        endpoint.sel.register(sock, selectors.EVENT_READ, self)

    def ready(self, now: float) -> None:
        if self.out is None:
            self._read()
        if self.out is not None:
            self._write()

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.data += data
        if len(self.data) > self.endpoint.max_request:
            self.close()  # a request this big is not one of ours
            return
        try:
            answer = self.endpoint.answer(self.data, not data)
        except Exception:  # a bug in a service must not take the master down
            logger.exception("%s: request failed", self.endpoint.name)
            self.close()
            return
        if answer is None:
            if not data:
                self.close()  # EOF before a whole request
            return
        self.out = memoryview(answer)
        self.endpoint.sel.modify(self.sock, selectors.EVENT_WRITE, self)

    def _write(self) -> None:
        assert self.out is not None
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.close()

    def close(self) -> None:
        if self in self.endpoint.clients:
            self.endpoint.clients.discard(self)
            self.endpoint.sel.unregister(self.sock)
            self.sock.close()
