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
- Two masters may run at once (USR2 upgrade: the old one serves until the new one is
  ready), so `bind_service()` never fails because the other one holds the address: a TCP
  address is bound with SO_REUSEPORT (both answer until the old one closes); a unix path
  held by a live listener is bound under a temporary name, and `settle()` renames it over
  the path once this master runs (rename(2) is atomic for clients; a new master that
  fails to boot never took the path). A master unlinks its unix path on exit only if the
  file is still its own (same inode), never its successor's.
"""

from __future__ import annotations

import math
import os
import selectors
import socket
import stat
from collections.abc import Callable

from .log import logger
from .sockets import BindError, Listener, parse_tcp

DEADLINE = 5.0  # seconds from accept to the end of the response
MAX_CLIENTS = 32  # connections served at once per endpoint; more are closed at accept
RECV_SIZE = 16384

Answer = Callable[[bytes, bool], "bytes | None"]


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _bind_unix(path: str, mode: int) -> tuple[socket.socket, str | None]:
    """(socket, temporary path or None); see the module Rules."""
    where, tmp = path, None
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise BindError(f"bind(unix:{path}): exists and is not a socket")
    except FileNotFoundError:
        pass
    else:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:  # refused: a stale file nobody listens on
                os.unlink(path)
            else:  # a live master holds it: ours goes beside it until we run
                where = tmp = f"{path}.{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(where)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise BindError(f"bind(unix:{path}): {_reason(exc)}") from None
    finally:
        os.umask(old)
    os.chmod(where, mode)  # whatever the umask did, say it explicitly
    return sock, tmp


def _bind_tcp(address: str) -> socket.socket:
    try:
        host, port = parse_tcp(address)
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (ValueError, socket.gaierror) as exc:
        raise BindError(f"bind({address}): {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise BindError(f"bind({address}): {_reason(exc)}") from None
    return sock


class Endpoint:
    """A listening socket in the master's selector and the connections it accepted."""

    def __init__(self, address: str, mode: int, sel: selectors.BaseSelector, answer: Answer,
                 max_request: int, name: str) -> None:
        """Bind `address` (HOST:PORT, or unix:PATH created with permissions `mode`).
        Raises BindError."""
        self.path: str | None = None
        self.tmp_path: str | None = None
        if address.startswith("unix:"):
            self.path = address[len("unix:"):]
            sock, self.tmp_path = _bind_unix(self.path, mode)
            self.inode = os.stat(self.tmp_path or self.path).st_ino
        else:
            sock = _bind_tcp(address)
        listener = Listener(sock, address)
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

    def settle(self) -> None:
        """This master runs: take over a unix path a previous master held (module Rules)."""
        if self.tmp_path is not None and self.path is not None:
            os.replace(self.tmp_path, self.path)
            self.tmp_path = None
            logger.info("%s: took over %s", self.name, self.path)

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
        path = self.tmp_path or self.path
        if path is not None:
            try:
                if os.stat(path).st_ino == self.inode:  # still ours, not a successor's
                    os.unlink(path)
            except FileNotFoundError:
                pass


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
