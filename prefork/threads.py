"""Request threads (--threads N > 1): the main thread keeps the selector, a pool runs requests.

Rules:
- Only the worker's main thread touches the selector, the listeners and the `busy` table.
  A pool thread owns one connection from the moment a request head is complete until the
  connection waits for bytes again (or is closed); then it hands the connection back
  through `returned` and one byte on the worker's wake pipe.
- Idle keep-alive connections wait in the selector and cost no thread.
- Health: `stuck()` names the oldest request that has run past --timeout. The worker stops
  beating while one exists, so the master dumps every thread's stack and replaces the
  worker. (gunicorn's gthread worker keeps beating from its main loop and never notices.)
"""

from __future__ import annotations

import os
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .log import logger


class RequestThreads:
    def __init__(self, count: int, wake_fd: int) -> None:
        self.count = count
        self.executor = ThreadPoolExecutor(count, thread_name_prefix="request")
        self.busy: dict[Any, float] = {}  # connection -> monotonic start of its request
        self.returned: deque[Any] = deque()  # appended by pool threads, drained by main
        self.wake_fd = wake_fd

    @property
    def full(self) -> bool:
        return len(self.busy) >= self.count

    def dispatch(self, conn: Any, job: Callable[[], None], now: float) -> None:
        """Main thread: run `job` (which serves `conn`) in the pool."""
        self.busy[conn] = now
        self.executor.submit(self._run, conn, job)

    def _run(self, conn: Any, job: Callable[[], None]) -> None:
        """Pool thread."""
        try:
            job()
        except BaseException:
            logger.error("request thread failed:\n%s", traceback.format_exc().rstrip())
            conn.close()
        finally:
            self.returned.append(conn)
            try:
                os.write(self.wake_fd, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: the main loop is already due to wake

    def collect(self) -> list[Any]:
        """Main thread: the connections whose request finished since the last call."""
        done = []
        while self.returned:
            conn = self.returned.popleft()
            self.busy.pop(conn, None)
            done.append(conn)
        return done

    def stuck(self, now: float, timeout: float) -> float:
        """Seconds the oldest request has run, if past `timeout` (0 disables); else 0."""
        if not timeout or not self.busy:
            return 0.0
        age = now - min(self.busy.values())
        return age if age > timeout else 0.0
