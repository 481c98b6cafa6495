"""HTTP/1.1 end to end: the real server over loopback, a raw-socket client, no sleeps.

- One server per configuration, shared by the tests of that configuration (module-scoped
  fixtures); the app is tests/http_apps.py, which records every call it gets.
- The raw client parses responses itself (status line, fields, Content-Length, chunked or
  close-delimited body), so framing mistakes show up as wrong bytes, not as a lenient
  library smoothing them over.
- Every wait has a deadline (harness.DEADLINE). Timing assertions bound how *late*
  something may happen, with slack for a busy 2-core machine; the only lower bound is on
  the 408, which the server must not send early.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.harness import DEADLINE, Server, wait_for
from tests.raw_http import Client, Truncated

HEADER_TIMEOUT = 2.0  # --header-timeout of the slow-client server
SLACK = 3.0  # how late an event may be on a loaded machine


# -- a raw HTTP/1.x client -------------------------------------------------------------------


def get(path: str, version: str = "1.1", method: str = "GET", headers: str = "",
        body: bytes = b"") -> bytes:
    """A request as bytes; `headers` are extra field lines, each ending in CRLF."""
    return (f"{method} {path} HTTP/{version}\r\nHost: test\r\n{headers}\r\n").encode(
        "latin-1") + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


def marker() -> str:
    return uuid.uuid4().hex[:12]


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Main:
    """The main server: keep-alive 1 s, small limits, access log, recording app."""

    server: Server
    record: Path
    access: Path
    tmp: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.port)

    def client(self) -> Client:
        return Client(self.address)

    def recorded(self) -> str:
        return self.record.read_text()

    def prove_app_not_called(self, mark: str) -> None:
        """`mark` never reached the app; a control request afterwards proves it records."""
        control = marker()
        with self.client() as c:
            c.send(get(f"/control-{control}"))
            assert c.response().status == 200
        recorded = self.recorded()
        assert f"/control-{control}" in recorded
        assert mark not in recorded, recorded


LIMIT_BODY = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Main]:
    tmp = tmp_path_factory.mktemp("main")
    record, access = tmp / "record.txt", tmp / "access.log"
    record.touch()
    server = Server(tmp, "tests.http_apps:app", "--keep-alive", "1",
                    "--access-logfile", str(access),
                    "--limit-request-line", "1024", "--limit-request-fields", "20",
                    "--limit-request-field_size", "1024",
                    "--limit-request-body", str(LIMIT_BODY),
                    "--env", f"HTTP_APPS_RECORD={record}", workers=2)
    try:
        server.wait_ready()
        yield Main(server, record, access, tmp)
    finally:
        server.close()


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker, --header-timeout 2: a stuck connection would show at once."""
    server = Server(tmp_path_factory.mktemp("slow"), "tests.http_apps:app",
                    "--header-timeout", str(HEADER_TIMEOUT), workers=1)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


# -- persistence and pipelining ----------------------------------------------------------------


def test_keep_alive_on_http11_serves_several_requests_from_one_worker(main: Main) -> None:
    with main.client() as c:
        pids = set()
        for _ in range(4):
            c.send(get("/pid"))
            reply = c.response()
            assert reply.status == 200 and reply.get("connection") is None
            pids.add(int(reply.body))
        assert len(pids) == 1


def test_http10_closes_by_default(main: Main) -> None:
    with main.client() as c:
        c.send(get("/pid", "1.0"))
        reply = c.response()
        assert reply.status == 200 and reply.get("connection") == "close"
        assert c.at_eof() == b""


def test_http10_keep_alive_is_echoed_and_honoured(main: Main) -> None:
    with main.client() as c:
        for _ in range(2):
            c.send(get("/pid", "1.0", headers="Connection: keep-alive\r\n"))
            reply = c.response()
            assert reply.status == 200 and reply.get("connection") == "keep-alive"


def test_connection_close_is_honoured(main: Main) -> None:
    with main.client() as c:
        c.send(get("/pid", headers="Connection: close\r\n"))
        reply = c.response()
        assert reply.status == 200 and reply.get("connection") == "close"
        assert c.at_eof() == b""


def test_idle_keep_alive_connection_is_closed_after_the_timeout(main: Main) -> None:
    with main.client() as c:
        c.send(get("/pid"))
        assert c.response().status == 200
        idle_since = time.monotonic()
        assert c.at_eof() == b""  # --keep-alive 1
        assert time.monotonic() - idle_since < 1 + SLACK


def test_pipelined_requests_are_answered_in_order(main: Main) -> None:
    with main.client() as c:
        c.send(get("/echo", method="POST", headers="Content-Length: 3\r\n", body=b"one")
               + get("/stream") + get("/echo", method="POST",
                                      headers="Transfer-Encoding: chunked\r\n",
                                      body=chunked(b"th", b"ree")))
        assert c.response().body == b"one"
        assert c.response().body == b"part 0\npart 1\npart 2\n"
        assert c.response().body == b"three"
        c.send(get("/pid", headers="Connection: close\r\n"))
        assert c.response().status == 200
        assert c.at_eof() == b""


# -- bodies and framing ------------------------------------------------------------------------


def test_head_has_the_get_headers_and_no_body(main: Main) -> None:
    with main.client() as c:
        c.send(get("/"))
        full = c.response()
        c.send(get("/", method="HEAD"))
        head = c.response("HEAD")
        ignore = {"date"}
        assert [h for h in head.headers if h[0] not in ignore] == \
            [h for h in full.headers if h[0] not in ignore]
        assert head.get("content-length") == str(len(full.body))
        # A streamed body: no chunked framing for HEAD (its terminator would be read as
        # the start of the next response), and nothing else sent either.
        c.send(get("/stream", method="HEAD"))
        head = c.response("HEAD")
        assert head.status == 200 and head.get("transfer-encoding") is None
        c.send(get("/pid"))  # anything left over would corrupt this response
        assert c.response().status == 200
        assert c.buf == b""


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("path", ["/status/{}?body", "/gen-status/{}"])
def test_204_and_304_carry_no_body(main: Main, status: int, path: str) -> None:
    with main.client() as c:
        c.send(get(path.format(status)))
        reply = c.response()
        assert reply.status == status
        assert reply.get("content-length") is None and reply.get("transfer-encoding") is None
        c.send(get("/pid"))  # a leaked body would show up here instead of a status line
        assert c.response().status == 200


@pytest.mark.parametrize("query,body", [("", b"hello world"), ("tail", b"hello world!")])
def test_write_callable_then_a_list(main: Main, query: str, body: bytes) -> None:
    with main.client() as c:
        c.send(get(f"/write?{query}"))
        reply = c.response()
        assert reply.status == 200 and reply.body == body
        c.send(get("/pid"))  # a second head or a missing terminator would show here
        assert c.response().status == 200 and c.buf == b""


def test_conflicting_content_lengths_from_the_app_are_a_500(main: Main) -> None:
    with main.client() as c:
        c.send(get("/double-length"))
        reply = c.response()
        assert reply.status == 500 and reply.get("connection") == "close"
    main.server.wait_log("error handling GET /double-length")


def test_app_date_and_server_replace_ours(main: Main) -> None:
    with main.client() as c:
        c.send(get("/own-date"))
        reply = c.response()  # get() fails on a repeated field
        assert reply.get("date") == "Thu, 01 Jan 1970 00:00:00 GMT"
        assert reply.get("server") == "my-app"


def test_204_never_carries_content_length(main: Main) -> None:
    # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 1xx or 204 response.
    with main.client() as c:
        c.send(get("/no-content-with-length"))
        reply = c.response()
        assert reply.status == 204 and reply.get("content-length") is None
        c.send(get("/pid"))
        assert c.response().status == 200


def test_streaming_app_is_chunked_on_http11(main: Main) -> None:
    with main.client() as c:
        c.send(get("/stream"))
        reply = c.response()
        assert reply.get("transfer-encoding") == "chunked"
        assert reply.get("connection") is None
        assert reply.body == b"part 0\npart 1\npart 2\n"


def test_streaming_app_is_close_delimited_on_http10(main: Main) -> None:
    with main.client() as c:
        c.send(get("/stream", "1.0", headers="Connection: keep-alive\r\n"))
        reply = c.response()
        assert reply.get("transfer-encoding") is None and reply.get("content-length") is None
        assert reply.get("connection") == "close"
        assert reply.body == b"part 0\npart 1\npart 2\n"
        assert c.eof


def test_chunked_upload_is_echoed(main: Main) -> None:
    with main.client() as c:
        c.send(get("/echo", method="POST", headers="Transfer-Encoding: chunked\r\n",
                   body=chunked(b"hello ", b"chunked ", b"world")))
        reply = c.response()
        assert reply.status == 200 and reply.body == b"hello chunked world"


def test_content_length_upload_is_echoed(main: Main) -> None:
    with main.client() as c:
        c.send(get("/echo", method="POST", headers="Content-Length: 11\r\n",
                   body=b"hello world"))
        assert c.response().body == b"hello world"


def test_large_upload_is_echoed(main: Main) -> None:
    body = os.urandom(1024 * 1024)
    status, echoed = main.server.request("/echo", "POST", body)
    assert status == 200 and echoed == body


def test_large_chunked_upload_in_odd_pieces_is_echoed(main: Main) -> None:
    body = os.urandom(300_000)
    parts = [body[i:i + 7777] for i in range(0, len(body), 7777)]
    with main.client() as c:
        c.send(get("/echo", method="POST", headers="Transfer-Encoding: chunked\r\n",
                   body=chunked(*parts)))
        assert c.response().body == body


def test_unread_body_is_discarded_and_the_connection_reused(main: Main) -> None:
    with main.client() as c:
        c.send(get("/pid", method="POST", headers="Content-Length: 5\r\n", body=b"12345"))
        assert c.response().status == 200
        c.send(get("/echo", method="POST", headers="Content-Length: 2\r\n", body=b"ok"))
        assert c.response().body == b"ok"


@pytest.mark.parametrize("path,status", [("/pid", 200), ("/raise-before", 500)])
def test_large_unread_body_still_gets_its_response(main: Main, path: str, status: int
                                                   ) -> None:
    # The app answers without reading 6 MiB (more than the socket buffers hold): the
    # server closes, but lingering, so the client can send its body and read the answer
    # (a plain close() would RST and destroy the response, RFC 9112 §9.6).
    got, _ = main.server.request(path, "POST", b"x" * (6 * 1024 * 1024))
    assert got == status


def test_file_wrapper_sends_a_real_file(main: Main) -> None:
    path = main.tmp / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    with main.client() as c:
        c.send(get(f"/file?{path}"))
        reply = c.response()
        assert reply.get("content-length") == str(len(data))
        assert reply.body == data
        c.send(get(f"/file?{path}", method="HEAD"))
        head = c.response("HEAD")
        assert head.get("content-length") == str(len(data))
        c.send(get("/pid"))
        assert c.response().status == 200 and c.buf == b""


def test_write_then_a_file_wrapper_is_one_response(main: Main) -> None:
    path = main.tmp / "after-write.bin"
    path.write_bytes(b"FILEDATA")
    with main.client() as c:
        c.send(get(f"/write-then-file?{path}"))
        reply = c.response()
        assert reply.get("transfer-encoding") == "chunked"
        assert reply.body == b"pre:FILEDATA"  # never a second head inside the body
        c.send(get("/pid"))
        assert c.response().status == 200 and c.buf == b""


@pytest.mark.parametrize("status", ["100", "103"])
def test_an_interim_status_from_the_app_is_a_500(main: Main, status: str) -> None:
    """A 1xx is interim (RFC 9110 §15.2): sent as the answer it would leave the client
    waiting for a final response that never comes."""
    with main.client() as c:
        c.send(get(f"/interim/{status}"))
        assert c.response().status == 500
    main.server.wait_log(rf"status '{status} Interim' is interim")


def test_file_shorter_than_its_content_length_closes_the_connection(main: Main) -> None:
    path = main.tmp / "short.bin"
    path.write_bytes(b"0123456789")
    with main.client() as c:
        # A pipelined second request: its response must never be read as the missing
        # 100 bytes of the first body.
        c.send(get(f"/file-short?{path}") + get("/pid"))
        with pytest.raises(Truncated) as info:
            c.response()
        assert info.value.partial.endswith(b"0123456789")
        assert b"HTTP/1.1" not in info.value.partial


# -- Expect: 100-continue ------------------------------------------------------------------------


def test_100_continue_is_sent_when_the_app_reads(main: Main) -> None:
    gate = main.tmp / f"gate-{marker()}"
    with main.client() as c:
        c.send(get(f"/gate?{gate}", method="POST",
                   headers="Expect: 100-continue\r\nContent-Length: 4\r\n"))
        wait_for(gate.exists, what="the app to be called")
        assert c.nothing_received(), "100 Continue sent before the app read wsgi.input"
        gate.unlink()  # now the app reads wsgi.input
        interim = c.response()
        assert interim.status == 100 and interim.headers == []
        c.send(b"body")
        reply = c.response()
        assert reply.status == 200 and reply.body == b"body"
        assert reply.get("connection") is None  # the body was read: reusable


def test_app_answering_without_reading_closes_instead_of_100(main: Main) -> None:
    with main.client() as c:
        c.send(get("/pid", method="POST",
                   headers="Expect: 100-continue\r\nContent-Length: 10\r\n"))
        reply = c.response()
        assert reply.status == 200 and reply.get("connection") == "close"
        assert c.at_eof() == b""


def test_no_100_continue_on_http10(main: Main) -> None:
    with main.client() as c:
        c.send(get("/echo", "1.0", method="POST",
                   headers="Expect: 100-continue\r\nContent-Length: 4\r\n", body=b"data"))
        reply = c.response()
        assert reply.status == 200 and reply.body == b"data"
        assert c.at_eof() == b""


# -- protocol errors -----------------------------------------------------------------------------

M = "MARK"  # replaced per test run by a unique marker
ERRORS = {
    "bad request line": (b"GET /M HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400),
    "double space in request line": (b"GET  /M HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "lowercase version": (b"GET /M http/1.1\r\nHost: t\r\n\r\n", 400),
    "HTTP/2.0": (b"GET /M HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    "request line too long": (b"GET /M" + b"a" * 1100 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
                              414),
    "too many header fields": (b"GET /M HTTP/1.1\r\nHost: t\r\n"
                               + b"".join(b"X-H%d: v\r\n" % i for i in range(25)) + b"\r\n",
                               431),
    "header field too large": (b"GET /M HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 1100
                               + b"\r\n\r\n", 431),
    "body over the limit": (b"POST /M HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                            % (LIMIT_BODY + 1), 413),
    # http11.py decision: a TE whose final coding is not chunked is 400 (RFC 9112 §6.3
    # item 4), an unknown coding before chunked is 501 (§6.1).
    "Transfer-Encoding: gzip": (b"POST /M HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip"
                                b"\r\n\r\n", 400),
    "Transfer-Encoding: gzip, chunked": (b"POST /M HTTP/1.1\r\nHost: t\r\n"
                                         b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    "Content-Length with Transfer-Encoding": (b"POST /M HTTP/1.1\r\nHost: t\r\n"
                                              b"Content-Length: 5\r\n"
                                              b"Transfer-Encoding: chunked\r\n\r\n"
                                              b"0\r\n\r\n", 400),
    "missing Host": (b"GET /M HTTP/1.1\r\n\r\n", 400),
    "bare LF": (b"GET /M HTTP/1.1\nHost: t\n\n", 400),
    "obs-fold": (b"GET /M HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
}


@pytest.mark.parametrize("request_bytes,status", ERRORS.values(), ids=list(ERRORS))
def test_protocol_error_gets_its_status_then_close(main: Main, request_bytes: bytes,
                                                   status: int) -> None:
    mark = marker()
    with main.client() as c:
        c.send(request_bytes.replace(b"/M", f"/{mark}".encode()))
        reply = c.response()
        assert reply.status == status, reply
        assert reply.get("connection") == "close"
        assert c.at_eof() == b""
    main.prove_app_not_called(mark)


def test_413_is_sent_before_the_body_is_read(main: Main) -> None:
    mark = marker()
    with main.client() as c:
        # The head alone: the answer cannot depend on a body that never comes.
        c.send(get(f"/{mark}", method="POST", headers=f"Content-Length: {10**12}\r\n"))
        reply = c.response()
        assert reply.status == 413 and reply.get("connection") == "close"
        assert c.at_eof() == b""
    main.prove_app_not_called(mark)


def test_an_expectation_other_than_100_continue_is_417_before_the_app(main: Main) -> None:
    mark = marker()
    with main.client() as c:
        c.send(get(f"/{mark}", method="PUT", headers="Expect: 200-ok\r\nContent-Length: 2\r\n")
               + b"ok")
        reply = c.response()
        assert reply.status == 417 and reply.get("connection") == "close"
        assert c.at_eof() == b""
    main.prove_app_not_called(mark)


@pytest.mark.parametrize("lengths", [b"Content-Length: 05, 5\r\n",
                                     b"Content-Length: 5\r\nContent-Length: 005\r\n"])
def test_content_lengths_in_other_digits_are_400(main: Main, lengths: bytes) -> None:
    mark = marker()
    with main.client() as c:
        c.send(get(f"/{mark}", method="POST", headers=lengths.decode()) + b"hello")
        reply = c.response()
        assert reply.status == 400 and reply.get("connection") == "close"
        assert c.at_eof() == b""
    main.prove_app_not_called(mark)


def test_chunked_body_over_the_limit_is_413_while_the_app_reads(main: Main) -> None:
    with main.client() as c:
        c.send(get("/echo", method="POST", headers="Transfer-Encoding: chunked\r\n")
               + b"%x\r\n" % (LIMIT_BODY + 1) + b"x" * 1000)
        reply = c.response()
        assert reply.status == 413 and reply.get("connection") == "close"
        assert c.at_eof() == b""


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 0\r\nContent-Length: 50\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: \xa0chunked\r\n",
    b"Content-Length: +5\r\n",
])
def test_smuggled_request_after_an_error_is_never_answered(main: Main, framing: bytes) -> None:
    first, smuggled = marker(), marker()
    second = f"GET /{smuggled} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    with main.client() as c:
        c.send(f"POST /{first} HTTP/1.1\r\nHost: t\r\n".encode() + framing + b"\r\n"
               + b"0\r\n\r\n" + second)
        reply = c.response()
        assert reply.status == 400 and reply.get("connection") == "close"
        assert c.at_eof() == b"", "a second response followed the error"
    main.prove_app_not_called(first)
    main.prove_app_not_called(smuggled)


def test_chunk_size_smuggling_is_rejected(main: Main) -> None:
    smuggled = marker()
    with main.client() as c:
        # "0x5" would be 5 to int(x, 16) and leave "GET /smuggled" as a new request.
        c.send(get("/echo", method="POST", headers="Transfer-Encoding: chunked\r\n")
               + b"0x5\r\nhello\r\n0\r\n\r\n"
               + f"GET /{smuggled} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        reply = c.response()
        assert reply.status == 400 and reply.get("connection") == "close"
        assert c.at_eof() == b""
    main.prove_app_not_called(smuggled)


# -- slow clients --------------------------------------------------------------------------------


class Trickler(threading.Thread):
    """A Slowloris client: one byte of a never-ending head per second until told to stop."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), DEADLINE)
        self.stop = stop
        self.sent = 0
        self.payload = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000

    def run(self) -> None:
        for byte in self.payload:
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                return  # the server gave up on us: that is the point
            self.sent += 1
            if self.stop.wait(1.0):  # the trickle itself is the stimulus, not a sync
                return


def test_tricklers_do_not_delay_a_normal_request(slow: Server) -> None:
    stop = threading.Event()
    tricklers = [Trickler(slow.port, stop) for _ in range(4)]
    try:
        for t in tricklers:
            t.start()
        wait_for(lambda: all(t.sent >= 1 for t in tricklers), what="all tricklers started")
        started = time.monotonic()
        status, _ = slow.request("/pid")
        assert status == 200
        assert time.monotonic() - started < HEADER_TIMEOUT
        # The header deadline is absolute: a byte a second does not extend it.
        for t in tricklers:
            t.sock.settimeout(HEADER_TIMEOUT + SLACK)
            data = b""
            try:
                while chunk := t.sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass  # our next trickled byte hit the closed socket: the 408 came first
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert b"\r\nConnection: close\r\n" in data
    finally:
        stop.set()
        for t in tricklers:
            t.join(DEADLINE)
            t.sock.close()


def test_partial_head_gets_408_after_the_header_timeout(slow: Server) -> None:
    with Client(("127.0.0.1", slow.port), timeout=HEADER_TIMEOUT + SLACK) as c:
        c.send(b"GET /pid HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        reply = c.response()
        waited = time.monotonic() - started
        assert reply.status == 408 and reply.get("connection") == "close"
        assert c.at_eof() == b""
        assert HEADER_TIMEOUT - 0.5 < waited < HEADER_TIMEOUT + SLACK


def test_client_that_never_reads_does_not_hold_the_worker(slow: Server) -> None:
    chunks = 512  # 32 MiB: far beyond what the socket buffers can hold
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.settimeout(DEADLINE)
    reader.connect(("127.0.0.1", slow.port))
    try:
        reader.sendall(get(f"/big?{chunks}"))
        assert reader.recv(1, socket.MSG_PEEK), "the response never started"
        # The only worker is now stuck in send() to a client that reads nothing.
        started = time.monotonic()
        status, _ = slow.request("/pid")
        assert status == 200
        assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
        # The server gave up on the reader: what it gets ends well short of the body.
        received = 0
        try:
            while chunk := reader.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < chunks * 65536
    finally:
        reader.close()


def test_client_stalling_mid_body_gets_408_and_frees_the_worker(slow: Server) -> None:
    with Client(("127.0.0.1", slow.port), timeout=HEADER_TIMEOUT + SLACK) as c:
        c.send(get("/echo", method="POST", headers="Content-Length: 10\r\n", body=b"abc"))
        started = time.monotonic()
        reply = c.response()
        assert reply.status == 408 and reply.get("connection") == "close"
        assert c.at_eof() == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
    assert slow.request("/pid")[0] == 200


# -- app errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [[], ["--threads", "2"]], ids=["sync", "threads"])
def test_a_slow_but_steady_upload_is_not_a_hung_worker(servers, threads: list[str]) -> None:
    """--timeout is for an app that stops making progress, not for a client that sends
    slowly: each byte that arrives is progress (the idle timeout bounds the gaps)."""
    server = servers("tests.http_apps:app", "--timeout", "2", *threads, workers=1)
    server.wait_ready()
    (pid,) = server.wait_workers(1)
    with Client(("127.0.0.1", server.port)) as c:
        c.send(get("/echo", method="POST", headers="Content-Length: 8\r\n"))
        for byte in b"trickled":
            time.sleep(0.75)  # the slow client under test: 6 s in all, 3 x --timeout
            c.send(bytes([byte]))
        reply = c.response()
        assert reply.status == 200 and reply.body == b"trickled"
    assert server.worker_pids() == {pid}
    assert "killing" not in server.log() and "no progress" not in server.log()


def test_app_raising_oserror_is_a_500_not_a_dropped_client(main: Main) -> None:
    missing = main.tmp / "no-such-file"
    with main.client() as c:
        c.send(get(f"/file?{missing}"))
        reply = c.response()
        assert reply.status == 500 and reply.get("connection") == "close"
        assert c.at_eof() == b""
    main.server.wait_log("FileNotFoundError")


def test_header_injection_is_a_500_and_logged(main: Main) -> None:
    with main.client() as c:
        c.send(get("/inject"))
        reply = c.response()
        assert reply.status == 500 and reply.get("connection") == "close"
        assert "x-injected" not in reply.names() and "x-ok" not in reply.names()
        assert b"X-Injected" not in reply.head + reply.body
        assert c.at_eof() == b""
    main.server.wait_log(r"ERROR error handling GET /inject")
    assert "invalid header 'X-Ok'" in main.server.log()


def test_exception_before_start_response_is_a_500(main: Main) -> None:
    with main.client() as c:
        c.send(get("/raise-before"))
        reply = c.response()
        assert reply.status == 500 and reply.get("connection") == "close"
        assert c.at_eof() == b""
    main.server.wait_log("RuntimeError: boom before start_response")


def test_exception_after_the_body_started_truncates_the_response(main: Main) -> None:
    with main.client() as c:
        c.send(get("/raise-after"))
        with pytest.raises(Truncated) as info:
            c.response()
        assert info.value.partial == b"first"
        assert c.eof
    main.server.wait_log("RuntimeError: boom after the body started")


# -- environ -------------------------------------------------------------------------------------


def env(client: Client, headers: str = "") -> dict[str, str]:
    client.send(get("/env", headers=headers))
    reply = client.response()
    assert reply.status == 200
    return json.loads(reply.body)


def test_forwarded_headers_from_a_trusted_peer(main: Main) -> None:
    with main.client() as c:
        environ = env(c, "X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\n"
                         "X-Forwarded-Proto: https\r\n")
    assert environ["REMOTE_ADDR"] == "198.51.100.7"
    assert environ["wsgi.url_scheme"] == "https"


def test_header_names_with_underscores_never_reach_environ(main: Main) -> None:
    with main.client() as c:
        environ = env(c, "X_Forwarded_For: 6.6.6.6\r\nX-Custom_Name: spoof\r\n"
                         "X-Custom-Name: real\r\n")
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["HTTP_X_CUSTOM_NAME"] == "real"
    assert not any("6.6.6.6" in v or "spoof" in v for v in environ.values())


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    server = Server(tmp_path, "tests.http_apps:app", "--forwarded-allow-ips", "10.0.0.1",
                    workers=1)
    try:
        server.wait_ready()
        with Client(("127.0.0.1", server.port)) as c:
            environ = env(c, "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n")
        assert environ["REMOTE_ADDR"] == "127.0.0.1"
        assert environ["wsgi.url_scheme"] == "http"
        assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"  # passed on, not trusted
    finally:
        server.close()


def test_environ_follows_pep_3333(main: Main) -> None:
    with main.client() as c:
        environ = env(c, "Content-Type: text/x\r\nContent-Length: 0\r\n"
                         "X-Twice: a\r\nX-Twice: b\r\nCookie: a=1\r\nCookie: b=2\r\n")
        assert environ["REQUEST_METHOD"] == "GET" and environ["SCRIPT_NAME"] == ""
        assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert environ["CONTENT_TYPE"] == "text/x" and environ["CONTENT_LENGTH"] == "0"
        assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
        assert environ["HTTP_X_TWICE"] == "a, b" and environ["HTTP_COOKIE"] == "a=1; b=2"
        assert environ["SERVER_NAME"] == "test"
        assert environ["SERVER_PORT"] == str(main.server.port)
        c.send(b"GET /env/caf%C3%A9%2Fx?q=%20y HTTP/1.1\r\nHost: h:81\r\n\r\n")
        decoded = json.loads(c.response().body)
        # PATH_INFO is decoded, as latin-1 "bytes-as-str"; the query string stays raw.
        assert decoded["PATH_INFO"] == "/env/caf\xc3\xa9/x"
        assert decoded["QUERY_STRING"] == "q=%20y"
        assert decoded["RAW_URI"] == "/env/caf%C3%A9%2Fx?q=%20y"
        assert decoded["SERVER_NAME"] == "h" and decoded["SERVER_PORT"] == "81"
        c.send(b"GET http://example.com:8080/env?a=b HTTP/1.1\r\nHost: ignored\r\n\r\n")
        absolute = json.loads(c.response().body)
        assert absolute["PATH_INFO"] == "/env" and absolute["QUERY_STRING"] == "a=b"
        assert absolute["SERVER_NAME"] == "example.com" and absolute["SERVER_PORT"] == "8080"
        assert absolute["RAW_URI"] == "http://example.com:8080/env?a=b"


# -- access log ----------------------------------------------------------------------------------

COMBINED = re.compile(
    r'(?P<h>\S+) - (?P<u>\S+) \[[^]]+\] "(?P<r>[^"]*)" (?P<s>\d{3}) (?P<b>\d+|-) '
    r'"(?P<f>[^"]*)" "(?P<a>[^"]*)"')


def test_access_log_has_one_combined_line_per_request(main: Main) -> None:
    mark = marker()
    with main.client() as c:
        c.send(get(f"/{mark}/a", headers="User-Agent: tab\there\r\nReferer: /from\r\n"))
        assert c.response().status == 200
        c.send(get(f"/{mark}/b?q=1", method="HEAD"))
        c.response("HEAD")
        c.send(get(f"/{mark}/c", method="POST", headers="Content-Length: 2\r\n", body=b"hi"))
        c.response()

    def lines() -> list[str]:
        found = [ln for ln in main.access.read_text().splitlines() if mark in ln]
        return found if len(found) >= 3 else []

    a, b, c_ = wait_for(lines, what="three access log lines")
    assert len(lines()) == 3
    for line in (a, b, c_):
        assert COMBINED.fullmatch(line), line
    first = COMBINED.fullmatch(a)
    assert first is not None
    assert first["h"] == "127.0.0.1" and first["s"] == "200" and first["b"] == "5"
    assert first["r"] == f"GET /{mark}/a HTTP/1.1"
    assert first["a"] == "tab\\x09here" and first["f"] == "/from"
    assert f'"HEAD /{mark}/b?q=1 HTTP/1.1" 200 - "-" "-"' in b
    assert f'"POST /{mark}/c HTTP/1.1" 200 5 ' in c_


def test_access_log_user_is_the_basic_auth_user(main: Main) -> None:
    """%(u)s as gunicorn gives it: the user of HTTP Basic credentials, escaped."""
    mark = marker()
    with main.client() as c:
        for user in ("alice", "b\x85ob", ""):
            token = base64.b64encode(f"{user}:secret".encode()).decode()
            c.send(get(f"/{mark}/{len(user)}", headers=f"Authorization: Basic {token}\r\n"))
            assert c.response().status == 200
        c.send(get(f"/{mark}/bearer", headers="Authorization: Bearer abc\r\n"))
        assert c.response().status == 200

    def users() -> list[str]:
        found = [COMBINED.fullmatch(ln) for ln in main.access.read_text().splitlines()
                 if mark in ln]
        return [m["u"] if m else "unparsed" for m in found] if len(found) >= 4 else []

    assert wait_for(users, what="four access log lines") == ["alice", "b\\x85ob", "-", "-"]


def test_access_log_escapes_c1_controls(main: Main) -> None:
    mark = marker().encode()
    with main.client() as c:
        # obs-text is valid in a field value (RFC 9110 §5.5), so the parser passes it on.
        c.send(get(f"/{mark.decode()}", headers="User-Agent: nel\x85csi\x9bend\r\n"))
        assert c.response().status == 200

    def line() -> bytes | None:
        for ln in main.access.read_bytes().split(b"\n"):
            if mark in ln:
                return ln
        return None

    found = wait_for(line, what="the access log line")
    assert b'"nel\\x85csi\\x9bend"' in found, found


# -- wsgiref.validate ----------------------------------------------------------------------------


def test_validator_finds_nothing_to_complain_about(main: Main) -> None:
    with main.client() as c:
        c.send(get("/validated/"))
        assert c.response().body == b"validated"
        c.send(get("/validated/echo", method="POST", headers="Content-Length: 5\r\n",
                   body=b"hello"))
        assert c.response().body == b"hello"
        c.send(get("/validated/echo", method="POST", headers="Transfer-Encoding: chunked\r\n",
                   body=chunked(b"chunked ", b"body")))
        assert c.response().body == b"chunked body"
        c.send(get("/validated/lines", method="POST",
                   headers="Transfer-Encoding: chunked\r\n",
                   body=chunked(b"one\ntw", b"o\nthree\nfo", b"ur\nfive")))
        assert c.response().body == b"one\n|two|\n|three\n|four\n|five"
        c.send(get("/validated/", method="HEAD"))
        assert c.response("HEAD").status == 200
        c.send(get("/validated/stream"))
        assert c.response().body == b"part 0\npart 1\npart 2\n"
        c.send(get("/validated/stream", method="HEAD"))
        assert c.response("HEAD").status == 200
        c.send(get("/validated/", "1.0"))
        assert c.response().status == 200
    assert "/validated" not in main.server.log()
    stderr = main.server.stderr()
    assert "Warning" not in stderr and "Exception ignored" not in stderr, stderr


# -- unix socket ---------------------------------------------------------------------------------


def test_unix_socket_serves_replaces_a_stale_file_and_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed server's leftover
    server = Server(tmp_path, "tests.http_apps:app", "--bind", f"unix:{path}",
                    workers=1, listen=False)
    try:
        server.wait_ready()
        with Client(str(path)) as c:
            for _ in range(2):
                c.send(get("/env"))
                reply = c.response()
                assert reply.status == 200
            assert json.loads(reply.body)["REMOTE_ADDR"] == ""
    finally:
        server.close()
    assert not path.exists()


# -- graceful stop -------------------------------------------------------------------------------


def test_connection_accepted_before_a_graceful_stop_is_still_served(tmp_path: Path) -> None:
    server = Server(tmp_path, "tests.http_apps:app", workers=1)
    try:
        server.wait_ready()
        (worker,) = server.wait_workers(1)
        with Client(("127.0.0.1", server.port)) as c:
            local = c.sock.getsockname()

            def sockets() -> list[tuple[str, tuple[str, int] | tuple[()]]]:
                return [(conn.status, tuple(conn.raddr))
                        for conn in psutil.Process(worker).net_connections("tcp")]

            wait_for(lambda: any(raddr == local for _, raddr in sockets()),
                     what="the worker to accept the connection")
            # The client connected before the stop but its request comes after: it was
            # never "idle between requests", and dropping it would lose the request.
            server.kill(signal.SIGTERM)
            wait_for(lambda: all(status != psutil.CONN_LISTEN for status, _ in sockets()),
                     what="the worker to close its listener (it is stopping)")
            c.send(get("/pid"))
            reply = c.response()
            assert reply.status == 200 and reply.get("connection") == "close"
        assert server.wait_exit() == 0
    finally:
        server.close()


# -- http.client as a client ---------------------------------------------------------------------


def test_http_client_keep_alive_round_trips(main: Main) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", main.server.port, timeout=DEADLINE)
    try:
        conn.request("GET", "/stream")
        resp = conn.getresponse()
        assert resp.read() == b"part 0\npart 1\npart 2\n" and resp.chunked
        conn.request("POST", "/echo", body=b"abc")
        resp = conn.getresponse()
        assert resp.read() == b"abc" and not resp.will_close
    finally:
        conn.close()
