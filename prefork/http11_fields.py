"""The fields of a request head that decide its framing and its connection (sans-I/O).

Called by http11.RequestParser once a head is valid line by line; raises ProtocolError
for anything that would make the message ambiguous. Decisions:
- Host: exactly one on HTTP/1.1, at most one on 1.0, valid (RFC 9112 §3.2); an empty value
  only with an absolute-form target, whose authority then wins (§3.2.2).
- Content-Length: 1*DIGIT, or a list of *identical* elements ("5, 5"); "005, 5" or two
  lines that differ are 400 (RFC 9110 §8.6 allows a recipient to reject, which leaves no
  room for two parsers to read two lengths). Above --limit-request-body: 413 before any
  of the body is read.
- Transfer-Encoding: not on 1.0, not with Content-Length (RFC 9112 §6.1), chunked last
  and once (§6.3 item 4) or 400; any other coding 501.
- Content-Type more than once: 400 (RFC 9110 §5.3: not a list).
- Connection: 1.1 persists unless "close", 1.0 only with "keep-alive" (RFC 9112 §9.3).
- Expect: "100-continue" (any case) is honoured on 1.1 and ignored on 1.0 (RFC 9110
  §10.1.1); any other expectation gets 417 and never reaches the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from prefork import http11_rules as _r
from prefork.http11_rules import ProtocolError

if TYPE_CHECKING:
    from prefork.http11 import Request

_COMMA: Final = 44
_V11: Final = (1, 1)
_SPECIAL: Final = _r.SPECIAL_FIELDS

# Host values that passed HOST (never ""), shared by every connection of the process:
# clients repeat the same few on every request, so each is matched once. Bounded, since
# a client may send any number of distinct valid values.
_valid_hosts: set[str] = set()
_VALID_HOSTS_MAX: Final = 1024


def read_fields(req: Request, authority: str | None, body_limit: int) -> None:
    """Set req.host, content_length, chunked, keep_alive and expect_continue from the
    fields of a valid head (req.headers) and its request line (req.version; the
    authority of an absolute-form target)."""
    v11 = req.version == _V11
    host: str | None = None
    hosts = ctypes = 0
    cl: int | None = None
    cl_digits = b""
    codings: list[bytes] | None = None
    close = keep_alive = expect = False
    for name, text in req.headers:
        if name not in _SPECIAL:
            continue
        if name == "host":
            hosts += 1
            host = text
        elif name == "content-length":
            value = text.encode("latin-1")  # validated latin-1: exact round trip
            if _r.CONTENT_LENGTH.fullmatch(value) is None:
                raise ProtocolError(400, "invalid Content-Length")
            # Without a comma the value is one 1*18DIGIT, as just matched.
            for digits in _r.DIGITS.findall(value) if _COMMA in value else (value,):
                if cl is not None and digits != cl_digits:
                    raise ProtocolError(400, "conflicting Content-Length values")
                cl, cl_digits = int(digits), digits
        elif name == "transfer-encoding":
            value = text.encode("latin-1")
            if _r.TOKEN_LIST.fullmatch(value) is None:
                raise ProtocolError(400, "invalid Transfer-Encoding")
            if codings is None:
                codings = []
            codings += _r.TOKEN.findall(value.lower())
        elif name == "connection":
            value = text.encode("latin-1").lower()
            if value == b"keep-alive":  # the usual single token: no findall
                keep_alive = True
            elif value == b"close":
                close = True
            else:
                for token in _r.TOKEN.findall(value):
                    if token == b"close":
                        close = True
                    elif token == b"keep-alive":
                        keep_alive = True
        elif name == "expect":
            if text.encode("latin-1").lower() != b"100-continue":
                raise ProtocolError(417, "unsupported expectation")
            expect = True
        else:
            ctypes += 1
    if hosts == 1:
        assert host is not None
        # (A value that passed HOST before needs no second match: clients repeat it.)
        if host not in _valid_hosts and (host or authority is None):
            if not _r.valid_host(host.encode("latin-1")):
                raise ProtocolError(400, "invalid Host")
            if len(_valid_hosts) >= _VALID_HOSTS_MAX:
                _valid_hosts.clear()
            _valid_hosts.add(host)
    elif hosts:
        raise ProtocolError(400, "duplicate Host")
    elif v11:
        raise ProtocolError(400, "missing Host")
    if authority is not None:
        host = authority
    if ctypes > 1:
        raise ProtocolError(400, "duplicate Content-Type")
    chunked = False
    if codings is not None:
        if not v11:
            raise ProtocolError(400, "Transfer-Encoding in HTTP/1.0")
        if cl is not None:
            raise ProtocolError(400, "both Transfer-Encoding and Content-Length")
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            raise ProtocolError(400, "chunked must be the final transfer coding")
        if len(codings) > 1:
            raise ProtocolError(501, "unsupported transfer coding")
        chunked = True
    elif cl and body_limit and cl > body_limit:
        raise ProtocolError(413, "request body too large")
    req.host = host
    req.content_length = cl
    req.chunked = chunked
    req.keep_alive = not close and (v11 or keep_alive)
    req.expect_continue = expect and v11
