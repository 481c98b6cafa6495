"""PEP 3333 for one request: environ, start_response, the response head and its framing.

Rules:
- No socket here either: the response is turned into bytes and handed to a `send`
  callable; wsgi.input pulls body bytes through a `pull` callable. connection.py owns I/O.
- Status and headers from the app are validated before they are sent (heads.py): a CR,
  LF or NUL in them is an app error (500 and a log line), never an injected header.
- Framing per RFC 9112 §6: Content-Length when known, chunked for HTTP/1.1 otherwise,
  close-delimited for HTTP/1.0; HEAD, 1xx, 204 and 304 carry no body (RFC 9110 §6.4.1).
- Hop-by-hop headers from the app are dropped (heads.py): framing and persistence are ours.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from .heads import (
    DATE,
    OWN_DATE,
    OWN_SERVER,
    SERVER,
    SERVER_LINE,
    AppError,
    Head,
    date_line,
    head,
    http_date,
)
from .http11 import Request

__all__ = ["SERVER", "AppError", "FileWrapper", "Response", "base_environ", "build_environ",
           "error_response", "http_date", "peer_environ"]


class FileWrapper:
    """wsgi.file_wrapper: connection.py sends real files with os.sendfile."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def fileno(self) -> int | None:
        """The fd to sendfile() from, or None when it is not a regular file."""
        try:
            fd = int(self.filelike.fileno())
            return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except (AttributeError, OSError, ValueError):
            return None

    def __iter__(self) -> Iterator[bytes]:
        while True:
            data = self.filelike.read(self.blksize)
            if not data:
                return
            yield data


# environ keys for header names, computed once per distinct name (RFC 3875 §4.1.18 style).
_ENVIRON_KEYS: dict[str, str] = {
    "content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_BASE_ENVIRON: dict[str, Any] = {
    "SCRIPT_NAME": "",
    "wsgi.version": (1, 0),
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    "wsgi.file_wrapper": FileWrapper,
    "wsgi.input_terminated": True,
}
# Host header values with a port, split: "example.com:8080" -> ("example.com", "8080").
_HOST_PORTS: dict[str, tuple[str, str]] = {}
_CACHE_MAX = 4096  # for caches keyed by what clients or apps choose: bounded
_V11 = (1, 1)
_time = time.time


def base_environ(url_scheme: str, errors: Any, multithread: bool) -> dict[str, Any]:
    """The environ keys that are the same for every request a worker serves, and a
    placeholder for each key every request sets: a copy of this dict then has room for
    them all, and setting them replaces values instead of growing (rehashing) the dict."""
    return {**_BASE_ENVIRON, "wsgi.url_scheme": url_scheme, "wsgi.errors": errors,
            "wsgi.multithread": multithread, "REQUEST_METHOD": "", "PATH_INFO": "",
            "QUERY_STRING": "", "RAW_URI": "", "SERVER_PROTOCOL": "", "REMOTE_ADDR": "",
            "REMOTE_PORT": "", "SERVER_NAME": "", "SERVER_PORT": "", "wsgi.input": None}


def peer_environ(base: dict[str, Any], peer: tuple[str, str]) -> dict[str, Any]:
    """`base` with a connection's REMOTE_ADDR and REMOTE_PORT: each request copies it."""
    environ = base.copy()
    environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
    return environ


def _environ_key(name: str) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < _CACHE_MAX:  # header names are attacker-chosen
            _ENVIRON_KEYS[name] = key
    return key


def _server_name(host: str | None, sock: Any) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT: from Host when it names a port, else from the socket
    (getsockname), with the Host name if there is one."""
    if host and not host.endswith("]"):
        name, _, port = host.rpartition(":")
        if name and port.isdigit():  # (Host passed the parser's ASCII-only grammar)
            if len(_HOST_PORTS) < _CACHE_MAX:
                _HOST_PORTS[host] = (name, port)
            return name, port
    try:
        addr = sock.getsockname()
    except OSError:
        addr = ("", "")
    server = (str(addr[0]), str(addr[1])) if isinstance(addr, tuple) else \
        (str(addr) or "localhost", "")
    return (host, server[1]) if host else server


def build_environ(req: Request, wsgi_input: Any, base: dict[str, Any], sock: Any,
                  trusted_proxy: bool = False) -> dict[str, Any]:
    """The PEP 3333 environ, from `base` (base_environ, with the connection's REMOTE_ADDR
    and REMOTE_PORT) and the request. The socket's address (getsockname) is asked only
    when Host names no port, so the common request costs no extra syscall. Repeated
    fields are combined into one value (RFC 9110 §5.3; Cookie with "; ", RFC 6265
    §5.4). From a trusted proxy, X-Forwarded-For sets REMOTE_ADDR (its last hop) and
    X-Forwarded-Proto the scheme."""
    path = req.path
    if "%" in path:
        # PEP 3333: PATH_INFO is the decoded path as a latin-1 "bytes-as-str".
        path = unquote_to_bytes(path).decode("latin-1")
    host = req.host
    server = _HOST_PORTS.get(host)  # type: ignore[arg-type]  # (None is a fine key)
    if server is None:
        server = _server_name(host, sock)
    environ = base.copy()  # (the fastest of the ways measured: see base_environ)
    environ["REQUEST_METHOD"] = req.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = req.query
    environ["RAW_URI"] = req.target
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if req.version == _V11 else "HTTP/1.0"
    environ["SERVER_NAME"], environ["SERVER_PORT"] = server
    environ["wsgi.input"] = wsgi_input
    keys = _ENVIRON_KEYS
    for name, value in req.headers:
        key = keys.get(name) or _environ_key(name)
        if key in environ:  # a repeated field (no key of base starts with HTTP_/CONTENT_)
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
        environ[key] = value
    if req.content_length is not None:
        environ["CONTENT_LENGTH"] = str(req.content_length)  # "005" and "5, 5" are "5"
    if trusted_proxy:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            # The last hop is the one our trusted proxy appended.
            environ["REMOTE_ADDR"] = forwarded.rpartition(",")[2].strip()
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto and proto.lower() in ("http", "https"):
            environ["wsgi.url_scheme"] = proto.lower()
    return environ


class Stopping(Protocol):
    stopping: bool  # the worker is stopping: this response is the connection's last


class Expecting(Protocol):
    expect: bool  # the client waits for 100 Continue (wsgi.input, body.py)


class Sender(Protocol):
    def send(self, data: bytes) -> None: ...  # all of it, or raise (connection.py)


class Response:
    """start_response, the head, and the body framing of one response."""

    __slots__ = ("req", "conn", "keep_alive", "body", "worker", "head", "code", "length",
                 "head_sent", "chunked", "no_body", "body_bytes")

    def __init__(self, req: Request, conn: Sender, keep_alive: bool, body: Expecting,
                 worker: Stopping) -> None:
        self.req = req
        self.conn = conn
        self.keep_alive = keep_alive
        # Asked at head time, when the connection cannot be reused: the request body was
        # never sent (the client still waits for 100 Continue) or the worker is stopping.
        self.body = body
        self.worker = worker
        self.head: Head | None = None  # set by start_response (heads.py: checked, cached)
        self.code = 0
        self.length: int | None = None  # Content-Length: the app's, or ours once sent
        self.head_sent = False
        self.chunked = False
        self.no_body = req.method == "HEAD"
        self.body_bytes = 0  # body bytes sent (for the access log)

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid the traceback cycle
        elif self.head is not None:
            raise AppError("start_response called twice without exc_info")
        self.head = checked = head(status, headers)
        self.code = checked.code
        self.length = checked.length
        if checked.no_body:
            self.no_body = True
        return self.write

    def _head(self, total: int | None) -> bytes:
        """Choose the framing, then build the head. `total` is the whole body when known."""
        checked = self.head
        if checked is None:
            raise AppError("the app returned before calling start_response")
        self.head_sent = True
        keep_alive = self.keep_alive
        if keep_alive and (self.body.expect or self.worker.stopping):
            self.keep_alive = keep_alive = False
        req = self.req
        framing = b""
        if self.length is None:
            if total is not None and (not self.no_body or (req.method == "HEAD" and total)):
                # For HEAD, the length of the body the app produced is what GET would send.
                self.length = total
                framing = b"Content-Length: %d\r\n" % total
            elif self.no_body:
                pass
            elif req.version >= _V11:
                self.chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = keep_alive = False  # close-delimited (RFC 9112 §6.3 item 8)
        if not keep_alive:
            framing += b"Connection: close\r\n"
        elif req.version != _V11:
            framing += b"Connection: keep-alive\r\n"
        # Date and Server are singletons (RFC 9110 §5.3): the app's own value wins.
        own = checked.own
        if not own:
            # (date_line() inlined for the usual case: the second has not moved on)
            date = DATE[2] if DATE[0] == int(_time()) else date_line()
            return b"".join((checked.status_line, SERVER_LINE, date, checked.lines, framing,
                             b"\r\n"))
        return b"".join((
            checked.status_line, b"" if own & OWN_SERVER else SERVER_LINE,
            b"" if own & OWN_DATE else date_line(), checked.lines, framing, b"\r\n"))

    def write(self, data: bytes) -> None:
        """The write() callable of start_response, and the body path of the iterable."""
        if not isinstance(data, bytes):
            raise AppError(f"the app wrote {type(data).__name__}, not bytes")
        out = b"" if self.head_sent else self._head(None)
        if data and not self.no_body:
            if self.length is not None:
                room = self.length - self.body_bytes
                if len(data) > room:
                    data = data[:room]  # never send more than the declared length
                    self.keep_alive = False
                out += data
            elif self.chunked:
                out += b"%x\r\n" % len(data) + data + b"\r\n"
            else:
                out += data
            self.body_bytes += len(data)
        if out:
            self.conn.send(out)

    def send_list(self, body: list[bytes] | tuple[bytes, ...]) -> None:
        """A list/tuple body, before any write(): one head with its Content-Length, and
        one send for the common small response."""
        if len(body) == 1:  # the usual answer
            if body[0].__class__ is not bytes and not isinstance(body[0], bytes):
                raise AppError("the app returned a non-bytes item")
            total = len(body[0])
        else:
            total = 0
            for item in body:  # (a loop: a generator in all() costs a frame)
                if not isinstance(item, bytes):
                    raise AppError("the app returned a non-bytes item")
                total += len(item)
        head = self._head(total)
        if self.no_body:
            self.conn.send(head)
            return
        length = self.length  # (set by _head when the app gave none)
        assert length is not None
        if total != length:
            self.keep_alive = False
            if total > length:
                body = [b"".join(body)[:length]]  # never more than the declared length
                total = length
        self.body_bytes = total
        if total > 65536 and len(body) == 1:
            self.conn.send(head)  # a large body goes out as it is, not copied behind the head
            self.conn.send(body[0])
        elif len(body) == 1:
            self.conn.send(head + body[0])
        else:
            self.conn.send(head + b"".join(body))

    def finish(self) -> None:
        """After the last body chunk: terminate the framing."""
        if not self.head_sent:
            self.conn.send(self._head(0))
        elif self.chunked:
            self.conn.send(b"0\r\n\r\n")
        if self.length is not None and self.body_bytes < self.length and not self.no_body:
            self.keep_alive = False  # short body: the client must see the close


def error_response(status: int, reason: str, keep_alive: bool = False) -> bytes:
    """A small plain-text error response, always with Connection: close unless told."""
    phrase = {400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
              413: "Content Too Large", 414: "URI Too Long", 417: "Expectation Failed",
              431: "Request Header Fields Too Large", 500: "Internal Server Error",
              501: "Not Implemented", 505: "HTTP Version Not Supported"}.get(status, "Error")
    body = f"{status} {phrase}: {reason}\n".encode("latin-1", "replace")
    return (b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n%s\r\n" % (
                status, phrase.encode(), SERVER, http_date(), len(body),
                b"" if keep_alive else b"Connection: close\r\n")) + body

