"""wsgi.input: the request body, streamed from the parser as the app reads it.

Rules:
- Bytes come only from the connection's parser (Data events); when it needs more, the
  connection receives them (with its idle timeout, a ClientError if the client stalls).
- RFC 9110 §10.1.1: `100 Continue` goes out when the app first reads a body the client
  is holding back (Expect: 100-continue), never before: an app that answers without
  reading (413, 401, ...) never invites the body, and the connection then closes.
- A request without a body gets NO_BODY, one shared stateless object: no allocation and
  no parser call per body-less request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from .http11 import Data, EndOfMessage, ProtocolError, Request, RequestParser

DRAIN_LIMIT = 65536  # unread body bytes we read and discard to keep a connection alive
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Source(Protocol):
    """What a body reads through (connection.HttpConnection)."""

    parser: RequestParser

    def send(self, data: bytes) -> None: ...
    def recv_body(self) -> bytes: ...


class Input:
    """wsgi.input for a request with a body (Content-Length or chunked)."""

    def __init__(self, conn: Source, req: Request) -> None:
        self.conn = conn
        self.buf = bytearray()
        self.done = False
        self.expect = req.expect_continue

    def _pull(self) -> bool:
        """Move more body bytes into buf; False at the end of the body."""
        if self.done:
            return False
        conn = self.conn
        if self.expect:
            self.expect = False
            # RFC 9110 §10.1.1: the client may wait for this before sending the body.
            conn.send(CONTINUE)
        while True:
            event = conn.parser.next_event()
            if isinstance(event, Data):
                self.buf += event.data
                return True
            if isinstance(event, EndOfMessage):
                self.done = True
                return False
            conn.parser.feed(conn.recv_body())

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._pull():
                pass
            out = bytes(self.buf)
            self.buf.clear()
            return out
        while len(self.buf) < size and self._pull():
            pass
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        while True:
            end = self.buf.find(b"\n")
            if end >= 0 or (limit is not None and len(self.buf) >= limit) or not self._pull():
                break
        end = self.buf.find(b"\n")
        n = end + 1 if end >= 0 else len(self.buf)
        if limit is not None:
            n = min(n, limit)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def drain(self) -> bool:
        """After the response: discard the unread body. False: close instead."""
        if self.done:
            return True
        if self.expect:
            return False  # the client never got its 100: the body is not coming
        budget = DRAIN_LIMIT - len(self.buf)
        self.buf.clear()
        try:
            while budget >= 0 and self._pull():
                budget -= len(self.buf)
                self.buf.clear()
        except (ProtocolError, OSError):
            return False
        return self.done


class NoBody:
    """wsgi.input for a request without a body: always at its end, shared by all."""

    __slots__ = ()
    done = True  # (immutable class constants: the Input interface the connection reads)
    expect = False

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def drain(self) -> bool:
        return True


NO_BODY = NoBody()
