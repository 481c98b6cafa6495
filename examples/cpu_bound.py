"""A CPU-bound WSGI endpoint: why processes beat threads for Python handlers.

Each request runs a pure-Python loop (about 20 ms on one core). In CPython only one thread
runs Python code at a time (the GIL), so two threads in one process share one core, while two
worker processes use two:

    prefork examples.cpu_bound:app --workers 2 --threads 1 -b 127.0.0.1:8000   # 2 processes
    prefork examples.cpu_bound:app --workers 1 --threads 2 -b 127.0.0.1:8000   # 2 threads
    wrk -t2 -c4 -d6s --latency http://127.0.0.1:8000/

The README ("Processes or threads?") has the numbers measured on a 2-core machine. Threads
still earn their place for handlers that wait (a database, an HTTP API): waiting releases the
GIL. `/wait?ms=20` is such a handler, for comparison.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

WORK = int(os.environ.get("CPU_BOUND_WORK", "200000"))  # loop turns per request


def burn(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/wait":
        ms = int(environ.get("QUERY_STRING", "").partition("=")[2] or 20)
        time.sleep(ms / 1000)  # releases the GIL, like waiting on a socket
        body = f"waited {ms} ms in pid {os.getpid()}\n".encode()
    else:
        body = f"{burn(WORK)} from pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
