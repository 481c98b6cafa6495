"""Error log and access log: one line per event, with time, pid, role and level.

Rules:
- Log lines are `key=value` where they carry data, and name the syscall and object on
  failures (`bind(127.0.0.1:8000): address already in use`).
- `reopen()` (USR1) reopens every file we opened, for logrotate; '-' streams are left alone.
- Never called from a signal handler (logging takes locks).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO

logger = logging.getLogger("prefork")
access_logger = logging.getLogger("prefork.access")

_role = "master"


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        return True


class ReopenableFileHandler(logging.StreamHandler):
    """A file handler whose file can be reopened under the same name (logrotate + USR1)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        super().__init__(self._open())

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)

    def reopen(self) -> None:
        """Switch to a fresh file at `path`; keep the old one if it cannot be opened
        (a worker that dropped privileges may not create files where root can)."""
        try:
            new = self._open()
        except OSError as exc:
            logger.warning("reopen(%s): %s; still writing to the old file", self.path,
                           exc.strerror)
            return
        self.acquire()
        try:
            old, self.stream = self.stream, new
            old.close()
        finally:
            self.release()


def _handler(target: str, default: IO[str]) -> logging.Handler:
    if target == "-":
        return logging.StreamHandler(default)
    return ReopenableFileHandler(target)


def setup(errorlog: str, loglevel: str, accesslog: str | None) -> None:
    """Configure both loggers from settings (in the master; workers inherit the handlers)."""
    for log in (logger, access_logger):
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
    handler = _handler(errorlog, sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [%(process)d] [%(role)s] %(levelname)s %(message)s"))
    handler.addFilter(_RoleFilter())
    logger.addHandler(handler)
    logger.setLevel(loglevel.upper())
    logger.propagate = False
    access_logger.propagate = False
    access_logger.setLevel(logging.INFO)
    access_logger.disabled = not accesslog
    if accesslog:
        access = _handler(accesslog, sys.stdout)
        access.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(access)


def set_role(role: str) -> None:
    global _role
    _role = role


def reopen() -> None:
    for log in (logger, access_logger):
        for h in log.handlers:
            if isinstance(h, ReopenableFileHandler):
                h.reopen()


def error_stream_fd() -> int:
    """The fd the error log writes to (for faulthandler and import tracebacks)."""
    for h in logger.handlers:
        if isinstance(h, logging.StreamHandler):
            return int(h.stream.fileno())
    return 2


def access_enabled() -> bool:
    return not access_logger.disabled


def errors_stream() -> IO[str]:
    """The error log's current stream."""
    for h in logger.handlers:
        if isinstance(h, logging.StreamHandler):
            return h.stream
    return sys.stderr


class ErrorsStream:
    """wsgi.errors (PEP 3333): writes go to the error log's stream of the moment, so one
    object serves every request and survives a reopen."""

    def write(self, text: str) -> int:
        return errors_stream().write(text)

    def writelines(self, lines: list[str]) -> None:
        errors_stream().writelines(lines)

    def flush(self) -> None:
        errors_stream().flush()


# C0, DEL and C1: NEL (0x85) breaks lines for many readers, CSI (0x9b) drives terminals.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}


class _Atoms(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"


def access(fmt: str, environ: dict[str, object], req: object, status: int, length: int,
           duration: float) -> None:
    """One access-log line with gunicorn's atoms; control characters escaped."""
    import time as _time

    def get(key: str) -> str:
        return str(environ.get(key) or "-").translate(_CONTROL)

    query = environ.get("QUERY_STRING")
    request_line = (f"{environ.get('REQUEST_METHOD')} {environ.get('RAW_URI')} "
                    f"{environ.get('SERVER_PROTOCOL')}").translate(_CONTROL)
    atoms = _Atoms(
        h=get("REMOTE_ADDR"), l="-", u="-",
        t=_time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
        r=request_line, s=str(status), b=str(length) if length else "-",
        B=str(length), f=get("HTTP_REFERER"), a=get("HTTP_USER_AGENT"),
        m=get("REQUEST_METHOD"), U=get("PATH_INFO"), q=str(query or "").translate(_CONTROL),
        H=get("SERVER_PROTOCOL"), L=f"{duration:.6f}", T=str(int(duration)),
        D=str(int(duration * 1_000_000)), M=str(int(duration * 1000)), p=f"<{os.getpid()}>",
    )
    try:
        line = fmt % atoms
    except (KeyError, ValueError, TypeError) as exc:
        line = f"bad access log format ({exc}): {request_line}"
    access_logger.info(line)
