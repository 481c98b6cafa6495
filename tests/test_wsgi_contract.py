"""PEP 3333 and HTTP contract rules an audit found untested: the real server, raw sockets.

- One server (tests/contract_apps.py, one worker, no --forwarded-allow-ips) is shared by
  the module; a test that needs other flags starts its own with the `servers` fixture.
- The raw client (tests/raw_http.py) parses responses itself, so a dropped or extra
  field, a missing chunk terminator or a reset shows up as wrong bytes or an exception.
- Every socket has a timeout and every wait a deadline (harness.DEADLINE); nothing waits
  for a guessed duration. An error test names its request path uniquely so that its
  log line cannot be another test's.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import prefork
from tests.contract_apps import BAD, HOP_BY_HOP, SMUGGLED
from tests.harness import DEADLINE, Server, ipv6_loopback_port, run_cli, wait_for
from tests.raw_http import Client, Reply, Truncated
from tests.test_http_e2e import chunked, marker

LIMIT_BODY = 100_000  # --limit-request-body of the shared server

def request(path: str, method: str = "GET", headers: str = "", body: bytes = b"") -> bytes:
    """A request as bytes; `headers` are extra field lines, each ending in CRLF."""
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode("latin-1") + body


# -- the shared server ---------------------------------------------------------------------------


@dataclass
class Shared:
    server: Server
    record: Path

    def client(self) -> Client:
        return Client(("127.0.0.1", self.server.port))

    def get(self, path: str, headers: str = "") -> Reply:
        with self.client() as c:
            c.send(request(path, headers=headers))
            return c.response()

    def error_entry(self, path: str) -> str:
        """The error log entry (message and traceback) of the request for `path`."""
        self.server.wait_log(rf"ERROR error handling GET {re.escape(path)}:")
        log = self.server.log()
        start = log.index(f"error handling GET {path}:")
        # The entry ends where the next log line (it starts with its date) begins.
        end = re.compile(r"^\d{4}-\d\d-\d\d ", re.M).search(log, start)
        return log[start:end.start() if end else len(log)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("contract")
    record = tmp / "record.txt"
    record.touch()
    # No --forwarded-allow-ips and no --header-timeout: the defaults are under test too.
    server = Server(tmp, "tests.contract_apps:app", "--limit-request-body", str(LIMIT_BODY),
                    "--env", f"CONTRACT_APPS_RECORD={record}", workers=1)
    try:
        server.wait_ready()
        yield Shared(server, record)
    finally:
        server.close()


# -- 1. lingering close after a protocol error ---------------------------------------------------


def test_protocol_error_mid_upload_gets_its_400_then_a_clean_eof(shared: Shared,
                                                                 tmp_path: Path) -> None:
    # A bad head and, without waiting for an answer, an upload (RFC 9112 §9.6). The only
    # worker is held busy while the client sends, so when it reads the head much more
    # than one recv() (64 KiB) is already queued behind it: the server answers with
    # input unread. A plain close() then sends a RST (the client sees ECONNRESET, or
    # loses the 400); shutdown(SHUT_WR) and discarding the input for a moment give the
    # client the whole 400 and then EOF, and let the rest of the upload go through.
    data = b"GET /linger HTTP/1.1 extra\r\nHost: t\r\n\r\n" + b"x" * 200_000
    gate = tmp_path / "gate"
    with shared.client() as holder, shared.client() as c:
        holder.send(request(f"/hold?{gate}"))
        wait_for(gate.exists, what="the worker to be held")
        c.sock.setblocking(False)  # queue what the kernel takes now, while nobody reads
        queued = 0
        try:
            while queued < len(data):
                queued += c.sock.send(data[queued:])
        except BlockingIOError:
            pass
        c.sock.settimeout(DEADLINE)
        failed: list[OSError] = []

        def send_the_rest() -> None:
            try:
                c.send(data[queued:])
            except OSError as exc:  # reported by the test thread
                failed.append(exc)

        sender = threading.Thread(target=send_the_rest, daemon=True)
        sender.start()  # the client keeps sending while it reads
        gate.unlink()
        assert holder.response().body == b"released"
        try:
            reply = c.response()
            rest = c.at_eof()
        except ConnectionResetError:
            pytest.fail(f"the connection was reset; received {c.raw!r}")
        sender.join(DEADLINE)
        assert not sender.is_alive(), "the upload never went through"
    assert reply.status == 400 and reply.get("connection") == "close"
    assert reply.body.startswith(b"400 Bad Request") and rest == b""
    # The server read and discarded the whole upload: no send failed with EPIPE/ECONNRESET.
    assert not failed, failed


# -- 2. hop-by-hop headers -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/hop", "/hop-stream"])
def test_hop_by_hop_headers_from_the_app_are_dropped(shared: Shared, path: str) -> None:
    with shared.client() as c:
        c.send(request(path))
        reply = c.response()
        names = [n for n, _ in reply.headers]
        for name, value in HOP_BY_HOP:
            assert value.encode() not in reply.head, f"{name}: {value} was sent"
        for name in ("keep-alive", "upgrade", "te", "trailer", "proxy-authenticate",
                     "connection"):
            assert name not in names, reply.head
        assert reply.get("x-kept") == "yes" and reply.get("content-type") == "text/plain"
        if path == "/hop":
            assert reply.get("content-length") == "3" and reply.body == b"hop"
            assert reply.get("transfer-encoding") is None
        else:  # the server's own framing, once
            assert reply.all("transfer-encoding") == ["chunked"]
            assert reply.body == b"streamed body"
        # The app's "Connection: upgrade" did not end or change the connection.
        c.send(request("/pid"))
        assert c.response().status == 200


# -- 3. default Server and Date ------------------------------------------------------------------

IMF_FIXDATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|"
                         r"Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT")


@pytest.mark.parametrize("raw", [request("/plain"), request("/plain-stream"),
                                 b"GET /plain HTTP/1.1 extra\r\nHost: t\r\n\r\n"],
                         ids=["list", "streamed", "protocol-error"])
def test_server_and_date_are_sent_once_by_default(shared: Shared, raw: bytes) -> None:
    before = time.time()
    with shared.client() as c:
        c.send(raw)
        reply = c.response()
    after = time.time()
    assert reply.all("server") == [f"prefork/{prefork.__version__}"], reply.head
    (date,) = reply.all("date")
    assert IMF_FIXDATE.fullmatch(date), date
    when = email.utils.parsedate_to_datetime(date).timestamp()
    # Whole seconds: the head's second lies between the two readings of our clock.
    assert int(before) - 1 <= when <= after + 1, (date, before, after)


# -- 4. exc_info (PEP 3333) ----------------------------------------------------------------------


def test_start_response_twice_without_exc_info_is_a_500(shared: Shared) -> None:
    with shared.client() as c:
        c.send(request("/twice"))
        reply = c.response()
        assert reply.status == 500 and reply.get("connection") == "close"
        assert b"must not be sent" not in c.raw + c.at_eof()
    assert "start_response called twice without exc_info" in shared.error_entry("/twice")


def test_exc_info_after_the_head_was_sent_reraises_the_original(shared: Shared) -> None:
    pid = shared.get("/pid").body
    with shared.client() as c:
        c.send(request("/exc-after-write"))
        with pytest.raises(Truncated) as info:
            c.response()  # the 200 head and "partial" went out; the chunked body never ends
        assert info.value.partial == b"partial"
        assert c.raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"must not be sent" not in c.raw
    entry = shared.error_entry("/exc-after-write")
    # The app's own exception, re-raised: the last line of the traceback, not another
    # error raised while handling it.
    assert entry.rstrip().endswith("ValueError: original exc_info error"), entry
    assert "During handling" not in entry, entry
    # The same worker (one worker) serves the next request.
    assert shared.get("/pid").body == pid


def test_exc_info_before_anything_was_sent_replaces_the_head(shared: Shared) -> None:
    with shared.client() as c:
        c.send(request("/exc-before-send"))
        reply = c.response()
    assert (reply.status, reply.reason) == (503, "Service Unavailable")
    assert reply.get("x-second") == "second" and reply.get("x-first") is None
    assert reply.body == b"replaced"


# -- 5. control characters and non-latin-1 text from the app -------------------------------------


@pytest.mark.parametrize("case", list(BAD))
def test_bad_status_or_header_from_the_app_is_a_500(shared: Shared, case: str) -> None:
    with shared.client() as c:
        c.send(request(f"/bad/{case}"))
        reply = c.response()
        assert reply.status == 500 and reply.get("connection") == "close"
        c.at_eof()
        assert SMUGGLED.encode() not in c.raw and b"must not be sent" not in c.raw, c.raw
    assert "AppError" in shared.error_entry(f"/bad/{case}")


# -- 6. wsgi.input line reading ------------------------------------------------------------------

LINES = b"one\ntwo\nthree\nfour\nfive"


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("mode,expected", [
    ("readlines", ["one\n", "two\n", "three\n", "four\n", "five"]),
    ("hint", [["one\n", "two\n"], "three\nfour\nfive"]),
    ("readline-size", ["on", "e\n", "two\n", "", "three\n", "four\nfive"]),
])
def test_wsgi_input_line_reading(shared: Shared, framing: str, mode: str, expected: Any
                                 ) -> None:
    if framing == "length":
        raw = request(f"/lines/{mode}", "POST", f"Content-Length: {len(LINES)}\r\n", LINES)
    else:  # chunk boundaries inside lines: a line must be joined across them
        raw = request(f"/lines/{mode}", "POST", "Transfer-Encoding: chunked\r\n",
                      chunked(b"o", b"ne\ntw", b"o\nthree\nfo", b"ur\n", b"five"))
    with shared.client() as c:
        c.send(raw)
        reply = c.response()
    assert reply.status == 200, reply.body
    assert json.loads(reply.body) == expected


def test_readline_size_returns_without_waiting_for_a_newline(shared: Shared) -> None:
    # readline(2) has its 2 bytes once "abc" is in: it must not wait for a newline the
    # client has not sent (it sends the rest only after the answer).
    with shared.client() as c:
        c.send(request("/lines/first-2", "POST", "Transfer-Encoding: chunked\r\n")
               + b"3\r\nabc\r\n")
        reply = c.response()
        assert reply.status == 200 and json.loads(reply.body) == ["ab"]
        c.send(b"0\r\n\r\n" + request("/pid"))  # the rest of the body is drained
        assert c.response().status == 200


# -- 7. environ constants ------------------------------------------------------------------------


def test_environ_wsgi_constants(shared: Shared) -> None:
    reply = shared.get("/environ")
    assert json.loads(reply.body) == {
        "wsgi.version": "(1, 0)", "wsgi.input_terminated": "True",
        "wsgi.multiprocess": "True", "wsgi.run_once": "False"}


# -- 8. defaults ---------------------------------------------------------------------------------

FORWARDED = "X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\nX-Forwarded-Proto: https\r\n"


def test_forwarded_headers_from_127_0_0_1_are_trusted_by_default(shared: Shared) -> None:
    remote = json.loads(shared.get("/remote", FORWARDED).body)
    assert remote == {"REMOTE_ADDR": "198.51.100.7", "wsgi.url_scheme": "https"}


def test_forwarded_headers_from_ipv6_loopback_are_trusted_by_default(
        servers: Callable[..., Server]) -> None:
    port = ipv6_loopback_port()
    server = servers("tests.contract_apps:app", "--bind", f"[::1]:{port}", workers=1,
                     listen=False)
    server.wait_ready()
    with Client(("::1", port)) as c:
        c.send(request("/remote"))
        assert json.loads(c.response().body)["REMOTE_ADDR"] == "::1"  # the peer, as is
        c.send(request("/remote", headers=FORWARDED))
        remote = json.loads(c.response().body)
    assert remote == {"REMOTE_ADDR": "198.51.100.7", "wsgi.url_scheme": "https"}


def test_default_header_timeout_is_10_seconds() -> None:
    # --check-config prints the effective settings the server would run with; cheaper
    # than a slow client waiting 10 s for its 408.
    result = run_cli("tests.contract_apps:app", "--check-config")
    assert result.returncode == 0, result.stderr
    assert "header_timeout = 10.0" in result.stdout.splitlines(), result.stdout
    assert "forwarded_allow_ips = ['127.0.0.1', '::1']" in result.stdout.splitlines()


# -- 9. Expect: 100-continue over the body limit -------------------------------------------------


def test_expect_100_continue_over_the_body_limit_is_413_without_100(shared: Shared) -> None:
    mark = marker()
    with shared.client() as c:
        # The head alone: the client holds its body back until it hears 100 Continue.
        c.send(request(f"/echo?{mark}", "POST", "Expect: 100-continue\r\n"
                       f"Content-Length: {LIMIT_BODY + 1}\r\n"))
        reply = c.response()
        assert reply.status == 413 and reply.get("connection") == "close"
        assert c.at_eof() == b""  # the connection is closed, nothing else follows
        assert b" 100 " not in c.raw.split(b"\r\n", 1)[0] and b"100 Continue" not in c.raw
    # The app was never called: a control request afterwards shows the record works.
    control = marker()
    assert shared.get(f"/echo?{control}").status == 200
    recorded = shared.record.read_text()
    assert control in recorded and mark not in recorded, recorded
