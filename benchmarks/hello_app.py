"""The benchmark app: the same WSGI callable for prefork and gunicorn.

- any path except `/big`: a fixed 13-byte body, `Hello, world!` (no per-request work);
- `/big`: a fixed 1 MiB body, built once at import, returned as one bytes object.

Both carry Content-Length, so neither server has to chunk or close to delimit the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

HELLO = b"Hello, world!"
BIG = b"x" * (1 << 20)  # 1 MiB

_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
_BIG_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/big":
        start_response("200 OK", list(_BIG_HEADERS))
        return [BIG]
    start_response("200 OK", list(_HELLO_HEADERS))
    return [HELLO]
