"""WSGI apps and TCP handlers the behaviour tests run in real worker processes."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]


def _text(start_response: StartResponse, body: str, status: str = "200 OK") -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def spin_forever() -> None:
    """A pure-Python loop that never beats: the master must dump it and kill it."""
    while True:
        pass


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/sleep":
        seconds = float(environ["QUERY_STRING"] or "1")
        time.sleep(seconds)
        return _text(start_response, f"slept {seconds}")
    if path == "/hold":
        # Tell the test we are busy (the file appears), then hold the request until the
        # test deletes the file: synchronisation by event, in both directions.
        marker = environ["QUERY_STRING"]
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        deadline = time.monotonic() + 60
        while os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        return _text(start_response, f"released {os.getpid()}")
    if path == "/exit":
        os._exit(1)
    if path == "/getenv":
        return _text(start_response, os.environ.get(environ["QUERY_STRING"], "<unset>"))
    if path == "/spin":
        spin_forever()
    if path == "/c-sleep":
        # Blocks in C while holding the GIL: only faulthandler can see the stack.
        ctypes.CDLL(None).sleep(3600)
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/env":
        keys = ("REMOTE_ADDR", "wsgi.url_scheme", "SERVER_NAME", "SERVER_PORT", "PATH_INFO",
                "QUERY_STRING", "HTTP_X_FORWARDED_FOR", "SCRIPT_NAME")
        return _text(start_response, "\n".join(f"{k}={environ.get(k)}" for k in keys))
    if path == "/multithread":
        return _text(start_response, str(environ["wsgi.multithread"]))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {i}\n".encode() for i in range(3))
    return _text(start_response, f"hello from {os.getpid()}")


def echo(conn: Any, addr: Any) -> None:
    """TCP echo handler: echo until the client closes."""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)
