"""Plain TCP handlers: `handle(conn, addr)` owns one accepted connection.

Runs in a worker. The handler gets a blocking socket and may keep it as long as it likes;
the worker beats before calling it, so a handler stuck past --timeout is diagnosed and
replaced like a stuck WSGI request. The socket is closed when the handler returns.
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import Callable
from typing import Any

from .log import logger
from .scoreboard import TCP

TcpHandler = Callable[[socket.socket, Any], None]


class TcpJob:
    """One accepted TCP connection handed to a request thread (--threads > 1).

    It only has to look like a connection to the worker while a thread owns it; once the
    handler returns it is closed and the worker forgets it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.deadline = 0.0
        self.busy = False
        self.closed = False

    def readable(self, now: float) -> bool:
        return not self.closed

    def expire(self) -> None:
        self.close()

    def idle(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


def make_handler(handle: TcpHandler, on_request: Callable[[str, str], None],
                 dispatch: Callable[[TcpJob, Callable[[], None]], None] | None = None,
                 on_end: Callable[[int], None] | None = None,
                 ) -> Callable[[socket.socket, Any, float], TcpJob | None]:
    def serve(sock: socket.socket, addr: Any) -> None:
        # The scoreboard shows a TCP connection as "TCP <peer>"; it ends with no status
        # (counted in the "tcp" class of prefork_requests_total).
        on_request("TCP", f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else "unix")
        sock.setblocking(True)
        try:
            handle(sock, addr)
        except Exception:
            logger.error("handler %s failed for %s:\n%s", getattr(handle, "__name__", handle),
                         addr, traceback.format_exc().rstrip())
        finally:
            if on_end is not None:
                on_end(TCP)

    def accepted(sock: socket.socket, addr: Any, now: float) -> TcpJob | None:
        job = TcpJob(sock)
        if dispatch is None:
            try:
                serve(sock, addr)
            finally:
                job.close()
            return None

        def run() -> None:
            try:
                serve(sock, addr)
            finally:
                job.close()

        dispatch(job, run)
        return job

    return accepted
