r"""Sans-I/O HTTP/1.1 request parser: bytes in, events out.

Rules
-----
1. No I/O here: the caller feeds bytes (``feed``), ``feed(b"")`` means EOF, and pulls
   events (``next_event``): ``Request``, zero or more ``Data``, ``EndOfMessage``, then
   the next pipelined request. ``NEED_DATA`` asks for more bytes; ``CLOSED`` reports a
   clean EOF between requests.
2. Everything is parsed as ``bytes`` and validated by patterns compiled once in
   http11_rules before anything is converted; text is decoded as latin-1 only after
   validation (PEP 3333 native strings). ``int()`` only ever sees at most 18 decimal
   or 16 hex ASCII digits. No ``str.strip/split/splitlines/isdigit``.
3. Lines end with CRLF only. A line ends at its first LF; an LF without CR before it
   (bare LF) and a CR anywhere inside a line (bare CR) are errors (RFC 9112 §2.2).
4. Errors are decided in stream order, line by line, with the length check of a line
   first; the outcome (status and reason) therefore does not depend on how the bytes
   were split across ``feed`` calls. An incomplete line already longer than its limit
   fails at once, so a head that never ends cannot grow the buffer without bound.
5. A complete head normally goes through one find of CRLFCRLF and one ``findall`` over
   all header lines (``_fast_head``); whenever that pass sees anything unusual it
   changes nothing and the per-line path decides, so both always agree (rule 4).
6. Any violation raises ``ProtocolError(status, reason)``; the parser is then dead and
   re-raises the same error forever. The caller must answer and close (RFC 9112 §6.1,
   §6.3: after a framing error the connection cannot be reused).
7. A body is delimited by chunked or by Content-Length, never both; no TE/CL in a
   request means no body (RFC 9112 §6.3 item 7). Data never runs past the message.

Decisions (where the RFCs leave a choice): bare LF and obs-fold are rejected (400);
``Transfer-Encoding`` with ``Content-Length`` is rejected (400); a TE list whose final
coding is not ``chunked`` is 400 (§6.3 item 4, a MUST) even if it also names an unknown
coding, while ``gzip, chunked`` is 501 (§6.1); transfer parameters are 400. An empty
Host is accepted only with an absolute-form target. Duplicate or invalid Host is 400
on HTTP/1.0 too ("any request message", §3.2). Content-Length list elements are
compared as numbers (``005, 5`` is 5) and may not be empty. Up to two CRLFs before a
request line are skipped (§2.2) and do not start a request (``in_request`` stays False).

Benchmark (CPython 3.11.7 on the 2-vCPU dev VM; a GET with 5 header fields parsed to
Request + EndOfMessage by a reused parser):
    python -m timeit -s "from prefork.http11 import RequestParser; p = RequestParser()" \
      -s "r = b'GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\n'" \
      -s "r += b'Accept: */*\r\nAccept-Encoding: gzip\r\nCookie: a=b\r\n\r\n'" \
      "p.feed(r); p.next_event(); p.next_event()"
    -> 9 usec per loop (~110 000 heads/s per core); a browser GET with 13 fields takes
    15 usec. A bare ``re.fullmatch(b"host: example.com")`` takes 0.22-0.35 usec on that
    VM, so expect these to be 2-3x faster on a current desktop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prefork import http11_rules as _r
from prefork.http11_rules import Limits

__all__ = [
    "CLOSED", "NEED_DATA", "Data", "EndOfMessage", "Event", "Limits", "ProtocolError",
    "Request", "RequestParser", "Sentinel",
]


class ProtocolError(Exception):
    """The request is malformed; answer ``status`` and close the connection."""

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    version: tuple[int, int]
    headers: list[tuple[str, str]]
    host: str | None
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool


class Data:
    """A piece of the request body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Data) and other.data == self.data

    def __repr__(self) -> str:
        return f"Data({self.data!r})"


class EndOfMessage:
    """End of one request; ``trailers`` holds the permitted chunked trailer fields."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: list[tuple[str, str]] | None = None) -> None:
        self.trailers = [] if trailers is None else trailers

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EndOfMessage) and other.trailers == self.trailers

    def __repr__(self) -> str:
        return f"EndOfMessage({self.trailers!r})"


class Sentinel:
    """NEED_DATA and CLOSED: compare with ``is``."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = Sentinel("NEED_DATA")
CLOSED: Final = Sentinel("CLOSED")
Event = Request | Data | EndOfMessage | Sentinel

# Parser states.
_HEAD: Final = 0  # reading a request head (or idle between requests)
_EOM: Final = 1  # body complete: EndOfMessage is next
_BODY: Final = 2  # Content-Length body, self._remaining bytes to go
_CHUNK_SIZE: Final = 3  # expecting a chunk-size line
_CHUNK_DATA: Final = 4  # inside chunk-data, self._remaining bytes to go
_CHUNK_END: Final = 5  # expecting the CRLF after chunk-data
_TRAILER: Final = 6  # reading trailer fields after the last chunk

_V11: Final = (1, 1)
_V10: Final = (1, 0)
_CR: Final = 13
_SLASH: Final = 47
_UNDERSCORE: Final = 95  # an int: `int in bytes` is ~10x faster than `bytes in bytes`


class RequestParser:
    """Incremental HTTP/1.1 request parser for one connection (see module Rules)."""

    __slots__ = (
        "_limits", "_buf", "_state", "_eof", "_error", "_scan", "_skipped",
        "_reqline", "_headers", "_special", "_nfields", "_remaining", "_total", "_trailers",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits if limits is not None else Limits()
        self._buf = bytearray()
        self._state = _HEAD
        self._eof = False
        self._error: ProtocolError | None = None
        # Length of the buffer prefix known to hold no LF (only meaningful while a
        # line-oriented state waits for more bytes): never rescan what was searched.
        self._scan = 0
        self._remaining = 0
        self._total = 0
        self._trailers: list[tuple[str, str]] = []
        self._reset_head()

    def _reset_head(self) -> None:
        self._skipped = 0
        self._reqline: tuple[str, str, str, str, tuple[int, int], str | None] | None = None
        self._headers: list[tuple[str, str]] = []
        self._special: list[tuple[str, str]] = []  # the SPECIAL_FIELDS among _headers
        self._nfields = 0

    # -- public API --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append received bytes; ``b""`` means the peer closed its side (EOF)."""
        if self._error is not None:
            return  # dead: nothing will be parsed any more, don't hoard memory
        if not data:
            self._eof = True
        elif self._eof:
            raise RuntimeError("feed() after EOF")
        else:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed (e.g. the next pipelined request)."""
        return len(self._buf)

    @property
    def in_request(self) -> bool:
        """True from the first byte of a request head (skipped CRLFs aside) until the
        next_event() that returns its EndOfMessage."""
        return self._state != _HEAD or self._reqline is not None or len(self._buf) > 0

    def next_event(self) -> Event:
        """The next event, NEED_DATA, or CLOSED (clean EOF between requests).

        Raises ProtocolError on any violation, including EOF inside a head or body;
        after that every call raises the same error again.
        """
        if self._error is not None:
            raise self._error
        try:
            event = self._next()
            if event is NEED_DATA and self._eof:
                if self._state == _HEAD and self._reqline is None and not self._buf:
                    return CLOSED
                what = "request head" if self._state == _HEAD else "request body"
                raise ProtocolError(400, f"truncated {what}")
            return event
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise

    # -- state machine -------------------------------------------------------------

    def _next(self) -> Event:
        buf = self._buf
        while True:
            state = self._state
            if state == _HEAD:
                return self._head()
            if state == _EOM:
                self._state = _HEAD
                self._reset_head()
                trailers, self._trailers = self._trailers, []
                return EndOfMessage(trailers)
            if state == _BODY or state == _CHUNK_DATA:
                if not buf:
                    return NEED_DATA
                n = self._remaining
                if len(buf) <= n:
                    data = bytes(buf)
                    buf.clear()
                else:
                    data = bytes(buf[:n])
                    del buf[:n]
                self._remaining = n = n - len(data)
                if n == 0:
                    self._state = _EOM if state == _BODY else _CHUNK_END
                return Data(data)
            if state == _CHUNK_END:
                # RFC 9112 §7.1: chunk-data is followed by exactly CRLF (CVE-2025-43859).
                if buf[:2] != b"\r\n":
                    if buf[:1] == b"\r" and len(buf) == 1 or not buf:
                        return NEED_DATA
                    raise ProtocolError(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
                self._scan = 0
                continue
            if state == _CHUNK_SIZE:
                line = self._line(self._limits.chunk_ext, 400, "chunk-size line")
                if line is None:
                    return NEED_DATA
                m = _r.CHUNK_LINE.fullmatch(line)
                if m is None:
                    raise ProtocolError(400, "invalid chunk-size line")
                size = int(m.group(1), 16)
                body = self._limits.body
                self._total += size
                if body and self._total > body:
                    raise ProtocolError(413, "request body too large")
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILER
                    self._nfields = 0
                continue
            # _TRAILER, RFC 9112 §7.1.2: header rules, but fields the sender may not
            # put in a trailer (RFC 9110 §6.5.1) are dropped, never merged.
            line = self._line(self._limits.field_size, 431, "trailer line")
            if line is None:
                return NEED_DATA
            if not line:
                self._state = _EOM
                continue
            self._nfields += 1
            if self._nfields > self._limits.fields:
                raise ProtocolError(431, "too many trailer fields")
            m = _r.FIELD_LINE.fullmatch(line)
            if m is None:
                raise ProtocolError(400, _r.field_line_error(line, "trailer"))
            name = m.group(1).lower().decode("latin-1")
            if "_" not in name and name not in _r.FORBIDDEN_TRAILERS:
                self._trailers.append((name, m.group(2).decode("latin-1")))

    def _line(self, limit: int, status: int, what: str) -> bytes | None:
        """Take one CRLF-terminated line off the buffer, or None if incomplete."""
        buf = self._buf
        nl = buf.find(b"\n", self._scan)
        if nl < 0:
            # A trailing CR may be the first half of the CRLF: don't count it yet.
            n = len(buf) - 1 if buf[-1:] == b"\r" else len(buf)
            if n > limit:
                raise ProtocolError(status, f"{what} too long")
            self._scan = len(buf)
            return None
        self._scan = 0
        if nl and buf[nl - 1] == _CR:
            if nl - 1 > limit:
                raise ProtocolError(status, f"{what} too long")
            line = bytes(buf[: nl - 1])
        else:
            if nl > limit:
                raise ProtocolError(status, f"{what} too long")
            raise ProtocolError(400, f"bare LF in {what}")
        del buf[: nl + 1]
        return line

    def _head(self) -> Event:
        buf = self._buf
        if self._reqline is None:
            # RFC 9112 §2.2: ignore a few empty lines before the request-line.
            while self._skipped < 2 and buf[:2] == b"\r\n":
                del buf[:2]
                self._skipped += 1
                self._scan = 0
            if not buf:
                return NEED_DATA
        elif buf[:2] == b"\r\n":
            del buf[:2]
            return self._finish_head()
        # Is the whole (rest of the) head buffered? An LF at the scan position can at
        # best be the second byte of the terminator.
        end = buf.find(b"\r\n\r\n", self._scan - 1 if self._scan else 0)
        if end >= 0:
            if self._reqline is None and self._fast_head(end):
                del buf[: end + 4]
                self._scan = 0
                return self._finish_head()
            head = bytes(buf[:end])
            lines = head.split(b"\r\n")
            # A bare LF would end a line earlier than the CRLF split says (rule 4):
            # let the line-by-line path below find exactly where and why it fails.
            if head.count(b"\n") == len(lines) - 1:
                self._take_lines(lines)
                del buf[: end + 4]
                self._scan = 0
                return self._finish_head()
        # Slow path: validate complete lines as they arrive, enforce limits on the
        # incomplete one.
        while True:
            if self._reqline is None:
                line = self._line(self._limits.request_line, 414, "request line")
            else:
                line = self._line(self._limits.field_size, 431, "header line")
            if line is None:
                return NEED_DATA
            if not line and self._reqline is not None:
                return self._finish_head()
            self._take_lines([line])

    def _fast_head(self, end: int) -> bool:
        """Parse a complete head at buf[:end] in a few C-level passes.

        Returns False, having changed nothing, when any line would need a closer
        look (too long, too many, bare LF, invalid): the per-line path then finds
        the first offending line, so both paths always agree.
        """
        buf = self._buf
        limits = self._limits
        nlines = buf.count(b"\r\n", 0, end)  # = number of header lines
        i = buf.find(b"\r\n", 0, end) if nlines else end  # end of the request line
        # Every line within its limit (a bare LF in the request line then fails the
        # request-line regex, exactly as the per-line path would report it).
        if i > limits.request_line or end - i > limits.field_size or nlines > limits.fields:
            return False
        pairs = _r.FIELD_LINES.findall(buf, i, end)
        # One match per CRLF: no bare CR/LF and no invalid line after the request line.
        if len(pairs) != nlines:
            return False
        self._request_line(buf, i)
        if pairs and (buf[end - 1] in b" \t" or _r.TRAILING_OWS.search(buf, i, end)):
            pairs = [(name, value.rstrip(b" \t")) for name, value in pairs]
        # "_" in a name: dropped, see _take_lines.
        headers = self._headers = [
            (name.lower().decode("latin-1"), value.decode("latin-1"))
            for name, value in pairs
            if _UNDERSCORE not in name
        ]
        special = _r.SPECIAL_FIELDS
        self._special = [field for field in headers if field[0] in special]
        return True

    def _take_lines(self, lines: list[bytes]) -> None:
        """Validate head lines in order (the request line first if not seen yet)."""
        limits = self._limits
        start = 0
        if self._reqline is None:
            self._request_line(lines[0], len(lines[0]))
            start = 1
        field_size = limits.field_size
        max_fields = limits.fields
        nfields = self._nfields
        headers = self._headers
        special = self._special
        match = _r.FIELD_LINE.fullmatch
        for i in range(start, len(lines)):
            line = lines[i]
            if len(line) > field_size:
                raise ProtocolError(431, "header line too long")
            nfields += 1
            if nfields > max_fields:
                raise ProtocolError(431, "too many header fields")
            m = match(line)
            if m is None:
                raise ProtocolError(400, _r.field_line_error(line, "header"))
            raw_name, raw_value = m.groups()
            if _UNDERSCORE in raw_name:
                # PEP 3333 maps "_" and "-" to the same CGI name; a client could spoof
                # a proxy-set field (X_Forwarded_For), so such fields are dropped.
                continue
            field = (raw_name.lower().decode("latin-1"), raw_value.decode("latin-1"))
            if field[0] in _r.SPECIAL_FIELDS:
                special.append(field)
            headers.append(field)
        self._nfields = nfields

    def _request_line(self, data: bytes | bytearray, end: int) -> None:
        """Parse the request line data[:end] (regex groups are bytes either way)."""
        if end > self._limits.request_line:
            raise ProtocolError(414, "request line too long")
        m = _r.REQUEST_LINE.fullmatch(data, 0, end)
        if m is None:
            raise ProtocolError(400, _r.request_line_error(bytes(data[:end])))
        method, target, version = m.groups()
        if version == b"HTTP/1.1":
            v = _V11
        elif version == b"HTTP/1.0":
            v = _V10
        else:
            raise ProtocolError(505, "HTTP version not supported")
        authority: str | None = None
        # RFC 9112 §3.2: the four forms, each only where it is allowed.
        if target[0] == _SLASH:
            if method == b"CONNECT":
                raise ProtocolError(400, "CONNECT requires an authority-form target")
            text = target.decode("latin-1")
            path, _, query = text.partition("?")
        elif method == b"CONNECT":
            if _r.AUTHORITY_FORM.fullmatch(target) is None:
                raise ProtocolError(400, "invalid authority-form target")
            text, path, query = target.decode("latin-1"), "", ""
        elif target == b"*":
            if method != b"OPTIONS":
                raise ProtocolError(400, "asterisk-form target only allowed with OPTIONS")
            text, path, query = "*", "*", ""
        else:
            a = _r.ABSOLUTE_FORM.fullmatch(target)
            # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
            if a is None or _r.HOST.fullmatch(a.group(1)) is None:
                raise ProtocolError(400, "invalid request-target")
            text = target.decode("latin-1")
            authority = a.group(1).decode("latin-1")
            path, _, query = a.group(2).decode("latin-1").partition("?")
            path = path or "/"
        self._reqline = (method.decode("latin-1"), text, path, query, v, authority)

    def _finish_head(self) -> Request:
        assert self._reqline is not None
        method, target, path, query, version, authority = self._reqline
        hosts: list[tuple[str, bytes]] = []
        cl: int | None = None
        codings: list[bytes] | None = None
        ctypes = 0
        close = keep_alive = expect = False
        for name, text in self._special:
            value = text.encode("latin-1")  # validated latin-1: exact round trip
            if name == "content-length":
                # RFC 9112 §6.3 item 5 / RFC 9110 §8.6: 1*DIGIT, or a list of equal ones.
                if _r.CONTENT_LENGTH.fullmatch(value) is None:
                    raise ProtocolError(400, "invalid Content-Length")
                for digits in _r.DIGITS.findall(value):
                    n = int(digits)
                    if cl is not None and n != cl:
                        raise ProtocolError(400, "conflicting Content-Length values")
                    cl = n
            elif name == "transfer-encoding":
                if _r.TOKEN_LIST.fullmatch(value) is None:
                    raise ProtocolError(400, "invalid Transfer-Encoding")
                if codings is None:
                    codings = []
                codings += _r.TOKEN.findall(value.lower())
            elif name == "host":
                hosts.append((text, value))
            elif name == "connection":
                for token in _r.TOKEN.findall(value.lower()):
                    if token == b"close":
                        close = True
                    elif token == b"keep-alive":
                        keep_alive = True
            elif name == "expect":
                # RFC 9110 §10.1.1: the expectation is case-insensitive.
                expect = expect or value.lower() == b"100-continue"
            else:
                ctypes += 1
        # RFC 9112 §3.2: missing (1.1), repeated or invalid Host -> 400.
        host: str | None = None
        if len(hosts) > 1:
            raise ProtocolError(400, "duplicate Host")
        if hosts:
            host, raw = hosts[0]
            if (raw or authority is None) and _r.HOST.fullmatch(raw) is None:
                raise ProtocolError(400, "invalid Host")
        elif version == _V11:
            raise ProtocolError(400, "missing Host")
        if authority is not None:
            host = authority  # §3.2.2: absolute-form wins over Host
        if ctypes > 1:
            raise ProtocolError(400, "duplicate Content-Type")  # RFC 9110 §5.3
        chunked = False
        if codings is not None:
            if version == _V10:
                raise ProtocolError(400, "Transfer-Encoding in HTTP/1.0")  # §6.1
            if cl is not None:
                raise ProtocolError(400, "both Transfer-Encoding and Content-Length")  # §6.1
            # §6.3 item 4 (final coding must be chunked), §6.1 (applied only once).
            if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                raise ProtocolError(400, "chunked must be the final transfer coding")
            if len(codings) > 1:
                raise ProtocolError(501, "unsupported transfer coding")
            chunked = True
        body = self._limits.body
        if cl is not None and body and cl > body:
            raise ProtocolError(413, "request body too large")
        # RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive".
        # RFC 9110 §10.1.1: a 1.0 client never waits for 100 Continue.
        v11 = version == _V11
        keep_alive = not close and (v11 or keep_alive)
        request = Request(
            method, target, path, query, version, self._headers, host, cl,
            chunked, keep_alive, expect and v11,
        )
        self._total = 0
        if chunked:
            self._state = _CHUNK_SIZE
        elif cl:
            self._state = _BODY
            self._remaining = cl
        else:
            self._state = _EOM
        self._scan = 0
        return request
