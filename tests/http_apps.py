"""The WSGI app test_http_e2e.py runs in real workers: one endpoint per HTTP behaviour.

- Every call is appended to the file named by $HTTP_APPS_RECORD (set with --env), so a
  test can prove a request never reached the app.
- Endpoints that must wait for the test do it by event (a marker file the test deletes),
  never by sleeping for a guessed time.
- /validated/... goes through wsgiref.validate.validator: a PEP 3333 violation by the
  server there is an AssertionError (a 500 and a traceback) or a WSGIWarning on stderr.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

StartResponse = Callable[..., Any]
TEXT = [("Content-Type", "text/plain")]


def record(environ: dict[str, Any], variable: str = "HTTP_APPS_RECORD") -> None:
    """Append "METHOD RAW_URI" to the file named by $variable, if set: proof that a
    request reached the app (one os.write with O_APPEND, so workers never interleave)."""
    path = os.environ.get(variable)
    if path:
        line = f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI')}\n".encode("latin-1")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [*TEXT, ("Content-Length", str(len(body)))])
    return [body]


def wait_deleted(marker: str) -> None:
    """Create `marker` (the test sees the app is running), wait until the test deletes it."""
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(marker + ".tmp", marker)
    deadline = time.monotonic() + 60
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.005)


def _stream(parts: int) -> Iterator[bytes]:
    for i in range(parts):
        yield f"part {i}\n".encode()


def _raise_after() -> Iterator[bytes]:
    yield b"first"
    raise RuntimeError("boom after the body started")


def _big(chunks: int) -> Iterator[bytes]:
    block = b"x" * 65536
    for _ in range(chunks):
        yield block


def _validated_inner(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/validated/echo":
        # The validator insists on read(size): one argument, always.
        body = b""
        while True:
            data = environ["wsgi.input"].read(8192)
            if not data:
                break
            body += data
        return _text(start_response, body)
    if path == "/validated/lines":
        stream = environ["wsgi.input"]
        lines = [stream.readline(), stream.readline(3), stream.readline(-1)]
        lines += list(stream) + stream.readlines()
        return _text(start_response, b"|".join(lines))
    if path == "/validated/stream":
        start_response("200 OK", TEXT)
        return _stream(3)
    return _text(start_response, b"validated")


validated = validator(_validated_inner)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    record(environ)
    path: str = environ["PATH_INFO"]
    query: str = environ["QUERY_STRING"]
    if path.startswith("/validated/"):
        return validated(environ, start_response)
    if path == "/pid":
        return _text(start_response, str(os.getpid()).encode())
    if path == "/echo":
        return _text(start_response, environ["wsgi.input"].read())
    if path == "/gate":
        wait_deleted(query)
        return _text(start_response, environ["wsgi.input"].read())
    if path == "/stream":
        start_response("200 OK", TEXT)
        return _stream(3)
    if path.startswith("/status/"):
        # 204/304 must go out without a body even when the app offers one.
        start_response(f"{path[8:]} Status", TEXT)
        return [b"must not be sent"] if query == "body" else []
    if path.startswith("/gen-status/"):
        start_response(f"{path[12:]} Status", TEXT)
        return iter([b"must not be sent"])
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(query, "rb"))
    if path == "/file-short":
        # The app promises more than the file holds: the client must see the connection
        # close after the short body, never a next response glued onto it.
        size = os.path.getsize(query)
        start_response("200 OK", [("Content-Length", str(size + 100))])
        return environ["wsgi.file_wrapper"](open(query, "rb"))
    if path == "/big":
        start_response("200 OK", TEXT)
        return _big(int(query))
    if path == "/write":
        # The legacy write() callable, then a list: one head, one body, in order.
        write = start_response("200 OK", TEXT)
        write(b"hello ")
        write(b"world")
        return [b"!"] if query == "tail" else []
    if path == "/write-then-file":
        # PEP 3333 allows write() before returning an iterable, a file_wrapper too: the
        # head is out already, so the file is the rest of a chunked body, not a response.
        write = start_response("200 OK", TEXT)
        write(b"pre:")
        return environ["wsgi.file_wrapper"](open(query, "rb"))
    if path.startswith("/interim/"):
        start_response(f"{path[9:]} Interim", TEXT)
        return [b"an interim status is not an answer"]
    if path == "/double-length":
        start_response("200 OK", [("Content-Length", "5"), ("Content-Length", "50")])
        return [b"hello"]
    if path == "/own-date":
        start_response("200 OK", [*TEXT, ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
                                  ("Server", "my-app")])
        return [b"dated"]
    if path == "/no-content-with-length":
        start_response("204 No Content", [("Content-Length", "0")])
        return []
    if path == "/inject":
        start_response("200 OK", [*TEXT, ("X-Ok", "a\r\nX-Injected: yes")])
        return [b"injected"]
    if path == "/raise-before":
        raise RuntimeError("boom before start_response")
    if path == "/raise-after":
        start_response("200 OK", TEXT)
        return _raise_after()
    if path == "/env" or path.startswith("/env/"):
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)})
        return _text(start_response, body.encode())
    return _text(start_response, b"hello")
