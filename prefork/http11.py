r"""Sans-I/O HTTP/1.1 request parser: bytes in, events out.

Rules
-----
1. No I/O here: the caller feeds bytes (``feed``), ``feed(b"")`` means EOF, and pulls
   events (``next_event``): ``Request``, zero or more ``Data``, ``EndOfMessage``, then
   the next pipelined request. ``NEED_DATA`` asks for more bytes; ``CLOSED`` reports a
   clean EOF between requests. ``receive(data)`` is ``feed`` then ``next_event`` in one
   call (a server's per-recv call), and parses a head straight from ``data``.
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
5. A complete head normally takes one pass (``_whole_head``): a find of CRLFCRLF, a
   split at CRLF, and each line looked up among the lines seen valid before (a cache
   per process, bounded; validity is a property of a line alone, and clients repeat
   most of theirs). Lines not seen yet take one match of the request line and one
   ``findall`` over all field lines. Limits are checked for every head. Whenever that
   pass sees anything unusual (a limit, a bare CR or LF, an invalid line, "_" in a
   name) it changes nothing and the per-line path decides, so both always agree (rule
   4).
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
on HTTP/1.0 too ("any request message", §3.2). Content-Length list elements must be
identical digit strings (``005, 5`` is 400) and may not be empty; an expectation other
than 100-continue is 417 (the fields that decide framing: http11_fields.py). Up to two
CRLFs before a request line are skipped (§2.2) and do not start a request
(``in_request`` stays False).

Benchmark: CPU time per keep-alive request as the server drives it (feed, then
next_event until NEED_DATA) on one reused parser; minimum of 20 runs of 10 000 with
CPython 3.11.7 on the shared 2-vCPU dev VM, as ``python tests/test_http11.py`` measures
(lines seen before, as from a client on a keep-alive connection):
    wrk      GET, Host only                       40 bytes   3.0 usec (was 6.8, then 4.0)
    curl     GET, Host, User-Agent, Accept        82 bytes   3.3 usec (was 8.0, then 5.2)
    browser  GET, 14 fields                      532 bytes   5.5 usec (was 16.5, then 12.1)
    post     POST, 5 fields, 13-byte body        152 bytes   5.1 usec (was 11.4, then 7.9)
What is left is mostly CPython's fixed cost per operation (a Python-level call, an
attribute store), not work per byte or per field. Expect 2-3x less on a desktop CPU.
"""

from __future__ import annotations

from typing import Any, Final

from prefork import http11_rules as _r
from prefork.http11_events import CLOSED, NEED_DATA, Data, EndOfMessage, Event, Request, Sentinel
from prefork.http11_fields import read_fields as _read_fields
from prefork.http11_rules import Limits, ProtocolError

__all__ = [
    "CLOSED", "NEED_DATA", "Data", "EndOfMessage", "Event", "Limits", "ProtocolError",
    "Request", "RequestParser", "Sentinel",
]


# Parser states.
_HEAD: Final = 0  # reading a request head (or idle between requests)
_EOM: Final = 1  # body complete: EndOfMessage is next
_BODY: Final = 2  # Content-Length body, self._remaining bytes to go
_CHUNK_SIZE: Final = 3  # expecting a chunk-size line
_CHUNK_DATA: Final = 4  # inside chunk-data, self._remaining bytes to go
_CHUNK_END: Final = 5  # expecting the CRLF after chunk-data
_TRAILER: Final = 6  # reading trailer fields after the last chunk

_V11: Final = _r.V11
_CR: Final = 13
_SLASH: Final = 47
_UNDERSCORE: Final = 95  # an int: `int in bytes` is ~10x faster than `bytes in bytes`

_RequestLine = _r.RequestLine
_request_line: Final = _r.request_line

# Bound methods of the hot-path patterns (one lookup less per request).
_match_request_line: Final = _r.REQUEST_LINE_AT.match
_field_lines: Final = _r.FIELD_LINES.findall
_NOT_A_FIELD_LINE: Final = _r.NOT_A_FIELD_LINE
_known_name: Final = _r.FIELD_NAMES.get
_new_object: Final = object.__new__

# Request lines and field lines that passed validation, as parsed (_whole_head), shared
# by every connection of the process. Bounded twice, since clients choose the lines:
# only short lines are kept, and a full cache is emptied.
_seen_request_lines: dict[bytes, _RequestLine] = {}
_seen_fields: dict[bytes, tuple[str, str]] = {}
_seen_field: Final = _seen_fields.get
SEEN_MAX: Final = 1024  # entries per cache
SEEN_LINE_MAX: Final = 256  # bytes: at most ~0.5 MiB of lines per cache


def _remember(cache: dict[bytes, Any], line: bytes, parsed: Any) -> None:
    if len(line) <= SEEN_LINE_MAX:
        if len(cache) >= SEEN_MAX:
            cache.clear()
        cache[line] = parsed


class RequestParser:
    """Incremental HTTP/1.1 request parser for one connection (see module Rules)."""

    __slots__ = (
        "_limits", "_small_head", "_max_fields", "_buf", "_state", "_eof", "_error", "_scan",
        "_skipped", "_reqline", "_headers", "_nfields", "_remaining", "_total", "_trailers",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits = limits if limits is not None else Limits()
        # A head no longer than this, with at most _max_fields field lines, crosses no
        # limit (checked once here, not per request; limits are fixed per parser).
        self._small_head = min(limits.request_line, limits.field_size)
        self._max_fields = limits.fields
        self._buf = bytearray()
        self._state = _HEAD
        self._eof = False
        self._error: ProtocolError | None = None
        # Length of the buffer prefix known to hold no LF (only meaningful while a
        # line-oriented state waits for more bytes): never rescan what was searched.
        self._scan = 0
        self._skipped = 0  # CRLFs skipped before this request line (at most 2)
        # The per-line head path keeps its progress here; the one-pass path never
        # touches them (_reqline stays None).
        self._reqline: _RequestLine | None = None
        self._headers: list[tuple[str, str]] = []
        self._nfields = 0
        self._remaining = 0
        self._total = 0
        self._trailers: list[tuple[str, str]] | None = None

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
        if self._buf or self._reqline is not None:
            return True
        return self._state != _HEAD

    def next_event(self) -> Event:
        """The next event, NEED_DATA, or CLOSED (clean EOF between requests).

        Raises ProtocolError on any violation, including EOF inside a head or body;
        after that every call raises the same error again.
        """
        if self._error is not None:
            raise self._error
        # A keep-alive server makes three calls per body-less request: the Request,
        # its EndOfMessage, then NEED_DATA. The last two need no parsing at all.
        state = self._state
        if state == _EOM:
            self._state = _HEAD
            trailers, self._trailers = self._trailers, None
            return EndOfMessage(trailers)
        if state == _HEAD and not self._buf and self._reqline is None:
            return CLOSED if self._eof else NEED_DATA
        try:
            event = self._head() if state == _HEAD else self._next()
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

    def receive(self, data: bytes) -> Event:
        """``feed(data)`` then ``next_event()``: what a server does with each recv().

        One call instead of two, and in the usual case (a whole head arriving between
        requests) the head is parsed straight from `data`, without a trip through the
        buffer."""
        if data and self._state == _HEAD and self._reqline is None and self._error is None \
                and not self._eof:
            if not self._buf and data[0] != _CR:
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    try:
                        req = self._whole_head(data[:end])
                    except ProtocolError as exc:
                        self._error = exc
                        raise
                    if req is not None:
                        if len(data) > end + 4:
                            self._buf += data[end + 4:]  # a body or a pipelined request
                        return req
            self._buf += data
            try:
                return self._head()
            except ProtocolError as exc:
                self._error = exc
                self._buf = bytearray()
                raise
        self.feed(data)
        return self.next_event()

    def skip_end(self) -> None:
        """After a Request without a body: consume its EndOfMessage without building it
        (what a server does with every body-less request; next_event() would return it)."""
        if self._state != _EOM or self._trailers is not None:
            raise RuntimeError("skip_end() only right after a Request without a body")
        self._state = _HEAD

    # -- state machine -------------------------------------------------------------

    def _next(self) -> Event:
        """Body states (next_event handles _HEAD and a pending _EOM)."""
        buf = self._buf
        while True:
            state = self._state
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
                    self._trailers = []
                continue
            # _TRAILER, RFC 9112 §7.1.2: header rules, but fields the sender may not
            # put in a trailer (RFC 9110 §6.5.1) are dropped, never merged.
            line = self._line(self._limits.field_size, 431, "trailer line")
            if line is None:
                return NEED_DATA
            if not line:
                self._state = _HEAD
                trailers, self._trailers = self._trailers, None
                return EndOfMessage(trailers)
            self._nfields += 1
            if self._nfields > self._limits.fields:
                raise ProtocolError(431, "too many trailer fields")
            m = _r.FIELD_LINE.fullmatch(line)
            if m is None:
                raise ProtocolError(400, _r.field_line_error(line, "trailer"))
            name = m.group(1).lower().decode("latin-1")
            if "_" not in name and name not in _r.FORBIDDEN_TRAILERS:
                assert self._trailers is not None
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

    # -- request head ----------------------------------------------------------------

    def _head(self) -> Event:
        """A complete head in one pass (rule 5); anything else goes to _head_lines."""
        buf = self._buf  # not empty (next_event), unless a request line is pending
        if self._reqline is not None:
            return self._head_lines()
        if buf[0] == _CR:
            # RFC 9112 §2.2: ignore a few empty lines before the request-line.
            while self._skipped < 2 and buf[:2] == b"\r\n":
                del buf[:2]
                self._skipped += 1
                self._scan = 0
            if not buf:
                return NEED_DATA
        # An LF at the scan position can at best be the second byte of the terminator.
        end = buf.find(b"\r\n\r\n", self._scan - 1 if self._scan else 0)
        if end < 0:
            return self._head_lines()
        req = self._whole_head(bytes(buf[:end]))
        if req is None:
            return self._head_lines()
        del buf[: end + 4]
        return req

    def _whole_head(self, head: bytes) -> Request | None:
        """The Request for a complete head (`head` ends before its CRLFCRLF), or None
        when anything is unusual, which leaves the per-line path to decide (rule 5).

        The request line must end at the first CRLF (no bare CR/LF in it), and every CRLF
        after it must start a valid field line. A line seen valid before is taken from a
        cache (_remember) without matching it again: validity is a property of the line
        alone, and clients repeat most of their lines (Host, User-Agent, Accept...) on
        every request. Limits are checked here, for every head, as the per-line path
        would; if one might be crossed, the per-line path finds where."""
        lines = head.split(b"\r\n")
        first = lines[0]
        del lines[0]  # the field lines
        if len(head) > self._small_head or len(lines) > self._max_fields:
            limits = self._limits
            if (len(first) > limits.request_line or len(lines) > limits.fields
                    or len(head) - len(first) > limits.field_size + 2):
                return None
        reqline = _seen_request_lines.get(first)
        if reqline is not None:
            seen = list(map(_seen_field, lines))  # (no bytecode per field)
            if None not in seen:
                return self._finish_head(reqline, seen)  # type: ignore[arg-type]  # no None
        m = _match_request_line(head)
        if m is None:
            return None
        pairs = _field_lines(head, m.end())  # one per CRLF, NOT_A_FIELD_LINE if not valid
        if _NOT_A_FIELD_LINE in pairs:
            return None
        method, target, version = m.groups()
        if target[0] == _SLASH and version == b"HTTP/1.1" and method != b"CONNECT":
            # The usual origin-form line, as _request_line would take it apart.
            text = target.decode("latin-1")
            path, _, query = text.partition("?")
            reqline = (method.decode("latin-1"), text, path, query, _V11, None)
        else:
            reqline = _request_line(method, target, version)
        _remember(_seen_request_lines, first, reqline)
        headers = []  # (a plain loop: cheaper than a comprehension's call in 3.11)
        for line, (name, value) in zip(lines, pairs, strict=True):
            field = (_known_name(name) or name.lower().decode("latin-1"),
                     value.decode("latin-1"))
            _remember(_seen_fields, line, field)
            headers.append(field)
        return self._finish_head(reqline, headers)

    def _head_lines(self) -> Event:
        """The per-line path: whatever part of a head the one-pass path did not take."""
        buf = self._buf
        if self._reqline is not None and buf[:2] == b"\r\n":
            del buf[:2]
            return self._finish_lines()
        # The rest of the head is buffered: split it (cheaper than line by line).
        end = buf.find(b"\r\n\r\n", self._scan - 1 if self._scan else 0)
        if end >= 0:
            head = bytes(buf[:end])
            lines = head.split(b"\r\n")
            # A bare LF would end a line earlier than the CRLF split says (rule 4):
            # let the line-by-line loop below find exactly where and why it fails.
            if head.count(b"\n") == len(lines) - 1:
                self._take_lines(lines)
                del buf[: end + 4]
                self._scan = 0
                return self._finish_lines()
        # Validate complete lines as they arrive, enforce limits on the incomplete one.
        while True:
            if self._reqline is None:
                line = self._line(self._limits.request_line, 414, "request line")
            else:
                line = self._line(self._limits.field_size, 431, "header line")
            if line is None:
                return NEED_DATA
            if not line and self._reqline is not None:
                return self._finish_lines()
            self._take_lines([line])

    def _take_lines(self, lines: list[bytes]) -> None:
        """Validate head lines in order (the request line first if not seen yet)."""
        limits = self._limits
        start = 0
        if self._reqline is None:
            line = lines[0]
            if len(line) > limits.request_line:
                raise ProtocolError(414, "request line too long")
            m = _r.REQUEST_LINE.fullmatch(line)
            if m is None:
                raise ProtocolError(400, _r.request_line_error(line))
            self._reqline = _request_line(*m.groups())
            self._headers = []
            self._nfields = 0
            start = 1
        field_size = limits.field_size
        max_fields = limits.fields
        nfields = self._nfields
        headers = self._headers
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
            headers.append((raw_name.lower().decode("latin-1"), raw_value.decode("latin-1")))
        self._nfields = nfields

    def _finish_lines(self) -> Request:
        reqline = self._reqline
        assert reqline is not None
        self._reqline = None
        return self._finish_head(reqline, self._headers)

    def _finish_head(self, reqline: _RequestLine, headers: list[tuple[str, str]]) -> Request:
        """The head is valid line by line: check the special fields, pick the framing."""
        # Built field by field: half the cost of calling the dataclass's __init__.
        req = _new_object(Request)
        (req.method, req.target, req.path, req.query, req.version, authority) = reqline
        req.headers = headers
        _read_fields(req, authority, self._limits.body)  # host ... expect_continue
        if req.chunked:
            self._state = _CHUNK_SIZE
            self._total = 0
        elif req.content_length:
            self._state = _BODY
            self._remaining = req.content_length
        else:
            self._state = _EOM
        self._scan = 0
        self._skipped = 0
        return req
