"""A raw HTTP/1.1 client for the end-to-end tests: exact bytes out, strict parsing in.

It frames responses itself (Content-Length, chunked, or until EOF), so a dropped or extra
field, a missing chunk terminator or a reset shows up as wrong bytes or an exception,
never smoothed over as a library would. Every socket has a deadline.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from tests.harness import DEADLINE

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Truncated(Exception):
    """EOF arrived inside a response; `partial` holds what came."""

    def __init__(self, partial: bytes) -> None:
        super().__init__(f"connection closed inside a response after {partial[-200:]!r}")
        self.partial = partial


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lowercased, in order
    body: bytes
    head: bytes  # the raw status line and fields

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None

    def names(self) -> list[str]:
        return [n for n, _ in self.headers]


class Client:
    """One connection: send raw bytes, read responses exactly as framed."""

    def __init__(self, address: tuple[str, int] | str, timeout: float = DEADLINE) -> None:
        if isinstance(address, str):
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.buf = b""
        self.raw = b""  # every byte received, for "never on the wire" checks
        self.eof = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read more bytes into buf; False at EOF."""
        if self.eof:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.raw += data
        return True

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise Truncated(self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise Truncated(self.buf)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self, method: str = "GET") -> Reply:
        """The next response (a 1xx interim response counts as one)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise Truncated(self.buf)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.1 ([0-9]{3}) (.*)", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status = int(m.group(1))
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and TOKEN.fullmatch(name), f"bad field line {line!r}"
            headers.append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
        reply = Reply(status, m.group(2).decode("latin-1"), headers, b"", head)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return reply
        te, cl = reply.get("transfer-encoding"), reply.get("content-length")
        if te is not None:
            assert te == "chunked" and cl is None, reply.headers
            body = b""
            while True:
                try:
                    size = int(self._line(), 16)
                    if not size:
                        assert self._line() == b"", "trailers in a response"
                        break
                    body += self._take(size)
                    assert self._take(2) == b"\r\n"
                except Truncated:
                    raise Truncated(body) from None
            reply.body = body
        elif cl is not None:
            reply.body = self._take(int(cl))
        else:
            while self._fill():
                pass
            reply.body, self.buf = self.buf, b""
        return reply

    def at_eof(self) -> bytes:
        """Wait (with the socket's deadline) for EOF; return any bytes that came first."""
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def nothing_received(self) -> bool:
        """True when no byte is waiting right now (loopback delivers within the send)."""
        if self.buf:
            return False
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)  # with a timeout set, recv() would wait first
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(timeout)
        return False  # a byte, or EOF
