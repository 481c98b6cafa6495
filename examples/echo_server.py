"""The classic echo server, with processes instead of threads.

The course note this project grew from (shared/seed-processes-vs-threads.md, in Portuguese)
takes a thread-per-connection echo server and rewrites it with processes. Its lesson:

- Threads share one address space: cheap to start and to share data, but they compete for
  the same objects, need locks, and in CPython only one of them runs Python at a time (the
  GIL), so they do not use a second core for Python code.
- Processes share nothing by default: no races on shared objects, a crash or a leak stays
  in one process, and the kernel schedules them on every core. The price is start-up time,
  memory, and explicit communication when they must talk.

A pre-fork server keeps the benefit and pays the price once: the master starts N processes
up front, each accepts connections from the same listening socket, and a process that dies
is replaced. Here the handler below owns one connection at a time in one worker.

Run it:
    prefork --protocol tcp examples.echo_server:handle --workers 4 --bind 127.0.0.1:9000
    # or: python examples/echo_server.py
and talk to it:
    printf 'hello\\n' | nc -q1 127.0.0.1 9000
"""

from __future__ import annotations

import os
import socket
from typing import Any


def handle(conn: socket.socket, addr: Any) -> None:
    """Echo every byte back until the client closes. One connection, one process."""
    conn.sendall(f"echo server, worker pid {os.getpid()}\n".encode())
    while True:
        data = conn.recv(4096)
        if not data:
            return
        conn.sendall(data)


if __name__ == "__main__":
    import prefork

    raise SystemExit(prefork.serve(handle, protocol="tcp", bind=["127.0.0.1:9000"], workers=4))
