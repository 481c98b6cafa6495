"""The WSGI app test_wsgi_contract.py runs in real workers: one endpoint per contract rule.

- Every call is appended to the file named by $CONTRACT_APPS_RECORD (set with --env), so a
  test can prove a request never reached the app.
- What the app saw (environ values, what wsgi.input returned) comes back as JSON, with
  bytes as latin-1 text and Python values as repr() where the type matters
  ((1, 0) is not [1, 0], True is not 1).
- The bad heads in BAD carry SMUGGLED next to the bad byte: a test that finds SMUGGLED
  on the wire knows the server let the bad field through.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tests.http_apps import record, wait_deleted

StartResponse = Callable[..., Any]
TEXT = ("Content-Type", "text/plain")
SMUGGLED = "SMUGGLED"

# Hop-by-hop fields an app may try to set, in mixed case: the server owns framing and
# persistence, so every one must be dropped whatever its spelling.
HOP_BY_HOP = [
    ("connection", "upgrade"),
    ("KEEP-ALIVE", "timeout=99"),
    ("Transfer-Encoding", "gzip"),
    ("upgrade", "websocket"),
    ("Te", "trailers"),
    ("TRAILER", "X-Checksum"),
    ("Proxy-Authenticate", "Basic realm=hop"),
]

# case -> (status, headers): each one must be a 500, never bytes on the wire.
BAD: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "status-nul": (f"200 OK\x00{SMUGGLED}", []),
    "status-soh": (f"200 O\x01{SMUGGLED}", []),
    "status-del": (f"200 OK\x7f{SMUGGLED}", []),
    "status-not-latin-1": (f"200 \u20ac{SMUGGLED}", []),
    "value-nul": ("200 OK", [("X-Value", f"a\x00{SMUGGLED}")]),
    "value-soh": ("200 OK", [("X-Value", f"a\x01{SMUGGLED}")]),
    "value-del": ("200 OK", [("X-Value", f"a\x7f{SMUGGLED}")]),
    "value-not-latin-1": ("200 OK", [("X-Value", f"caf\u20ac{SMUGGLED}")]),
    "name-space": ("200 OK", [(f"X {SMUGGLED}", "v")]),
    "name-colon": ("200 OK", [(f"X:{SMUGGLED}", "v")]),
    "name-nul": ("200 OK", [(f"X\x00{SMUGGLED}", "v")]),
    "name-empty": ("200 OK", [("", SMUGGLED)]),
}


def _json(start_response: StartResponse, value: Any) -> list[bytes]:
    body = json.dumps(value).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [TEXT, ("Content-Length", str(len(body)))])
    return [body]


def _latin1(lines: list[bytes]) -> list[str]:
    return [line.decode("latin-1") for line in lines]


def _parts() -> Iterator[bytes]:
    yield b"streamed "
    yield b"body"


def _lines(mode: str, stream: Any) -> Any:
    """What wsgi.input returned, called the way `mode` says (each called first, not after
    iterating, which would leave nothing to read)."""
    if mode == "readlines":
        return _latin1(stream.readlines())
    if mode == "hint":
        # io.IOBase semantics: stop once the lines so far reach the hint.
        first = stream.readlines(5)
        return [_latin1(first), stream.read().decode("latin-1")]
    if mode == "readline-size":
        got = [stream.readline(2), stream.readline(2), stream.readline(100),
               stream.readline(0), stream.readline()]
        return [*_latin1(got), stream.read().decode("latin-1")]
    if mode == "first-2":
        # Answer with two bytes while the client still holds the rest of the body back.
        return _latin1([stream.readline(2)])
    raise ValueError(f"unknown mode {mode!r}")


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    record(environ, "CONTRACT_APPS_RECORD")
    path: str = environ["PATH_INFO"]
    if path == "/pid":
        return _text(start_response, str(os.getpid()).encode())
    if path == "/echo":
        return _text(start_response, environ["wsgi.input"].read())
    if path == "/hold":
        wait_deleted(environ["QUERY_STRING"])
        return _text(start_response, b"released")
    if path == "/hop":
        body = b"hop"
        start_response("200 OK", [TEXT, *HOP_BY_HOP, ("X-Kept", "yes"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/hop-stream":
        # No length: the server picks chunked framing, whatever Transfer-Encoding said.
        start_response("200 OK", [TEXT, *HOP_BY_HOP, ("X-Kept", "yes")])
        return _parts()
    if path == "/plain":
        start_response("200 OK", [TEXT])
        return [b"plain"]
    if path == "/plain-stream":
        start_response("200 OK", [TEXT])
        return _parts()
    if path == "/twice":
        start_response("200 OK", [TEXT])
        start_response("201 Created", [TEXT])  # no exc_info: a contract violation
        return [b"must not be sent"]
    if path == "/exc-after-write":
        write = start_response("200 OK", [TEXT])
        write(b"partial")  # the head is on the wire now
        try:
            raise ValueError("original exc_info error")
        except ValueError:
            # PEP 3333: the head is out, so start_response must re-raise this error.
            start_response("500 Internal Server Error", [TEXT], sys.exc_info())
        return [b"must not be sent"]
    if path == "/exc-before-send":
        start_response("200 OK", [TEXT, ("X-First", "first")])
        try:
            raise KeyError("replaced before sending")
        except KeyError:
            # Nothing was sent yet: this status and these headers replace the first.
            start_response("503 Service Unavailable", [TEXT, ("X-Second", "second")],
                           sys.exc_info())
        return [b"replaced"]
    if path.startswith("/bad/"):
        status, headers = BAD[path[len("/bad/"):]]
        start_response(status, [TEXT, *headers])
        return [b"must not be sent"]
    if path.startswith("/lines/"):
        return _json(start_response, _lines(path[len("/lines/"):], environ["wsgi.input"]))
    if path == "/environ":
        keys = ("wsgi.version", "wsgi.input_terminated", "wsgi.multiprocess",
                "wsgi.run_once")
        return _json(start_response, {k: repr(environ.get(k, "<missing>")) for k in keys})
    if path == "/remote":
        return _json(start_response, {"REMOTE_ADDR": environ["REMOTE_ADDR"],
                                      "wsgi.url_scheme": environ["wsgi.url_scheme"]})
    return _text(start_response, b"hello")
