"""Request threads (--threads N > 1): the main thread keeps the selector, a pool runs requests.

Rules:
- Only the worker's main thread touches the selector, the listeners and the `busy` table.
  A pool thread owns one connection from the moment a request head is complete until the
  connection waits for bytes again (or is closed); then it hands the connection back
  through `returned` and one byte on the worker's wake pipe.
- Idle keep-alive connections wait in the selector and cost no thread.
- Health: each pool thread stamps its request's progress: when the request starts and
  each time the client's socket lets it move on after a wait (a slow upload or a slow
  reader is progress; its idle timeout is the connection's business). `stuck()` names
  the request that has gone longest without progress, once past --timeout; the worker
  stops beating while one exists, so the master dumps every thread's stack and replaces
  the worker. A request waiting in the queue for a free thread is not running, and a
  connection's pipelined requests each get their own stamp. (gunicorn's gthread worker
  keeps beating from its main loop and never notices a stuck thread.)
"""

from __future__ import annotations

import itertools
import os
import threading
import time
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
        self.busy: set[Any] = set()  # connections a pool thread owns, or will
        self.returned: deque[Any] = deque()  # appended by pool threads, drained by main
        self.wake_fd = wake_fd
        # Per pool thread: the monotonic time its request last made progress, 0.0 while
        # it runs none. A list of fixed length, so the main thread can scan it while pool
        # threads store into it (one item store is atomic under the GIL).
        self.progress = [0.0] * count
        self._local = threading.local()
        self._slots = itertools.count()  # next() is atomic under the GIL

    @property
    def full(self) -> bool:
        return len(self.busy) >= self.count

    def dispatch(self, conn: Any, job: Callable[[], None]) -> None:
        """Main thread: run `job` (which serves `conn`) in the pool."""
        self.busy.add(conn)
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

    def _slot(self) -> int:
        slot: int | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = next(self._slots)  # at most `count` pool threads
        return slot

    def touch(self) -> None:
        """Pool thread: the request it runs started, or made progress, now."""
        self.progress[self._slot()] = time.monotonic()

    def idle(self) -> None:
        """Pool thread: its request is over."""
        self.progress[self._slot()] = 0.0

    def collect(self) -> list[Any]:
        """Main thread: the connections whose request finished since the last call."""
        done = []
        while self.returned:
            conn = self.returned.popleft()
            self.busy.discard(conn)
            done.append(conn)
        return done

    def stuck(self, now: float, timeout: float) -> float:
        """Seconds the request longest without progress has gone so, if past `timeout`
        (0 disables); else 0."""
        if not timeout:
            return 0.0
        stamps = [stamp for stamp in self.progress if stamp]
        if not stamps:
            return 0.0
        age = now - min(stamps)
        return age if age > timeout else 0.0
