"""Error log and access log: one line per event, with time, pid, role and level.

Rules:
- Log lines are `key=value` where they carry data, and name the syscall and object on
  failures (`bind(127.0.0.1:8000): address already in use`).
- `reopen()` (USR1) reopens every file we opened, for logrotate; '-' streams are left alone.
- Never called from a signal handler (logging takes locks).
"""

from __future__ import annotations

import binascii
import logging
import os
import re
import sys
import time
from collections.abc import Callable
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


def _handler(target: str, default: IO[str]) -> logging.StreamHandler[IO[str]]:
    if target == "-":
        return logging.StreamHandler(default)
    return ReopenableFileHandler(target)


def setup(errorlog: str, loglevel: str, accesslog: str | None) -> None:
    """Configure both loggers from settings (in the master; workers inherit the handlers)."""
    global _access_handler
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
    _access_handler = None
    if accesslog:
        access = _handler(accesslog, sys.stdout)
        access.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(access)
        _access_handler = access


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


# -- access log -------------------------------------------------------------------------------
#
# One line per request, so its cost is paid on every request. A format is compiled once per
# process into a function that computes only the atoms the format names, and the line goes
# straight to the handler's file: logging.Logger.info() ends in the same write, after a
# LogRecord, a caller lookup and a Formatter that together cost several times the line.
# Each line is written (and, on stdout, flushed) before access() returns, as before: none
# is held in the process, so `tail -f` sees it at once and no stop or USR1 can lose it.

# C0, DEL and C1: NEL (0x85) breaks lines for many readers, CSI (0x9b) drives terminals.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}


class _Atoms(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"


def _clean(value: object) -> str:
    """`value` as text with control characters escaped.

    isprintable() is False for every C0, DEL and C1 character (Unicode category Cc), so a
    printable text has none of them and translate() would return it unchanged; the check
    costs a fraction of the translate() it skips on almost every field."""
    text = value if type(value) is str else str(value)
    return text if text.isprintable() else text.translate(_CONTROL)


# The time atom changes once a second; localtime() and strftime() ran on every line.
_clock: tuple[int, str] = (-1, "")
# The second time.strftime() used: C time(), the kernel's second as of its last tick,
# which time.time() passes a few ms before. (Linux's constant; Python 3.11 lacks it.)
_REALTIME_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)


def _time_atom() -> str:
    global _clock
    second = int(time.clock_gettime(_REALTIME_COARSE))
    clock = _clock  # read once: a request thread may replace it meanwhile
    if clock[0] != second:
        clock = _clock = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]",
                                                time.localtime(second)))
    return clock[1]


_pid_atom: str | None = None


def _forget_pid() -> None:
    global _pid_atom
    _pid_atom = None


# A worker is a fork of the master (or of a --preload template): each process must cache
# its own pid, not its parent's.
os.register_at_fork(after_in_child=_forget_pid)


def _pid() -> str:
    global _pid_atom
    if _pid_atom is None:
        _pid_atom = f"<{os.getpid()}>"
    return _pid_atom


def _user(authorization: object) -> str:
    """%(u)s, as gunicorn gives it: the user name of HTTP Basic credentials (RFC 7617:
    base64 of "user:password"), or "-"."""
    if not isinstance(authorization, str) or authorization[:6].lower() != "basic ":
        return "-"
    try:
        credentials = binascii.a2b_base64(authorization[6:].strip(" \t"), strict_mode=True)
        user = credentials.decode("utf-8").partition(":")[0]
    except (ValueError, UnicodeDecodeError):  # (binascii.Error is a ValueError)
        return "-"
    return _clean(user) if user else "-"


def _request_line(environ: dict[str, object]) -> str:
    return _clean(f"{environ.get('REQUEST_METHOD')} {environ.get('RAW_URI')} "
                  f"{environ.get('SERVER_PROTOCOL')}")


# gunicorn's atoms, each as an expression over the compiled function's arguments, in the
# order the mapping always had them (a bare %s prints the whole mapping, so order shows).
_ATOM_CODE = {
    "h": '_clean(get("REMOTE_ADDR") or "-")',
    "l": '"-"',
    "u": '_user(get("HTTP_AUTHORIZATION"))',
    "t": "_time_atom()",
    "r": "_request_line(environ)",
    "s": "str(status)",
    "b": 'str(length) if length else "-"',
    "B": "str(length)",
    "f": '_clean(get("HTTP_REFERER") or "-")',
    "a": '_clean(get("HTTP_USER_AGENT") or "-")',
    "m": '_clean(get("REQUEST_METHOD") or "-")',
    "U": '_clean(get("PATH_INFO") or "-")',
    "q": '_clean(get("QUERY_STRING") or "")',
    "H": '_clean(get("SERVER_PROTOCOL") or "-")',
    "L": 'f"{duration:.6f}"',
    "T": "str(int(duration))",
    "D": "str(int(duration * 1_000_000))",
    "M": "str(int(duration * 1000))",
    "p": "_pid_atom or _pid()",
}

# A format whose every conversion is a plain `%(key)s` (and `%%`), gunicorn's default
# among them, is the same line as an f-string of the atoms: every atom is a str, which %s
# and {} both render as itself, and no conversion can fail. One BUILD_STRING then does
# what parsing the format and filling a mapping did.
_PLAIN = re.compile(r"(?:[^%]|%%|%\([^()]*\)s)*")
_PLAIN_PART = re.compile(r"(%%)|%\(([^()]*)\)s|([^%]+)")
# A format whose every conversion names its key (`%(s)5d`, `%(a).3s`) reads only the keys
# it names, so a mapping of just those renders the same line. Any other format (a bare
# %s prints the whole mapping, `*` takes a width from it, a key with parentheses) gets
# every atom in a mapping that answers "-" for other keys, exactly as before.
_NAMED_ONLY = re.compile(r"(?:[^%]|%%|%\([^()]*\)[#0 +\-]*\d*(?:\.\d*)?[hlL]?[a-zA-Z%])*")
_KEY = re.compile(r"%\(([^()]*)\)")

_Render = Callable[[dict[str, object], int, int, float], str]


def _compile(fmt: str) -> _Render:
    """fmt as a function of (environ, status, length, duration) that returns the line.

    Generated source, so that the atoms are computed inline: a call per atom, or a loop
    over them, cost as much as the atoms themselves. Keys and literal text enter the
    source only through repr(); a %-format only as a closure variable."""
    if _PLAIN.fullmatch(fmt):
        template, used = [], set()
        for percent, key, text in _PLAIN_PART.findall(fmt):
            if key in _ATOM_CODE:
                template.append(f"{{_{key}}}")
                used.add(key)
            else:
                literal = "%" if percent else text or "-"  # an unknown key reads "-"
                template.append(literal.replace("{", "{{").replace("}", "}}"))
        assignments = "".join(f"        _{k} = {code}\n"
                              for k, code in _ATOM_CODE.items() if k in used)
        body = f"{assignments}        return f{''.join(template)!r}\n"
    else:
        if _NAMED_ONLY.fullmatch(fmt):
            keys = set(_KEY.findall(fmt))  # (`%%(x)` adds x: one atom too many is harmless)
            entries = [(k, code) for k, code in _ATOM_CODE.items() if k in keys]
            entries += [(k, '"-"') for k in sorted(keys - _ATOM_CODE.keys())]
            mapping = "{%s}"
        else:
            entries = list(_ATOM_CODE.items())
            mapping = "_Atoms({%s})"
        atoms = mapping % ", ".join(f"{key!r}: {code}" for key, code in entries)
        body = ("        try:\n"
                f"            return fmt % {atoms}\n"
                "        except (KeyError, ValueError, TypeError) as exc:\n"
                '            return f"bad access log format ({exc}): {_request_line(environ)}"\n')
    source = ("def _make(fmt):\n"
              "    def render(environ, status, length, duration):\n"
              "        get = environ.get\n"
              f"{body}"
              "    return render\n")
    namespace: dict[str, Callable[[str], _Render]] = {}
    exec(compile(source, f"<access log format {fmt!r}>", "exec"), globals(), namespace)
    return namespace["_make"](fmt)


_renders: dict[str, _Render] = {}


def _compiled(fmt: str) -> _Render:
    render = _renders.get(fmt)
    if render is None:
        if len(_renders) >= 16:
            _renders.clear()  # formats come from settings: more than a few is a caller's bug
        render = _renders[fmt] = _compile(fmt)
    return render


# Set by setup(): the access logger's handler, written to directly while it is the only one.
_access_handler: logging.StreamHandler[IO[str]] | None = None


def access(fmt: str, environ: dict[str, object], req: object, status: int, length: int,
           duration: float) -> None:
    """One access-log line with gunicorn's atoms; control characters escaped.

    The line is in the file (or flushed to stdout) when this returns. Once an app has
    reconfigured the access logger (another handler, a filter), lines go through logging."""
    log = access_logger
    if not log.isEnabledFor(logging.INFO):
        return
    line = (_renders.get(fmt) or _compiled(fmt))(environ, status, length, duration)
    handler = _access_handler
    if (handler is None or len(log.handlers) != 1 or log.handlers[0] is not handler
            or log.filters or handler.filters):
        log.info(line)
        return
    # Taken as StreamHandler.emit() takes it: request threads (--threads) write at once,
    # and reopen() swaps the stream under it.
    lock = handler.lock
    assert lock is not None  # created by Handler.__init__
    lock.acquire()
    try:
        if type(handler) is ReopenableFileHandler:
            # Our own file: one write(2) of the encoded line, as the line-buffered
            # TextIOWrapper would do it after a copy through its buffers (nothing else
            # writes to this stream object, so nothing is pending in them).
            data = (line + "\n").encode("utf-8", "backslashreplace")
            fd = handler.stream.fileno()
            written = os.write(fd, data)
            while written < len(data):  # short (a full disk): the rest, or the error
                data = data[written:]
                written = os.write(fd, data)
        else:
            # stdout: through its own buffer, after whatever the app printed there.
            stream = handler.stream
            stream.write(line + "\n")
            stream.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None))
    finally:
        lock.release()
