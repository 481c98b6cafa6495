"""--reload, for development: a worker restarts when a Python file it has loaded changes.

Rules:
- Runs in a worker, never in the master (the master imports no app code, so it has nothing
  to watch, and its loop stays free of file-system work).
- Polling, not inotify: the standard library has no inotify, and a stat() of each loaded
  module's file once a second costs a few milliseconds even for a Django project.
  `changed(now)` is called once per turn of the worker's loop (which turns at least once a
  second) and scans at most once per `interval`.
- A file counts as changed when its (mtime, size) moves after we first saw it, or, the
  first time we see it, when it was modified after this worker started (the edit that
  raced the worker's own import). On first sight a file dated more than SKEW into the
  future does not count, so a clock-skewed checkout cannot cause a restart loop; SKEW
  itself exists because file timestamps can run a few milliseconds ahead of time.time().
- On a change the worker stops gracefully (in-flight requests finish) and exits with
  `policy.RELOAD_EXIT`, which the master takes as a planned restart: respawn at once, no
  crash-loop backoff.
- An app that fails to import is replaced by `broken_app()`: a 500 page with the
  traceback, while the files named in the traceback (and the one with the syntax error)
  are watched too. Fixing the file restarts the worker with the new code.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .log import logger

INTERVAL = 1.0  # seconds between scans
SKEW = 1.0  # seconds a fresh file's mtime may lead time.time() (seen: 1.5 ms on ext4)


def module_files() -> Iterator[str]:
    """The source file of every loaded module that has one."""
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and os.path.isabs(path):
            yield path


class Reloader:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.started = time.time()
        self.next_scan = 0.0  # monotonic
        self.seen: dict[str, tuple[float, int]] = {}  # path -> (mtime, size)
        self.extra: set[str] = set()  # files to watch that no loaded module names
        self.restart = False  # a change was seen: the worker exits with RELOAD_EXIT

    def changed(self, now: float) -> bool:
        """Worker loop, once per turn: True once a watched file has changed."""
        if self.restart:
            return True
        if now < self.next_scan:
            return False
        self.next_scan = now + self.interval
        path = self._scan([*module_files(), *self.extra])
        if path is not None:
            logger.info("reload: %s changed; restarting this worker", path)
            self.restart = True
        return self.restart

    def _scan(self, paths: Iterable[str]) -> str | None:
        wall = time.time()
        for path in paths:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime, st.st_size)
            except OSError:
                stamp = (0.0, -1)  # deleted (or not there yet): its return will count
            seen = self.seen.get(path)
            self.seen[path] = stamp
            if seen is None:
                if self.started < stamp[0] <= wall + SKEW:
                    return path
            elif stamp != seen:
                return path
        return None

    def broken_app(self, exc: BaseException, protocol: str) -> Callable[..., Any]:
        """Stand-in for an app that failed to import: shows the error, watches its files."""
        if isinstance(exc, SyntaxError) and exc.filename:
            self.extra.add(os.path.abspath(exc.filename))
        for frame in traceback.extract_tb(exc.__traceback__):
            if os.path.isabs(frame.filename):
                self.extra.add(frame.filename)
        text = "".join(traceback.format_exception(exc))
        body = (f"prefork --reload: the app failed to import; fix the file and this page "
                f"will serve the new code.\n\n{text}").encode("utf-8", "replace")
        if protocol == "tcp":
            return lambda conn, addr: None  # the worker closes the connection

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            start_response("500 Internal Server Error",
                           [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
            return [body]

        return app
