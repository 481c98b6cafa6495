"""Apps for the observability tests (status, metrics, memory), run in real workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
_leaked: list[bytes] = []

# Imported in the master with --preload: every worker shares these pages copy-on-write, so
# each one's PSS holds only a share of them while its RSS holds them all.
SHARED = b"\x01" * (int(os.environ.get("OBS_SHARED_MIB", "0")) * 1024 * 1024)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.startswith("/code/"):  # /code/404 answers 404
        code = int(path[len("/code/"):])
        start_response(f"{code} Whatever", [("Content-Length", "0")])
        return [b""]
    if path == "/leak":  # keeps 2 MiB per request, touched so that it counts in PSS
        _leaked.append(b"\x01" * (2 * 1024 * 1024))
    if path == "/pid" or path == "/leak":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
