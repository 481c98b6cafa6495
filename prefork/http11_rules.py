"""Limits, grammar, constants and the meaning of a request line for prefork.http11

Rules
-----
1. Every pattern is compiled once and runs on ``bytes`` (``fullmatch``, or an anchored
   ``findall`` whose match count is checked); nothing here sees a decoded ``str``, so
   Unicode digits, whitespace and case folding cannot leak in.
2. Character classes are spelled out byte by byte; no ``\\s``, ``\\d``, ``\\w`` or ``.``.
3. Every repetition that feeds ``int()`` has a fixed upper bound (18 decimal or 16
   hex digits), so ``int()`` never sees more than 2**64 and never hits the
   4300-digit limit.
4. No pattern may backtrack more than linearly on any input (tests/test_http11.py
   times each against long hostile inputs): adjacent runs that could trade bytes
   are made possessive/atomic (Python 3.11 syntax).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


class ProtocolError(Exception):
    """The request is malformed; answer ``status`` and close the connection."""

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Limits:
    """Per-connection parser limits; each names the status that exceeding it gets."""

    request_line: int = 8190  # request line bytes (excl. CRLF) -> 414
    fields: int = 100  # header fields (and, separately, trailer fields) -> 431
    field_size: int = 8190  # one header/trailer line (excl. CRLF) -> 431
    body: int = 0  # body bytes, 0 = unlimited -> 413
    chunk_ext: int = 4096  # one chunk-size line incl. extensions (excl. CRLF) -> 400


# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#                          "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TOKEN: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# RFC 9110 §5.5: field-vchar = VCHAR / obs-text
_FVCHAR: Final = rb"[\x21-\x7e\x80-\xff]"

# RFC 9112 §3: method SP request-target SP HTTP-version. The target may carry any byte
# except CTLs, SP and DEL; its form is checked separately (§3.2). The version regex is
# loose on purpose: a well-formed HTTP/d.d other than 1.0/1.1 is 505, not 400.
REQUEST_LINE: Final = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e\x80-\xff]+) (HTTP/[0-9]\.[0-9])"
)
# The same at the start of a buffered head: it must end at the first CRLF (or at the
# end of the head), so a bare CR or LF in it fails here too.
REQUEST_LINE_AT: Final = re.compile(REQUEST_LINE.pattern + rb"(?=\r\n|\Z)")

# RFC 9112 §5 / RFC 9110 §5.5: field-name ":" OWS field-value OWS, where field-value
# starts and ends with a field-vchar. No whitespace before the colon (§5.1), no
# obs-fold (§5.2): both simply fail to match. The possessive/atomic parts (Python 3.11)
# matter: with plain "[ \t]*" the two OWS runs can trade bytes, which made a failing
# "X:" + 8000 SP + NUL take O(n**2) (0.3 s here).
FIELD_LINE: Final = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*+((?>(?:" + _FVCHAR + rb"+(?:[ \t]+" + _FVCHAR + rb"+)*)?))[ \t]*"
)

# The same field-line grammar for a whole header block in one findall: a match starts
# at a CRLF and, when the line is valid, ends right before the next CRLF (or the end of
# the head), so it covers exactly one line. A line that is not valid matches the empty
# alternative instead (just its CRLF; groups b"", which no valid line gives, since a
# name is never empty), so every CRLF starts exactly one match (neither name nor value
# can hold a CR or LF) and the block is valid iff no match is (b"", b""): no separate
# count of the CRLFs is needed. The value group backtracks from the end of the line to
# its last field-vchar, so trailing OWS is left out without a second pass; once it has
# matched, it is atomic ("?+"), which keeps a failing line linear. Names with "_" don't
# match here: the per-line path drops them.
_TOKEN_NO_UNDERSCORE: Final = rb"[!#$%&'*+.^`|~0-9A-Za-z-]+"
FIELD_LINES: Final = re.compile(
    rb"\r\n(?:(" + _TOKEN_NO_UNDERSCORE + rb"):[ \t]*+((?:[\t\x20-\x7e\x80-\xff]*" + _FVCHAR
    + rb")?+)[ \t]*+(?=\r\n|\Z)|)"
)
NOT_A_FIELD_LINE: Final = (b"", b"")  # what FIELD_LINES gives for a line that is not valid

# RFC 9110 §8.6: Content-Length = 1*DIGIT; a list of identical values is tolerated.
CONTENT_LENGTH: Final = re.compile(rb"[0-9]{1,18}(?>(?:[ \t]*,[ \t]*[0-9]{1,18})*)")
DIGITS: Final = re.compile(rb"[0-9]+")

# RFC 9110 §5.6.1 + §10.1.4: #transfer-coding; empty list elements are ignored.
# Transfer parameters are not accepted (chunked has none; anything else is 501 anyway).
TOKEN_LIST: Final = re.compile(
    rb"[ \t,]*+(?>(?:" + _TOKEN + rb"(?:(?:[ \t]*,)+[ \t]*" + _TOKEN + rb")*)?)[ \t,]*+"
)
TOKEN: Final = re.compile(_TOKEN)

# RFC 9112 §7.1 / §7.1.1: chunk-size [ chunk-ext ], where
#   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-val = token / quoted-string
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?>(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*)"
)

# RFC 9110 §7.2 / RFC 3986 §3.2.2: Host = uri-host [ ":" port ].
# uri-host is an IP-literal or a reg-name (which also covers IPv4address). No
# userinfo ("@"), no path ("/"), no whitespace.
# reg-name = *( unreserved / pct-encoded / sub-delims ), here non-empty; written so that
# sre runs through each class in one loop and can never backtrack exponentially.
_REG_CHAR: Final = rb"[A-Za-z0-9\-._~!$&'()*+,;=]"
_PCT: Final = rb"%[0-9A-Fa-f]{2}"
_REG_NAME: Final = (
    rb"(?:" + _REG_CHAR + rb"|" + _PCT + rb")" + _REG_CHAR + rb"*(?:" + _PCT + _REG_CHAR + rb"*)*"
)
# The shape of an IP-literal; `valid_host()` then checks the address itself (IPv6 only:
# RFC 3986 IPvFuture and RFC 6874 zone IDs are refused).
_IP_LITERAL: Final = rb"\[[0-9A-Fa-f:.]+\]"
# A TCP port, 0-65535 (RFC 3986 allows an empty port after the colon).
_PORT: Final = (rb"(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
                rb"|6553[0-5])")
HOST: Final = re.compile(rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb")(?::" + _PORT + rb")?")
# RFC 9112 §3.2.3: authority-form = uri-host ":" port (port required).
AUTHORITY_FORM: Final = re.compile(
    rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb"):(?=[0-9])" + _PORT)
# RFC 9112 §3.2.2: absolute-form = absolute-URI; we need scheme "://" authority and
# then either nothing, a path or a query (a fragment is not part of a target). Only the
# http and https schemes (case-insensitive, RFC 3986 §3.1): a server must not let
# `foo://evil/` name the host it serves (RFC 9110 §7.2, §4.2).
ABSOLUTE_FORM: Final = re.compile(rb"(?i:https?)://([^/?#]*+)((?:[/?][^#]*+)?)")


def valid_host(host: bytes) -> bool:
    """Host syntax (HOST), and a real IPv6 address inside an IP-literal."""
    if HOST.fullmatch(host) is None:
        return False
    if host.startswith(b"["):
        import ipaddress

        try:
            ipaddress.IPv6Address(host[1:host.index(b"]")].decode("ascii"))
        except ValueError:
            return False
    return True

# Header names the head parser looks at (everything else is passed through untouched).
SPECIAL_FIELDS: Final = frozenset(
    ("host", "content-length", "transfer-encoding", "connection", "expect", "content-type")
)

# Field names as clients usually spell them, and in lower case, mapped to the lowercased
# text: one dict hit instead of lower() + decode() for most fields of a request. Only a
# shortcut for names FIELD_LINES already matched; any other name takes the long way.
_COMMON_FIELDS: Final = (
    "Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Connection",
    "Content-Length", "Content-Type", "Cookie", "Referer", "Origin", "Authorization",
    "Cache-Control", "Pragma", "Upgrade-Insecure-Requests", "If-None-Match",
    "If-Modified-Since", "Priority", "DNT", "TE", "Upgrade", "Range", "Expect",
    "Transfer-Encoding", "Sec-CH-UA", "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform",
    "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User",
    "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP",
    "X-Request-ID", "Forwarded", "Via",
)
FIELD_NAMES: Final = {
    spelling.encode("ascii"): name.lower()
    for name in _COMMON_FIELDS
    for spelling in (name, name.lower())
}

# RFC 9110 §6.5.1: fields that must not be taken from trailers (framing, routing,
# request modifiers, authentication, payload processing, connection control).
FORBIDDEN_TRAILERS: Final = frozenset(
    (
        "transfer-encoding", "content-length", "host", "authorization",
        "proxy-authorization", "www-authenticate", "proxy-authenticate", "cookie",
        "set-cookie", "content-type", "content-encoding", "content-range", "trailer",
        "te", "expect", "max-forwards", "cache-control", "range", "if-match",
        "if-none-match", "if-modified-since", "if-unmodified-since", "if-range",
        "connection", "keep-alive", "proxy-connection", "upgrade", "age", "date",
        "expires", "location", "retry-after", "vary",
    )
)


def request_line_error(line: bytes) -> str:
    """Why a request line failed REQUEST_LINE (each outcome is a 400)."""
    if b"\n" in line:  # defensive: the line splitters report a bare LF themselves
        return "bare LF in request line"
    if b"\r" in line:
        return "bare CR in request line"
    parts = line.split(b" ")
    if len(parts) != 3:
        return "malformed request line"
    method, target, version = parts
    if TOKEN.fullmatch(method) is None:
        return "invalid method"
    if not target or any(b < 0x21 or b == 0x7F for b in target):
        return "invalid request-target"
    return "invalid HTTP version"


def field_line_error(line: bytes, what: str) -> str:
    """Why a header/trailer line failed FIELD_LINE (each outcome is a 400)."""
    if line[:1] in (b" ", b"\t"):
        # RFC 9112 §5.2 (obs-fold) and §2.2 (whitespace after the start-line).
        return f"obs-fold or leading whitespace in {what} line"
    name, colon, _ = line.partition(b":")
    if not colon:
        return f"missing colon in {what} line"
    if name[-1:] in (b" ", b"\t"):
        return f"whitespace before colon in {what} line"  # RFC 9112 §5.1
    if TOKEN.fullmatch(name) is None:
        return f"invalid {what} name"
    return f"invalid {what} value"


# -- the request line -----------------------------------------------------------------

# method, target, path, query, version, authority (absolute-form only)
RequestLine = tuple[str, str, str, str, tuple[int, int], str | None]
V11: Final = (1, 1)
V10: Final = (1, 0)
SLASH: Final = 47


def request_line(method: bytes, target: bytes, version: bytes) -> RequestLine:
    """The meaning of a request line that matched REQUEST_LINE (RFC 9112 §3)."""
    if version == b"HTTP/1.1":
        v = V11
    elif version == b"HTTP/1.0":
        v = V10
    else:
        raise ProtocolError(505, "HTTP version not supported")
    # RFC 9112 §3.2: the four forms, each only where it is allowed.
    if target[0] == SLASH:
        if method == b"CONNECT":
            raise ProtocolError(400, "CONNECT requires an authority-form target")
        text = target.decode("latin-1")
        path, _, query = text.partition("?")
        return method.decode("latin-1"), text, path, query, v, None
    if method == b"CONNECT":
        if AUTHORITY_FORM.fullmatch(target) is None:
            raise ProtocolError(400, "invalid authority-form target")
        return "CONNECT", target.decode("latin-1"), "", "", v, None
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError(400, "asterisk-form target only allowed with OPTIONS")
        return "OPTIONS", "*", "*", "", v, None
    a = ABSOLUTE_FORM.fullmatch(target)
    # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
    if a is None or not valid_host(a.group(1)):
        raise ProtocolError(400, "invalid request-target")
    path, _, query = a.group(2).decode("latin-1").partition("?")
    return (
        method.decode("latin-1"), target.decode("latin-1"), path or "/", query, v,
        a.group(1).decode("latin-1"),
    )
