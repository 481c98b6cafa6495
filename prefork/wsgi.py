"""PEP 3333 for one request: environ, start_response, the response head and its framing.

Rules:
- No socket here either: the response is turned into bytes and handed to a `send`
  callable; wsgi.input pulls body bytes through a `pull` callable. connection.py owns I/O.
- Header values from the app are validated before they are sent: a CR, LF or NUL in a
  status or header is an app error (500 and a log line), never an injected header
  (CVE-2018-1000164, CVE-2020-7695).
- Framing per RFC 9112 §6: Content-Length when known, chunked for HTTP/1.1 otherwise,
  close-delimited for HTTP/1.0; HEAD, 1xx, 204 and 304 carry no body (RFC 9110 §6.4.1).
- Hop-by-hop headers from the app are dropped: framing and persistence are ours.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from . import __version__
from .http11 import Request

SERVER = f"prefork/{__version__}".encode()
_HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
))
_STATUS = re.compile(r"[1-9][0-9]{2} [^\x00-\x08\x0a-\x1f\x7f]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*\Z")
_DIGITS = re.compile(r"[0-9]{1,18}\Z")

_date_cache: tuple[int, bytes] = (0, b"")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")


def http_date() -> bytes:
    """The Date header value (IMF-fixdate, RFC 9110 §5.6.7), formatted once per second.

    Written out here rather than with email.utils.formatdate: importing the email package
    costs start-up time, and strftime would follow the locale."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache = (now, b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
            _DAYS[t.tm_wday].encode(), t.tm_mday, _MONTHS[t.tm_mon].encode(), t.tm_year,
            t.tm_hour, t.tm_min, t.tm_sec))
    return _date_cache[1]


class AppError(Exception):
    """The app broke the WSGI contract (bad status, header, or call order)."""


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
_ENVIRON_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": ""}
_BASE_ENVIRON: dict[str, Any] = {
    "SCRIPT_NAME": "",
    "wsgi.version": (1, 0),
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    "wsgi.file_wrapper": FileWrapper,
    "wsgi.input_terminated": True,
}


def _environ_key(name: str) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 4096:  # header names are attacker-chosen: bound the cache
            _ENVIRON_KEYS[name] = key
    return key


def build_environ(req: Request, wsgi_input: Any, server: Callable[[], tuple[str, str]],
                  peer: tuple[str, str], url_scheme: str, errors: Any,
                  trusted_proxy: bool = False) -> dict[str, Any]:
    """The PEP 3333 environ. `server` (getsockname) is called only when the request
    names no host, so the common request costs no extra syscall. From a trusted proxy,
    X-Forwarded-For sets REMOTE_ADDR (its last hop) and X-Forwarded-Proto the scheme."""
    path = req.path
    if "%" in path:
        # PEP 3333: PATH_INFO is the decoded path as a latin-1 "bytes-as-str".
        path = unquote_to_bytes(path).decode("latin-1")
    environ = _BASE_ENVIRON.copy()
    environ["REQUEST_METHOD"] = req.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = req.query
    environ["RAW_URI"] = req.target
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if req.version == (1, 1) else "HTTP/1.0"
    environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
    environ["wsgi.url_scheme"] = url_scheme
    environ["wsgi.input"] = wsgi_input
    environ["wsgi.errors"] = errors
    for name, value in req.headers:
        key = _environ_key(name)
        if not key:
            environ["CONTENT_LENGTH"] = str(req.content_length)
        elif key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    host = req.host
    name, _, port = host.rpartition(":") if host and not host.endswith("]") else ("", "", "")
    if name and port.isdigit():
        environ["SERVER_NAME"], environ["SERVER_PORT"] = name, port
    else:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server()
        if host:
            environ["SERVER_NAME"] = host
    if trusted_proxy:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            # The last hop is the one our trusted proxy appended.
            environ["REMOTE_ADDR"] = forwarded.rpartition(",")[2].strip()
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "").lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
    return environ


# App header tuples seen before, validated: (name, value) -> (lowercased name, wire line).
# Apps send the same few headers on every response; checking each once saves two regex
# matches and two encodes per header per request. Bounded, since values may vary freely.
_HEADER_CACHE: dict[tuple[str, str], tuple[str, bytes]] = {}
_HEADER_CACHE_MAX = 1024


def _checked_header(item: Any) -> tuple[str, bytes]:
    if not (isinstance(item, tuple) and len(item) == 2):
        raise AppError(f"invalid header {item!r}")
    name, value = item
    if not (isinstance(name, str) and isinstance(value, str) and _TOKEN.match(name)
            and _VALUE.match(value)):
        raise AppError(f"invalid header {name!r}: {value!r}")
    try:
        line = b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
    except UnicodeEncodeError:
        raise AppError(f"header {name!r} is not latin-1 (PEP 3333)") from None
    checked = (name.lower(), line)
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[item] = checked
    return checked


class Response:
    """start_response, the head, and the body framing of one response."""

    def __init__(self, req: Request, send: Callable[[bytes], None], keep_alive: bool) -> None:
        self.req = req
        self.send = send
        self.keep_alive = keep_alive
        self.status: str | None = None
        self.code = 0
        self.headers: list[bytes] = []  # the app's header lines, validated, as sent
        self.app_fields: frozenset[str] = frozenset()  # lowercased names the app sent
        self.length: int | None = None  # Content-Length the app declared
        self.head_sent = False
        self.chunked = False
        self.no_body = req.method == "HEAD"
        self.body_bytes = 0  # body bytes sent (for the access log)
        # Asked at head time: True when the connection cannot be reused (unread body).
        self.must_close: Callable[[], bool] = lambda: False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid the traceback cycle
        elif self.status is not None:
            raise AppError("start_response called twice without exc_info")
        if not isinstance(status, str) or not _STATUS.match(status):
            raise AppError(f"invalid status {status!r}")
        code = int(status[:3])
        clean: list[bytes] = []
        names: set[str] = set()
        length = None
        cache = _HEADER_CACHE
        for item in headers:
            try:
                lname, line = cache[item]
            except (KeyError, TypeError):  # TypeError: unhashable, so not a str pair
                lname, line = _checked_header(item)
            if lname in _HOP_BY_HOP:
                continue
            if lname == "content-length":
                if code < 200 or code == 204:
                    continue  # RFC 9110 §8.6: never in a 1xx or 204 response
                value = item[1].strip()
                if not _DIGITS.match(value):
                    raise AppError(f"invalid Content-Length {item[1]!r}")
                if length is not None:
                    # Two lengths would let a client or proxy pick either one: a desync.
                    if int(value) != length:
                        raise AppError(f"conflicting Content-Length values in {headers!r}")
                    continue
                length = int(value)
            names.add(lname)
            clean.append(line)
        self.status, self.headers, self.length = status, clean, length
        self.app_fields = frozenset(names)
        self.code = code
        if self.code < 200 or self.code in (204, 304):
            self.no_body = True
        return self.write

    def _head(self, total: int | None) -> bytes:
        """Choose the framing, then build the head. `total` is the whole body when known."""
        if self.status is None:
            raise AppError("the app returned before calling start_response")
        req = self.req
        framing: list[bytes] = []
        if self.keep_alive and self.must_close():
            self.keep_alive = False
        if self.length is None:
            if total is not None and (not self.no_body or (req.method == "HEAD" and total)):
                # For HEAD, the length of the body the app produced is what GET would send.
                self.length = total
                framing.append(b"Content-Length: %d\r\n" % total)
            elif self.no_body:
                pass
            elif req.version >= (1, 1):
                self.chunked = True
                framing.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # close-delimited (RFC 9112 §6.3 item 8)
        if not self.keep_alive:
            framing.append(b"Connection: close\r\n")
        elif req.version < (1, 1):
            framing.append(b"Connection: keep-alive\r\n")
        lines = [b"HTTP/1.1 ", self.status.encode("latin-1"), b"\r\n"]
        # Date and Server are singletons (RFC 9110 §5.3): the app's own value wins.
        if "server" not in self.app_fields:
            lines += (b"Server: ", SERVER, b"\r\n")
        if "date" not in self.app_fields:
            lines += (b"Date: ", http_date(), b"\r\n")
        lines += self.headers
        lines += framing
        lines.append(b"\r\n")
        self.head_sent = True
        return b"".join(lines)

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
            self.send(out)

    def send_whole(self, body: Iterable[bytes], total: int) -> None:
        """A list/tuple body: one head with its Content-Length and one send."""
        head = self._head(total)
        if self.no_body:
            self.send(head)
            return
        if self.length is not None and total != self.length:
            self.keep_alive = False
            body = [b"".join(body)[:self.length]]
        self.body_bytes = min(total, self.length if self.length is not None else total)
        parts = body if isinstance(body, (list, tuple)) else list(body)
        if total > 65536 and len(parts) == 1:
            self.send(head)  # a large body goes out as it is, not copied behind the head
            self.send(parts[0])
        else:
            self.send(head + b"".join(parts))  # one send for the common small response

    def finish(self) -> None:
        """After the last body chunk: terminate the framing."""
        if not self.head_sent:
            self.send(self._head(0))
        elif self.chunked:
            self.send(b"0\r\n\r\n")
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

