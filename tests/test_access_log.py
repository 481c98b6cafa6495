"""The access log: every atom renders as it did before the fast path, lines are written
at once and none is lost at a graceful stop or across a USR1 reopen.

- In-process: log.access() against a reference copy of the implementation it replaced,
  over formats that exercise every atom and every way a format can fail.
- Real servers: a line is in the file (or on stdout) while the worker idles after the
  request, the lines of requests served during a graceful stop are all there after the
  exit, and requests from four threads across a rotate + USR1 each leave one whole line.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefork import log
from tests.harness import DEADLINE, wait_for
from tests.test_stop import stop_with_a_queue

COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
ATOMS = "h l u t r s b B f a m U q H L T D M p".split()


# -- the implementation before the fast path, as the oracle -------------------------------

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}


class _Atoms(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"


def reference_line(fmt: str, environ: dict[str, object], status: int, length: int,
                   duration: float) -> str:
    def get(key: str) -> str:
        return str(environ.get(key) or "-").translate(_CONTROL)

    query = environ.get("QUERY_STRING")
    request_line = (f"{environ.get('REQUEST_METHOD')} {environ.get('RAW_URI')} "
                    f"{environ.get('SERVER_PROTOCOL')}").translate(_CONTROL)
    atoms = _Atoms(
        h=get("REMOTE_ADDR"), l="-", u="-",
        t=time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
        r=request_line, s=str(status), b=str(length) if length else "-",
        B=str(length), f=get("HTTP_REFERER"), a=get("HTTP_USER_AGENT"),
        m=get("REQUEST_METHOD"), U=get("PATH_INFO"), q=str(query or "").translate(_CONTROL),
        H=get("SERVER_PROTOCOL"), L=f"{duration:.6f}", T=str(int(duration)),
        D=str(int(duration * 1_000_000)), M=str(int(duration * 1000)), p=f"<{os.getpid()}>",
    )
    try:
        return fmt % atoms
    except (KeyError, ValueError, TypeError) as exc:
        return f"bad access log format ({exc}): {request_line}"


# -- in-process ---------------------------------------------------------------------------


@pytest.fixture
def access_file(tmp_path: Path) -> Iterator[Path]:
    """log.setup() with an access log file; the loggers are put back as they were."""
    saved = [(lg, lg.handlers[:], lg.level, lg.disabled, lg.propagate)
             for lg in (log.logger, log.access_logger)]
    saved_handler = log._access_handler
    for lg, *_ in saved:
        lg.handlers.clear()  # (setup() closes what it finds: these are not ours to close)
    path = tmp_path / "access.log"
    log.setup(str(tmp_path / "error.log"), "info", str(path))
    try:
        yield path
    finally:
        for lg, handlers, level, disabled, propagate in saved:
            for h in lg.handlers:
                h.close()
                if isinstance(h, log.ReopenableFileHandler):
                    h.stream.close()  # (StreamHandler.close() leaves the stream open)
            lg.handlers[:] = handlers
            lg.level, lg.disabled, lg.propagate = level, disabled, propagate
        log._access_handler = saved_handler


class Text(str):
    def __str__(self) -> str:
        return "from __str__"


BASE = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/a b/c", "QUERY_STRING": "x=1&y=2",
    "RAW_URI": "/a%20b/c?x=1&y=2", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7",
    "REMOTE_PORT": "40000", "HTTP_HOST": "example.com", "HTTP_USER_AGENT": "curl/8.5.0",
    "HTTP_REFERER": "http://example.com/from",
}
ENVIRONS: list[dict[str, object]] = [
    BASE,
    {},  # every key missing
    {**BASE, "REMOTE_ADDR": "", "HTTP_REFERER": "", "QUERY_STRING": "", "HTTP_USER_AGENT": None},
    {**BASE, "HTTP_USER_AGENT": "c0\x00\x01\t\x1b[31m del\x7f c1\x80\x85\x9b\x9f end",
     "HTTP_REFERER": "line\nbreak\r", "PATH_INFO": "/p\x1bq", "RAW_URI": "/p\x1bq?\x9b",
     "QUERY_STRING": "\x9b", "REQUEST_METHOD": "G\x00T", "SERVER_PROTOCOL": "HTTP/1.1\x85"},
    # printable or not, but no control characters: left as they are
    {**BASE, "HTTP_USER_AGENT": "nbsp\xa0 ls\u2028 é 😀 lone\ud800", "PATH_INFO": "/é"},
    {**BASE, "REMOTE_ADDR": 0, "HTTP_USER_AGENT": 123, "HTTP_REFERER": b"b\x00",
     "PATH_INFO": Text("/sub"), "QUERY_STRING": Text("q\x1b")},
]
FORMATS = [
    COMBINED,
    *(f"%({atom})s" for atom in ATOMS),
    " ".join(f"%({atom})s" for atom in ATOMS) + " %(x)s %(foo bar)s %()s",
    "", "no atoms at all", "100%% %(s)s", "%%(h)s %(h)s", "tab\t%(h)s\nnewline %(a)s",
    "%(h)20s|%(a)-12s|%(s)05s|%(L).2s", "%(a).4s %(U).3s", "%(a)r %(f)a %(h)r",
    "%(s)d",  # a str where %d wants a number: the fallback line
    "%(h)s %(s)c", "%(h)s %", "%(h)", "%(h", "%(h)y", "%(h)*s", "%(h).*s",
    "%s", "%(h)s %s", "%s %(h)s", "%r", "%d", "%(a(b)c)s %(h)s", "%(a)ls %(h)hs",
]


def test_every_atom_and_format_renders_as_before(access_file: Path) -> None:
    calls = 0
    with open(access_file, "rb") as f:
        for fmt in FORMATS:
            for environ in ENVIRONS:
                for status, length, duration in ((200, 13, 0.000123), (404, 0, 0.0),
                                                 (500, 1 << 20, 123.4567891)):
                    before = reference_line(fmt, environ, status, length, duration)
                    log.access(fmt, environ, None, status, length, duration)
                    after = reference_line(fmt, environ, status, length, duration)
                    calls += 1
                    got = f.read()
                    # The file is UTF-8 with backslashreplace (a lone surrogate).
                    expected = {(line + "\n").encode("utf-8", "backslashreplace")
                                for line in (before, after)}  # two if a second ticked
                    assert got in expected, (fmt, environ, got, expected)
    assert calls == len(FORMATS) * len(ENVIRONS) * 3


def random_formats(n: int) -> list[str]:
    """Formats strung from pieces that each path of the compiler treats differently
    (plain %(x)s, flags and widths, bare conversions, braces, quotes, backslashes)."""
    pieces = [*(f"%({atom})s" for atom in ATOMS), "%(x)s", "%()s", "%(h)-6s", "%(s)03d",
              "%(B)d", "%(a).2s", "%(r)r", "%%", "%", "%s", "%(", ")", "(", "{", "}", "{h}",
              "\\", "'", '"', " ", "-", "\t", "\x1b", "\n", "é", "%(h)*s", "s", "d"]
    rng = random.Random(20261125)  # fixed: a failure must reproduce
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(n)]


def test_random_formats_render_as_before(access_file: Path) -> None:
    with open(access_file, "rb") as f:
        for fmt in random_formats(400):
            for environ in (BASE, ENVIRONS[3]):
                before = reference_line(fmt, environ, 200, 13, 0.25)
                log.access(fmt, environ, None, 200, 13, 0.25)
                after = reference_line(fmt, environ, 200, 13, 0.25)
                got = f.read()
                expected = {(line + "\n").encode("utf-8", "backslashreplace")
                            for line in (before, after)}
                assert got in expected, (fmt, got, expected)


def test_the_compiled_format_is_cached_per_format(access_file: Path) -> None:
    log.access(COMBINED, BASE, None, 200, 1, 0.1)
    first = log._renders[COMBINED]
    log.access(COMBINED, BASE, None, 200, 1, 0.1)
    assert log._renders[COMBINED] is first
    assert len(access_file.read_text().splitlines()) == 2


def test_a_reconfigured_access_logger_is_honoured(access_file: Path) -> None:
    """An app that adds a handler or disables the logger (dictConfig does) sees the same
    effect as with logging's own path."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    extra = Collect()
    log.access_logger.addHandler(extra)
    try:
        log.access("%(s)s %(h)s", BASE, None, 201, 0, 0.0)
    finally:
        log.access_logger.removeHandler(extra)
    assert seen == ["201 10.0.0.7"]
    assert access_file.read_text() == "201 10.0.0.7\n"
    log.access_logger.disabled = True
    log.access("%(s)s", BASE, None, 202, 0, 0.0)
    log.access_logger.disabled = False
    log.access("%(s)s", BASE, None, 203, 0, 0.0)
    assert access_file.read_text() == "201 10.0.0.7\n203\n"


def test_a_failed_write_is_reported_as_logging_reports_it(
        access_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handler = log._access_handler
    assert isinstance(handler, log.ReopenableFileHandler)
    handler.stream.close()  # the write fails: the request must go on, stderr says why
    log.access("%(s)s", BASE, None, 500, 0, 0.0)
    assert "--- Logging error ---" in capsys.readouterr().err
    handler.reopen()  # (as USR1 would)
    log.access("%(s)s", BASE, None, 200, 0, 0.0)
    assert access_file.read_text() == "200\n"


def test_a_forked_child_logs_its_own_pid(access_file: Path) -> None:
    log.access("%(p)s", BASE, None, 200, 0, 0.0)  # the parent's pid is cached now
    pid = os.fork()
    if pid == 0:
        try:
            log.access("%(p)s", BASE, None, 200, 0, 0.0)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert access_file.read_text().splitlines() == [f"<{os.getpid()}>", f"<{pid}>"]


# -- real servers -------------------------------------------------------------------------


def marker() -> str:
    return uuid.uuid4().hex[:12]


def lines_with(path: Path, needle: str) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [ln for ln in text.splitlines() if needle in ln]


def test_every_atom_from_a_real_worker(servers, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    fmt = " | ".join(f"{atom}=%({atom})s" for atom in ATOMS)
    server = servers("tests.apps:app", "--access-logfile", str(access),
                     "--access-log-format", fmt, workers=1)
    server.wait_ready()
    mark = marker()
    started = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE)
    try:
        conn.request("GET", f"/pid?m={mark}", headers={"User-Agent": "ua\tx\x85",
                                                       "Referer": "/r"})
        resp = conn.getresponse()
        pid = resp.read().decode()
    finally:
        conn.close()
    # While the worker idles: the line must already be in the file.
    (line,) = wait_for(lambda: lines_with(access, mark), what="the access log line")
    got = dict(part.split("=", 1) for part in line.split(" | "))
    stamp = time.strptime(got.pop("t"), "[%d/%b/%Y:%H:%M:%S %z]")
    assert started - 1 <= time.mktime(stamp) <= time.time() + 1
    duration = float(got.pop("L"))
    assert 0 <= duration < DEADLINE
    assert got.pop("T") == str(int(duration))
    assert abs(int(got.pop("D")) - duration * 1e6) <= 1 and int(got.pop("M")) >= 0
    assert got == {
        "h": "127.0.0.1", "l": "-", "u": "-", "r": f"GET /pid?m={mark} HTTP/1.1",
        "s": "200", "b": str(len(pid)), "B": str(len(pid)), "f": "/r",
        "a": "ua\\x09x\\x85", "m": "GET", "U": "/pid", "q": f"m={mark}", "H": "HTTP/1.1",
        "p": f"<{pid}>",
    }


def test_a_bad_format_logs_the_fallback_line(servers, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    server = servers("tests.apps:app", "--access-logfile", str(access),
                     "--access-log-format", "%(h)s %(s)d", workers=1)
    server.wait_ready()
    mark = marker()
    assert server.request(f"/pid?{mark}")[0] == 200
    (line,) = wait_for(lambda: lines_with(access, mark), what="the fallback line")
    assert line == ("bad access log format (%d format: a real number is required, not str): "
                    f"GET /pid?{mark} HTTP/1.1")


def test_dash_writes_each_line_to_stdout_at_once(servers) -> None:
    # PYTHONUNBUFFERED empty counts as unset: stdout, a file here, is then block-buffered
    # and only a flush per line puts the line there now.
    server = servers("tests.apps:app", "--access-logfile", "-",
                     "--access-log-format", "%(s)s %(r)s", workers=1,
                     env={"PYTHONUNBUFFERED": ""})
    server.wait_ready()
    mark = marker()
    assert server.request(f"/pid?{mark}")[0] == 200
    wait_for(lambda: f"200 GET /pid?{mark} HTTP/1.1" in server.stdout().splitlines(),
             what="the access log line on stdout")


def test_lines_of_requests_served_during_a_graceful_stop_are_all_written(
        servers, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    server = servers("tests.apps:app", "--access-logfile", str(access),
                     "--access-log-format", '"%(r)s" %(s)s', workers=1)
    server.wait_ready()
    mark = marker()
    held = tmp_path / f"held-{mark}"
    for response in stop_with_a_queue(server, held, [f"/pid?{mark}-{i}" for i in range(20)]):
        assert b"Connection: close" in response  # served after the worker had the TERM
    assert server.wait_exit() == 0
    expected = [*(f'"GET /pid?{mark}-{i} HTTP/1.1" 200' for i in range(20)),
                f'"GET /hold?{held} HTTP/1.1" 200']
    assert sorted(lines_with(access, mark)) == sorted(expected)


def test_no_line_is_lost_or_torn_across_usr1_with_threads(servers, tmp_path: Path) -> None:
    """Four request threads write while the worker reopens: each request leaves exactly
    one whole line, in the rotated file or in the new one."""
    access = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    server = servers("tests.apps:app", "--access-logfile", str(access), "--threads", "4",
                     "--access-log-format", '%(p)s "%(r)s" %(s)s %(b)s', workers=1)
    server.wait_ready()
    mark = marker()
    sent: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE)
        i = 0
        try:
            while not stop.is_set():
                path = f"/pid?{mark}-{n}-{i}"
                i += 1
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                with lock:
                    (sent if resp.status == 200 else failures).append(path)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(lines_with(access, mark)) >= 50, what="lines before the rotation")
        access.rename(rotated)
        server.kill(signal.SIGUSR1)
        # The master creates the new file; a line of ours in it means the worker reopened.
        wait_for(lambda: lines_with(access, mark), what="a line in the reopened file")
        settled = len(sent)
        wait_for(lambda: len(sent) >= settled + 50, what="more requests after the reopen")
    finally:
        stop.set()
        for t in threads:
            t.join(DEADLINE)
    assert not failures, failures[:5]

    def logged() -> list[str] | None:
        lines = lines_with(rotated, mark) + lines_with(access, mark)
        return lines if len(lines) >= len(sent) else None

    lines = wait_for(logged, what=f"{len(sent)} lines")
    line = re.compile(rf'<\d+> "GET (/pid\?{mark}-\d-\d+) HTTP/1\.1" 200 \d+')
    paths = []
    for ln in lines:
        m = line.fullmatch(ln)
        assert m, f"torn or mixed line: {ln!r}"
        paths.append(m[1])
    assert sorted(paths) == sorted(sent)  # none lost, none twice
    assert lines_with(rotated, mark) and lines_with(access, mark)
