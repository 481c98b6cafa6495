"""The pieces of a response head, validated once and cached: status lines, the app's
header lines, the Date line.

Rules:
- Nothing from the app reaches the wire unchecked: a status or header with a CR, LF, NUL
  or other control character, a header name that is not a token, text that is not
  latin-1 (PEP 3333) or a Content-Length that is not digits is an AppError (the
  connection answers 500 and logs it), never an injected header (CVE-2018-1000164,
  CVE-2020-7695). Only what passed is cached.
- Apps answer with a handful of distinct heads, so a whole head (status and header list)
  seen before costs one dict lookup; a new one is checked header by header, each header
  tuple seen before costing one lookup. Every cache is keyed by what the app chose and
  bounded (cleared when full), since values such as Content-Length may vary freely.
- A 1xx status from the app is an AppError too: it is interim (RFC 9110 §15.2), and sent
  as the answer it would leave the client waiting for one that never comes.
- Hop-by-hop fields from the app are dropped: framing and persistence are the server's.
  Content-Length is never sent in a 1xx or 204 response (RFC 9110 §8.6), and two
  different values are an error (a client or proxy could pick either: a desync).
"""

from __future__ import annotations

import re
import time
from typing import Any, NamedTuple

from . import __version__

SERVER = f"prefork/{__version__}".encode()
SERVER_LINE = b"Server: " + SERVER + b"\r\n"
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
))
_STATUS = re.compile(r"[1-9][0-9]{2} [^\x00-\x08\x0a-\x1f\x7f]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*\Z")
_DIGITS = re.compile(r"[0-9]{1,18}\Z")

# What a header means to the head beyond its wire line. OWN_*: the app sent a field the
# server would otherwise add itself (flags, ORed into Head.own).
OWN_SERVER, OWN_DATE, _HOP, _LENGTH = 1, 2, 4, 8
_KINDS: dict[str, int] = {
    "server": OWN_SERVER, "date": OWN_DATE, "content-length": _LENGTH,
    **{name: _HOP for name in HOP_BY_HOP},
}
CACHE_MAX = 1024


class AppError(Exception):
    """The app broke the WSGI contract (bad status, header, or call order)."""


class Head(NamedTuple):
    """A checked status and header list, as the response head needs them."""

    code: int
    status_line: bytes  # b"HTTP/1.1 <status>\r\n"
    lines: bytes  # the app's header lines, in order, hop-by-hop ones dropped
    own: int  # OWN_SERVER | OWN_DATE
    length: int | None  # the app's Content-Length
    no_body: bool  # 1xx, 204, 304: no body whatever the method (RFC 9110 §6.4.1)


# (name, value) -> (wire line, kind, Content-Length value or 0)
_header_cache: dict[tuple[str, str], tuple[bytes, int, int]] = {}
# status -> (code, status line)
_status_cache: dict[str, tuple[int, bytes]] = {}
# (status, header tuple) -> Head
_head_cache: dict[tuple[str, tuple[Any, ...]], Head] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[key] = value


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
    _remember(_header_cache, item, checked)
    return checked


def _checked_status(status: Any) -> tuple[int, bytes]:
    if not isinstance(status, str) or not _STATUS.match(status):
        raise AppError(f"invalid status {status!r}")
    if status[0] == "1":
        # A 1xx is interim (RFC 9110 §15.2): sent as the answer, it would leave the client
        # waiting for a final response that never comes. Interim responses are the
        # server's (100 Continue, body.py), not the app's.
        raise AppError(f"status {status!r} is interim (1xx): the app must give a final one")
    try:
        checked = (int(status[:3]), b"HTTP/1.1 %s\r\n" % status.encode("latin-1"))
    except UnicodeEncodeError:
        raise AppError(f"status {status!r} is not latin-1 (PEP 3333)") from None
    _remember(_status_cache, status, checked)
    return checked


def _build(status: Any, headers: tuple[Any, ...]) -> Head:
    try:
        code, status_line = _status_cache[status]
    except (KeyError, TypeError):  # TypeError: unhashable, so not a str
        code, status_line = _checked_status(status)
    clean: list[bytes] = []
    own = 0
    length = None
    for item in headers:
        try:
            line, kind, n = _header_cache[item]
        except (KeyError, TypeError):  # TypeError: unhashable, so not a str pair
            line, kind, n = _checked_header(item)
        if kind:
            if kind == _HOP:
                continue
            if kind == _LENGTH:
                if code < 200 or code == 204:
                    continue
                if length is not None:
                    if n != length:
                        raise AppError(f"conflicting Content-Length values in {headers!r}")
                    continue
                length = n
            else:
                own |= kind
        clean.append(line)
    return Head(code, status_line, b"".join(clean), own, length,
                code < 200 or code == 204 or code == 304)


def head(status: Any, headers: Any) -> Head:
    """The checked head for start_response(status, headers); raises AppError."""
    try:
        items = tuple(headers)
    except TypeError:
        raise AppError(f"headers must be a list, not {type(headers).__name__}") from None
    key = (status, items)
    try:
        return _head_cache[key]
    except KeyError:
        checked = _build(status, items)
        _remember(_head_cache, key, checked)
        return checked
    except TypeError:  # something unhashable in there: it cannot be valid
        return _build(status, items)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")
# [second, value, b"Date: <value>\r\n"], updated in place once per second: a response
# head checks DATE[0] against the clock and calls date_line() only when it moved on.
DATE: list[Any] = [0, b"", b""]
_time = time.time


def _date(now: int) -> list[Any]:
    t = time.gmtime(now)
    value = b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday].encode(), t.tm_mday, _MONTHS[t.tm_mon].encode(), t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec)
    DATE[:] = (now, value, b"Date: " + value + b"\r\n")
    return DATE


def http_date() -> bytes:
    """The Date header value (IMF-fixdate, RFC 9110 §5.6.7), formatted once per second.

    Written out here rather than with email.utils.formatdate: importing the email package
    costs start-up time, and strftime would follow the locale."""
    now = int(_time())
    return (DATE if DATE[0] == now else _date(now))[1]


def date_line() -> bytes:
    """b"Date: <http_date()>\r\n"."""
    now = int(_time())
    return (DATE if DATE[0] == now else _date(now))[2]
