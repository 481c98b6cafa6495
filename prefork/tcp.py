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

TcpHandler = Callable[[socket.socket, Any], None]


def make_handler(handle: TcpHandler, on_request: Callable[[], None]
                 ) -> Callable[[socket.socket, Any, float], None]:
    def accepted(sock: socket.socket, addr: Any, now: float) -> None:
        on_request()
        sock.setblocking(True)
        try:
            handle(sock, addr)
        except Exception:
            logger.error("handler %s failed for %s:\n%s", getattr(handle, "__name__", handle),
                         addr, traceback.format_exc().rstrip())
        finally:
            sock.close()
        return None

    return accepted
