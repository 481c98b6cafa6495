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
from typing import Any, Protocol
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


def base_environ(url_scheme: str, errors: Any, multithread: bool) -> dict[str, Any]:
    """The environ keys that are the same for every request a worker serves."""
    return {**_BASE_ENVIRON, "wsgi.url_scheme": url_scheme, "wsgi.errors": errors,
            "wsgi.multithread": multithread}


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


def _fields(headers: list[tuple[str, str]]) -> dict[str, str]:
    """environ keys for header fields, with repeated fields combined into one value
    (RFC 9110 §5.3; Cookie with "; ", RFC 6265 §5.4)."""
    fields: dict[str, str] = {}
    for name, value in headers:
        key = _environ_key(name)
        if key in fields:
            fields[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            fields[key] = value
    return fields


def build_environ(req: Request, wsgi_input: Any, base: dict[str, Any],
                  peer: tuple[str, str], sock: Any, trusted_proxy: bool = False,
                  ) -> dict[str, Any]:
    """The PEP 3333 environ, from `base` (base_environ) and the request. The socket's
    address (getsockname) is asked only when Host names no port, so the common request
    costs no extra syscall. From a trusted proxy, X-Forwarded-For sets REMOTE_ADDR (its
    last hop) and X-Forwarded-Proto the scheme."""
    path = req.path
    if "%" in path:
        # PEP 3333: PATH_INFO is the decoded path as a latin-1 "bytes-as-str".
        path = unquote_to_bytes(path).decode("latin-1")
    headers = req.headers
    keys = _ENVIRON_KEYS
    fields = {keys.get(name) or _environ_key(name): value for name, value in headers}
    if len(fields) != len(headers):
        fields = _fields(headers)  # a field was repeated
    host = req.host
    server = _HOST_PORTS.get(host) if host else None
    if server is None:
        server = _server_name(host, sock)
    # (One dict display: fewer bytecodes than a store per key. No header maps to one
    # of these keys: theirs start with HTTP_ or CONTENT_.)
    environ = {
        **base, **fields, "REQUEST_METHOD": req.method, "PATH_INFO": path,
        "QUERY_STRING": req.query, "RAW_URI": req.target,
        "SERVER_PROTOCOL": "HTTP/1.1" if req.version == (1, 1) else "HTTP/1.0",
        "REMOTE_ADDR": peer[0], "REMOTE_PORT": peer[1], "SERVER_NAME": server[0],
        "SERVER_PORT": server[1], "wsgi.input": wsgi_input,
    }
    if req.content_length is not None:
        environ["CONTENT_LENGTH"] = str(req.content_length)  # "005" and "5, 5" are "5"
    if trusted_proxy:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            # The last hop is the one our trusted proxy appended.
            environ["REMOTE_ADDR"] = forwarded.rpartition(",")[2].strip()
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "").lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
    return environ


# What start_response needs to know about a header beyond its wire line; flags for the
# two the server would otherwise add itself.
_OWN_SERVER, _OWN_DATE, _HOP, _LENGTH = 1, 2, 4, 8
_KINDS: dict[str, int] = {
    "server": _OWN_SERVER, "date": _OWN_DATE, "content-length": _LENGTH,
    **{name: _HOP for name in _HOP_BY_HOP},
}
_SERVER_LINE = b"Server: " + SERVER + b"\r\n"

# App header tuples seen before, validated: (name, value) -> (wire line, kind, length).
# Apps send the same few headers on every response; checking each once saves two regex
# matches and two encodes per header per request. Bounded, since values may vary freely.
_HEADER_CACHE: dict[tuple[str, str], tuple[bytes, int, int]] = {}
_HEADER_CACHE_MAX = 1024
# Statuses seen before, validated: "200 OK" -> (200, b"HTTP/1.1 200 OK\r\n").
_STATUS_CACHE: dict[str, tuple[int, bytes]] = {}


def _checked_header(item: Any) -> tuple[bytes, int, int]:
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
    kind = _KINDS.get(name.lower(), 0)
    length = 0
    if kind == _LENGTH:
        digits = value.strip(" \t")  # OWS only: str.strip() would also eat "\xa0"
        if not _DIGITS.match(digits):
            raise AppError(f"invalid Content-Length {value!r}")
        length = int(digits)
    checked = (line, kind, length)
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[item] = checked
    return checked


def _checked_status(status: Any) -> tuple[int, bytes]:
    if not isinstance(status, str) or not _STATUS.match(status):
        raise AppError(f"invalid status {status!r}")
    try:
        checked = (int(status[:3]), b"HTTP/1.1 %s\r\n" % status.encode("latin-1"))
    except UnicodeEncodeError:
        raise AppError(f"status {status!r} is not latin-1 (PEP 3333)") from None
    if len(_STATUS_CACHE) >= _HEADER_CACHE_MAX:
        _STATUS_CACHE.clear()
    _STATUS_CACHE[status] = checked
    return checked


_date_line_cache: tuple[bytes, bytes] = (b"", b"")


def _date_line() -> bytes:
    """b"Date: <http_date()>\\r\\n", rebuilt when the date changes (once a second)."""
    global _date_line_cache
    date = http_date()
    if date is not _date_line_cache[0]:
        _date_line_cache = (date, b"Date: " + date + b"\r\n")
    return _date_line_cache[1]


class Stopping(Protocol):
    stopping: bool  # the worker is stopping: this response is the connection's last


class Expecting(Protocol):
    expect: bool  # the client waits for 100 Continue (wsgi.input, body.py)


class Response:
    """start_response, the head, and the body framing of one response."""

    __slots__ = ("req", "send", "keep_alive", "status", "status_line", "code", "headers",
                 "own", "length", "head_sent", "chunked", "no_body", "body_bytes", "body",
                 "worker")

    def __init__(self, req: Request, send: Callable[[bytes], None], keep_alive: bool,
                 body: Expecting, worker: Stopping) -> None:
        self.req = req
        self.send = send
        self.keep_alive = keep_alive
        # Asked at head time, when the connection cannot be reused: the request body was
        # never sent (the client still waits for 100 Continue) or the worker is stopping.
        self.body = body
        self.worker = worker
        self.status: str | None = None
        self.status_line = b""  # b"HTTP/1.1 <status>\r\n"
        self.code = 0
        self.headers = b""  # the app's header lines, validated, as sent
        self.own = 0  # _OWN_SERVER | _OWN_DATE: the app sent that field itself
        self.length: int | None = None  # Content-Length the app declared
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
        elif self.status is not None:
            raise AppError("start_response called twice without exc_info")
        try:
            code, status_line = _STATUS_CACHE[status]
        except (KeyError, TypeError):  # TypeError: unhashable, so not a str
            code, status_line = _checked_status(status)
        clean: list[bytes] = []
        own = 0
        length = None
        cache = _HEADER_CACHE
        for item in headers:
            try:
                line, kind, n = cache[item]
            except (KeyError, TypeError):  # TypeError: unhashable, so not a str pair
                line, kind, n = _checked_header(item)
            if kind:
                if kind == _HOP:
                    continue  # framing and persistence are ours
                if kind == _LENGTH:
                    if code < 200 or code == 204:
                        continue  # RFC 9110 §8.6: never in a 1xx or 204 response
                    if length is not None:
                        # Two lengths would let a client or proxy pick either: a desync.
                        if n != length:
                            raise AppError(f"conflicting Content-Length values in {headers!r}")
                        continue
                    length = n
                else:
                    own |= kind
            clean.append(line)
        self.status, self.status_line, self.code = status, status_line, code
        self.headers = b"".join(clean)
        self.own, self.length = own, length
        if code < 200 or code == 204 or code == 304:
            self.no_body = True
        return self.write

    def _head(self, total: int | None) -> bytes:
        """Choose the framing, then build the head. `total` is the whole body when known."""
        if self.status is None:
            raise AppError("the app returned before calling start_response")
        req = self.req
        if self.keep_alive and (self.body.expect or self.worker.stopping):
            self.keep_alive = False
        framing = b""
        if self.length is None:
            if total is not None and (not self.no_body or (req.method == "HEAD" and total)):
                # For HEAD, the length of the body the app produced is what GET would send.
                self.length = total
                framing = b"Content-Length: %d\r\n" % total
            elif self.no_body:
                pass
            elif req.version >= (1, 1):
                self.chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = False  # close-delimited (RFC 9112 §6.3 item 8)
        if not self.keep_alive:
            framing += b"Connection: close\r\n"
        elif req.version < (1, 1):
            framing += b"Connection: keep-alive\r\n"
        self.head_sent = True
        # Date and Server are singletons (RFC 9110 §5.3): the app's own value wins.
        own = self.own
        return b"".join((
            self.status_line, b"" if own & _OWN_SERVER else _SERVER_LINE,
            b"" if own & _OWN_DATE else _date_line(), self.headers, framing, b"\r\n"))

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

