"""Unit tests for prefork.http11 (sans-I/O: no sockets anywhere)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

import pytest

from prefork import http11_rules
from prefork.http11 import (
    CLOSED,
    NEED_DATA,
    Data,
    EndOfMessage,
    Limits,
    ProtocolError,
    Request,
    RequestParser,
)

CRLF = b"\r\n"


def head(start: bytes, *fields: bytes) -> bytes:
    return start + CRLF + b"".join(f + CRLF for f in fields) + CRLF


def get(*fields: bytes, start: bytes = b"GET / HTTP/1.1") -> bytes:
    return head(start, b"Host: example.com", *fields)


def post(*fields: bytes, body: bytes = b"") -> bytes:
    return head(b"POST / HTTP/1.1", b"Host: example.com", *fields) + body


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked", body=body)


def events(data: bytes | list[bytes], limits: Limits | None = None, eof: bool = True) -> list[Any]:
    """All events for data (fed in the given pieces); errors become ("error", status, reason)."""
    parser = RequestParser(limits)
    out: list[Any] = []
    pieces = [data] if isinstance(data, bytes) else data
    for piece in [*pieces, b""] if eof else pieces:
        parser.feed(piece)
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                out.append(("error", exc.status, exc.reason))
                return out
            if event is NEED_DATA:
                break
            if event is CLOSED:
                out.append(CLOSED)
                return out
            if isinstance(event, Data) and out and isinstance(out[-1], Data):
                out[-1] = Data(out[-1].data + event.data)  # merge: splits may differ
            else:
                out.append(event)
    return out


def first_request(data: bytes, limits: Limits | None = None) -> Request:
    result = events(data, limits)
    assert isinstance(result[0], Request), result
    return result[0]


def error_of(data: bytes | list[bytes], limits: Limits | None = None) -> tuple[int, str]:
    result = events(data, limits)
    assert result[-1][0] == "error", result
    return result[-1][1], result[-1][2]


def short_id(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} chars)"


def all_splits(data: bytes) -> list[list[bytes]]:
    """Every two-piece split, byte by byte, and a few seeded random splits."""
    out = [[data[:i], data[i:]] for i in range(1, len(data))]  # b"" would mean EOF
    out.append([data[i : i + 1] for i in range(len(data))])
    for seed in range(5):
        rng = random.Random(seed)
        pieces, pos = [], 0
        while pos < len(data):
            n = rng.randint(1, 7)
            pieces.append(data[pos : pos + n])
            pos += n
        out.append(pieces)
    return out


def assert_split_invariant(data: bytes, limits: Limits | None = None) -> list[Any]:
    reference = events(data, limits)
    for pieces in all_splits(data):
        assert events(pieces, limits) == reference, pieces
    return reference


# ------------------------------------------------------------------------------ API shape


def test_simple_get_events_and_fields() -> None:
    parser = RequestParser()
    assert parser.next_event() is NEED_DATA
    assert not parser.in_request and parser.buffered == 0
    parser.feed(get(b"User-Agent: t", start=b"GET /p/a?q=1&r HTTP/1.1"))
    assert parser.in_request
    req = parser.next_event()
    assert isinstance(req, Request)
    assert asdict(req) == {
        "method": "GET", "target": "/p/a?q=1&r", "path": "/p/a", "query": "q=1&r",
        "version": (1, 1), "headers": [("host", "example.com"), ("user-agent", "t")],
        "host": "example.com", "content_length": None, "chunked": False,
        "keep_alive": True, "expect_continue": False,
    }  # fmt: skip
    assert parser.in_request
    assert parser.next_event() == EndOfMessage([])
    assert not parser.in_request
    assert parser.next_event() is NEED_DATA
    parser.feed(b"")
    assert parser.next_event() is CLOSED
    assert parser.next_event() is CLOSED


def test_protocol_error_attributes() -> None:
    exc = ProtocolError(431, "too many header fields")
    assert (exc.status, exc.reason) == (431, "too many header fields")
    assert str(exc) == "431 too many header fields"
    assert isinstance(exc, Exception)


def test_limits_defaults() -> None:
    assert Limits() == Limits(request_line=8190, fields=100, field_size=8190, body=0,
                              chunk_ext=4096)


def test_dead_parser_reraises_same_error_and_ignores_input() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\nHost: x\r\n\r\n")
    with pytest.raises(ProtocolError) as first:
        parser.next_event()
    assert first.value.status == 400 and "bare LF" in first.value.reason
    parser.feed(get())
    with pytest.raises(ProtocolError) as second:
        parser.next_event()
    assert second.value is first.value
    assert parser.buffered == 0


def test_feed_after_eof_is_a_bug() -> None:
    parser = RequestParser()
    parser.feed(b"")
    parser.feed(b"")  # repeating EOF is harmless
    with pytest.raises(RuntimeError):
        parser.feed(b"GET")


def test_events_compare_and_repr() -> None:
    assert Data(b"a") == Data(b"a") and Data(b"a") != Data(b"b")
    assert EndOfMessage() == EndOfMessage([]) != EndOfMessage([("a", "b")])
    assert repr(Data(b"x")) == "Data(b'x')"
    assert repr(NEED_DATA) == "NEED_DATA" and repr(CLOSED) == "CLOSED"


def test_module_does_no_io() -> None:
    code = "import sys, prefork.http11; print('socket' in sys.modules, 'select' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------ bodies


def test_content_length_body_never_runs_past_and_rest_stays_buffered() -> None:
    parser = RequestParser()
    parser.feed(post(b"Content-Length: 5", body=b"helloGET / HTTP/1.1\r\n"))
    req = parser.next_event()
    assert isinstance(req, Request) and req.content_length == 5
    assert parser.next_event() == Data(b"hello")
    assert parser.next_event() == EndOfMessage([])
    assert parser.buffered == len(b"GET / HTTP/1.1\r\n")
    assert parser.in_request  # the next head has begun
    assert parser.next_event() is NEED_DATA


def test_body_data_comes_as_it_arrives() -> None:
    parser = RequestParser()
    parser.feed(post(b"Content-Length: 6", body=b"ab"))
    assert isinstance(parser.next_event(), Request)
    assert parser.next_event() == Data(b"ab")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"cdefGH")
    assert parser.next_event() == Data(b"cdef")
    assert parser.next_event() == EndOfMessage([])
    assert parser.buffered == 2


@pytest.mark.parametrize("fields", [(), (b"Content-Length: 0",), (b"Content-Length: 000",)])
def test_no_body_gives_request_then_end(fields: tuple[bytes, ...]) -> None:
    parser = RequestParser()
    parser.feed(post(*fields))
    assert isinstance(parser.next_event(), Request)
    assert parser.next_event() == EndOfMessage([])


def test_chunked_body_and_trailers() -> None:
    body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 9\r\n\r\n"
    result = assert_split_invariant(chunked(body))
    assert result[1:] == [Data(b"Wikipedia in\r\n\r\nchunks."), EndOfMessage([("x-sum", "9")]),
                          CLOSED]


@pytest.mark.parametrize(
    "trailer",
    [b"Content-Length: 5", b"Transfer-Encoding: chunked", b"Host: evil", b"Authorization: x",
     b"Cookie: a=b", b"Set-Cookie: a=b", b"Content-Type: a/b", b"TE: trailers",
     b"Proxy-Authorization: x", b"X_Under: 1", b"Connection: close"],
)
def test_forbidden_trailers_are_dropped(trailer: bytes) -> None:
    result = events(chunked(b"0\r\n" + trailer + b"\r\nX-Ok: 1\r\n\r\n"))
    assert result[-2] == EndOfMessage([("x-ok", "1")])


def test_pipelined_three_requests_in_one_buffer() -> None:
    data = (
        post(b"Content-Length: 3", body=b"one")
        + chunked(b"3\r\ntwo\r\n0\r\n\r\n")
        + CRLF
        + get(start=b"GET /three HTTP/1.1")
    )
    result = assert_split_invariant(data)
    kinds = [type(e).__name__ if e is not CLOSED else "CLOSED" for e in result]
    assert kinds == ["Request", "Data", "EndOfMessage"] * 2 + ["Request", "EndOfMessage", "CLOSED"]
    assert result[1] == Data(b"one") and result[4] == Data(b"two")
    assert result[6].path == "/three"


def test_pipelined_two_gets_already_buffered() -> None:
    parser = RequestParser()
    parser.feed(get() * 2)
    for _ in range(2):
        assert isinstance(parser.next_event(), Request)
        assert parser.next_event() == EndOfMessage([])
    assert parser.buffered == 0 and parser.next_event() is NEED_DATA


# ------------------------------------------------------------------------------ EOF


@pytest.mark.parametrize(
    "data",
    [b"G", b"GET / HTTP/1.1\r\n", get()[:-1], post(b"Content-Length: 3", body=b"ab"),
     chunked(b"3\r\nab"), chunked(b"3\r\nabc"), chunked(b"3\r\nabc\r\n"), chunked(b"0\r\n"),
     chunked(b"0\r\nX: 1\r\n"), chunked(b"0\r\n\r"), b"\r"],
)
def test_truncated_at_eof(data: bytes) -> None:
    status, reason = error_of(data)
    assert status == 400 and "truncated" in reason


@pytest.mark.parametrize("data", [b"", CRLF, CRLF * 2, get(), get() + CRLF])
def test_clean_eof_between_requests(data: bytes) -> None:
    assert events(data)[-1] is CLOSED


def test_leading_crlfs_do_not_start_a_request() -> None:
    parser = RequestParser()
    parser.feed(CRLF * 2)
    assert parser.next_event() is NEED_DATA
    assert not parser.in_request and parser.buffered == 0


# ------------------------------------------------------------------------------ request line


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET / HTTP/2.0", 505), (b"GET / HTTP/0.9", 505), (b"GET / HTTP/3.0", 505),
        (b"GET / HTTP/1.10", 400), (b"GET / HTTP/01.1", 400), (b"GET / http/1.1", 400),
        (b"GET / HTTP/1", 400), (b"GET / HTTP/1.1 ", 400), (b" GET / HTTP/1.1", 400),
        (b"GET  / HTTP/1.1", 400), (b"GET\t/ HTTP/1.1", 400), (b"GET /\x0b HTTP/1.1", 400),
        (b"GET /\x00 HTTP/1.1", 400), (b"GET /\x7f HTTP/1.1", 400), (b"GET /a\rb HTTP/1.1", 400),
        (b"G@T / HTTP/1.1", 400), (b"GET", 400), (b"", 400), (b"GET /", 400),
        (b"GET foo HTTP/1.1", 400), (b"GET * HTTP/1.1", 400), (b"CONNECT / HTTP/1.1", 400),
        (b"CONNECT a.example HTTP/1.1", 400), (b"CONNECT a:b:1 HTTP/1.1", 400),
        (b"GET a.example:80 HTTP/1.1", 400), (b"GET http://u@a.example/ HTTP/1.1", 400),
        (b"GET http:///p HTTP/1.1", 400), (b"GET http://a.example#f HTTP/1.1", 400),
        (b"GET //x HTTP/1.1\xa0", 400),
    ],
)  # fmt: skip
def test_bad_request_lines(line: bytes, status: int) -> None:
    assert error_of(get(start=line))[0] == status


@pytest.mark.parametrize(
    ("line", "method", "path", "query", "host"),
    [
        (b"GET /a/b?c HTTP/1.1", "GET", "/a/b", "c", "example.com"),
        (b"get /%7e? HTTP/1.1", "get", "/%7e", "", "example.com"),
        (b"OPTIONS * HTTP/1.1", "OPTIONS", "*", "", "example.com"),
        (b"CONNECT a.example:443 HTTP/1.1", "CONNECT", "", "", "example.com"),
        (b"CONNECT [::1]:443 HTTP/1.1", "CONNECT", "", "", "example.com"),
        (b"GET http://a.example:81/x?y HTTP/1.1", "GET", "/x", "y", "a.example:81"),
        (b"GET HTTP://a.example HTTP/1.1", "GET", "/", "", "a.example"),
        (b"PROPFIND //double HTTP/1.1", "PROPFIND", "//double", "", "example.com"),
    ],
)
def test_request_target_forms(line: bytes, method: str, path: str, query: str, host: str) -> None:
    req = first_request(get(start=line))
    assert (req.method, req.path, req.query, req.host) == (method, path, query, host)
    assert req.target == line.split(b" ")[1].decode("latin-1")


def test_http10_request() -> None:
    req = first_request(head(b"GET / HTTP/1.0"))
    assert req.version == (1, 0) and req.host is None and not req.keep_alive


@pytest.mark.parametrize("prefix", [CRLF, CRLF * 2])
def test_up_to_two_leading_crlfs_are_skipped(prefix: bytes) -> None:
    assert isinstance(events(prefix + get())[0], Request)


@pytest.mark.parametrize("prefix", [CRLF * 3, b"\n", b"\r\r\n", b" \r\n", b"x\r\n", b"\x00"])
def test_other_leading_junk_is_rejected(prefix: bytes) -> None:
    assert error_of(prefix + get())[0] == 400


# ------------------------------------------------------------------------------ header lines


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"X-A : 1", "whitespace before colon"), (b"X-A\t: 1", "whitespace before colon"),
        (b" X-A: 1", "obs-fold"), (b"\tX-A: 1", "obs-fold"), (b"X-A 1", "missing colon"),
        (b": 1", "name"), (b"X A: 1", "name"), (b"X-\xe9: 1", "name"), (b"X-\xa0: 1", "name"),
        (b"X(A): 1", "name"), (b"X/A: 1", "name"), (b"X-A: a\x00b", "value"),
        (b"X-A: a\rb", "value"), (b"X-A: a\x7f", "value"), (b"X-A: a\x0bb", "value"),
        (b"X-A: a\x1fb", "value"), (b"X-A: \x01", "value"),
    ],
)  # fmt: skip
def test_bad_header_lines(line: bytes, reason: str) -> None:
    status, why = error_of(get(line))
    assert status == 400 and reason in why


def test_obs_fold_is_rejected() -> None:
    assert "obs-fold" in error_of(get(b"X-A: 1", b" 2"))[1]


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\nHost: a\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\n\r\n",
     b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n\n",
     b"GET / HTTP/1.1\nHost: a\n\n", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\r\n\r\n"],
)
def test_bare_lf_and_bare_cr_in_head(data: bytes) -> None:
    assert error_of(data)[0] == 400
    assert_split_invariant(data)


def test_header_values_are_decoded_latin1_and_ows_stripped() -> None:
    req = first_request(get(b"X-A: \t a \t b \t", b"X-B:", b"X-C: \xe9\xff\x80", b"X-D:x"))
    assert req.headers[1:] == [("x-a", "a \t b"), ("x-b", ""), ("x-c", "\xe9\xff\x80"),
                               ("x-d", "x")]


def test_header_names_lowercased_ascii_only_and_order_kept() -> None:
    req = first_request(get(b"X-B: 1", b"x-a: 2", b"X-B: 3"))
    assert req.headers == [("host", "example.com"), ("x-b", "1"), ("x-a", "2"), ("x-b", "3")]


@pytest.mark.parametrize(
    "name", [b"X_Forwarded_For", b"Content_Length", b"Transfer_Encoding", b"_", b"Host_"]
)
def test_names_with_underscore_are_dropped(name: bytes) -> None:
    req = first_request(post(name + b": 12", b"X-Kept: 1"))
    assert req.headers == [("host", "example.com"), ("x-kept", "1")]
    assert req.content_length is None and not req.chunked


# ------------------------------------------------------------------------------ Host


@pytest.mark.parametrize(
    "value",
    [b"example.com", b"example.com:8080", b"example.com:", b"127.0.0.1", b"[::1]:80",
     b"[2001:db8::1]", b"xn--bcher-kva.example", b"a%2Eb", b"a-b_c~d!$&'()*+,;="],
)
def test_valid_host_values(value: bytes) -> None:
    req = first_request(head(b"GET / HTTP/1.1", b"Host: " + value))
    assert req.host == value.decode("latin-1")


@pytest.mark.parametrize(
    "value",
    [b"", b"a b", b"a/b", b"u@a", b"a:b:c", b"a:123456", b"[::1", b"::1", b"a%zz",
     b"\xe9.example", b"a\tb", b"a:80 "[:-1] + b"x"],
)
def test_invalid_host_values(value: bytes) -> None:
    status, reason = error_of(head(b"GET / HTTP/1.1", b"Host: " + value))
    assert status == 400 and "Host" in reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (head(b"GET / HTTP/1.1"), "missing Host"),
        (head(b"GET / HTTP/1.1", b"Host: a", b"Host: a"), "duplicate Host"),
        (head(b"GET / HTTP/1.0", b"Host: a", b"Host: b"), "duplicate Host"),
        (head(b"GET http://a/ HTTP/1.1"), "missing Host"),
        (head(b"GET http://a/ HTTP/1.1", b"Host: a", b"Host: b"), "duplicate Host"),
        (head(b"GET http://a/ HTTP/1.1", b"Host: a/b"), "invalid Host"),
        (head(b"OPTIONS * HTTP/1.1", b"Host:"), "invalid Host"),
    ],
)
def test_host_rules(data: bytes, reason: str) -> None:
    assert error_of(data) == (400, reason)


def test_absolute_form_overrides_host_and_allows_empty_host() -> None:
    req = first_request(head(b"GET http://b.example:8/x HTTP/1.1", b"Host: a.example"))
    assert req.host == "b.example:8" and req.headers == [("host", "a.example")]
    assert first_request(head(b"GET http://b.example/ HTTP/1.1", b"Host:")).host == "b.example"


def test_duplicate_content_type() -> None:
    assert error_of(get(b"Content-Type: a/b", b"content-type: a/b")) == (
        400, "duplicate Content-Type")


# ------------------------------------------------------------------------------ Content-Length


@pytest.mark.parametrize(
    ("value", "length"),
    [(b"0", 0), (b"7", 7), (b"007", 7), (b"7, 7", 7), (b"7,7,\t7", 7), (b"07 , 07", 7),
     (b"9" * 18, 10**18 - 1)],
)
def test_valid_content_length(value: bytes, length: int) -> None:
    parser = RequestParser()
    parser.feed(post(b"Content-Length: " + value))
    req = parser.next_event()
    assert isinstance(req, Request) and req.content_length == length


@pytest.mark.parametrize(
    "value",
    [b"+7", b"-7", b"7_0", b"0x7", b"0X7", b"7 0", b"", b",", b"7,", b",7", b"7,,7", b"7, 8",
     b"7.0", b"1e3", b"\xd9\xa3", b"\xa07", b"7\xa0", b"\xef\xbc\x97", b"9" * 19, b"9" * 4301,
     b"1" * 8000, b"seven", b'"7"', b"7;x", b"07, 7", b"7, 007"],
    ids=short_id,
)
def test_invalid_content_length(value: bytes) -> None:
    status, reason = error_of(post(b"Content-Length: " + value, body=b"7bytes!"))
    assert status == 400 and "Content-Length" in reason


@pytest.mark.parametrize("value", [b"7\x0b", b"\x0c7", b"7\x00", b"7\r"])
def test_content_length_with_ctl_is_an_invalid_field(value: bytes) -> None:
    assert error_of(post(b"Content-Length: " + value, body=b"7bytes!"))[0] == 400


def test_content_length_lines_must_agree() -> None:
    assert error_of(post(b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"))[0] == 400
    req = first_request(post(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"))
    assert req.content_length == 3
    # The same number in other digits is refused too: no two readers can disagree.
    assert error_of(post(b"Content-Length: 3", b"Content-Length: 003", body=b"abc"))[0] == 400


# ------------------------------------------------------------------------------ Transfer-Encoding


@pytest.mark.parametrize(
    "value", [b"chunked", b"Chunked", b"CHUNKED", b",chunked", b" , chunked ,", b"chunked,"]
)
def test_valid_transfer_encoding(value: bytes) -> None:
    result = events(post(b"Transfer-Encoding: " + value, body=b"1\r\nx\r\n0\r\n\r\n"))
    assert isinstance(result[0], Request) and result[0].chunked
    assert result[1:] == [Data(b"x"), EndOfMessage([]), CLOSED]


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ((b"Transfer-Encoding: chunked, gzip",), 400),
        ((b"Transfer-Encoding: chunked, chunked",), 400),
        ((b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
        ((b"Transfer-Encoding: gzip",), 400),
        ((b"Transfer-Encoding: identity",), 400),
        ((b"Transfer-Encoding:",), 400),
        ((b"Transfer-Encoding: ,",), 400),
        ((b"Transfer-Encoding: gzip, chunked",), 501),
        ((b"Transfer-Encoding: identity, chunked",), 501),
        ((b"Transfer-Encoding: x-foo", b"Transfer-Encoding: chunked"), 501),
        ((b"Transfer-Encoding: chunked;q=1",), 400),
        ((b'Transfer-Encoding: "chunked"',), 400),
        ((b"Transfer-Encoding: chunked\xa0",), 400),
        ((b"Transfer-Encoding: \xa0chunked",), 400),
        ((b"Transfer-Encoding: chunked\x0b",), 400),
        ((b"Transfer-Encoding: chu nked",), 400),
        ((b"Transfer-Encoding\xa0: chunked",), 400),
        ((b"Transfer-Encoding : chunked",), 400),
        ((b"Transfer-Encoding: gzip,", b" chunked"), 400),
        ((b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400),
        ((b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400),
        ((b"Content-Length: 5", b"Transfer-Encoding: gzip"), 400),
    ],
)  # fmt: skip
def test_invalid_transfer_encoding(fields: tuple[bytes, ...], status: int) -> None:
    assert error_of(post(*fields, body=b"5\r\nhello\r\n0\r\n\r\n"))[0] == status


def test_transfer_encoding_in_http10() -> None:
    data = head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked") + b"0\r\n\r\n"
    assert error_of(data) == (400, "Transfer-Encoding in HTTP/1.0")


# ------------------------------------------------------------------------------ chunk framing


@pytest.mark.parametrize(
    ("size_line", "data"),
    [(b"5", b"hello"), (b"05", b"hello"), (b"A", b"0123456789"), (b"a", b"0123456789"),
     (b"0000000000000005", b"hello"), (b"5;a", b"hello"), (b"5;a=b", b"hello"),
     (b'5;a="b;c=d"', b"hello"), (b'5 ;\ta\t=\t"\\"\t"', b"hello"), (b"5;a;b=c;d", b"hello"),
     (b'5;a="\xe9\x80"', b"hello")],
)
def test_valid_chunk_size_lines(size_line: bytes, data: bytes) -> None:
    result = events(chunked(size_line + b"\r\n" + data + b"\r\n0\r\n\r\n"))
    assert result[1:] == [Data(data), EndOfMessage([]), CLOSED]


@pytest.mark.parametrize(
    "size_line",
    [b"0x5", b"0X5", b"+5", b"-5", b"5_0", b" 5", b"5 ", b"5\t", b"", b"\xd9\xa5", b"g",
     b"0" * 17, b"f" * 17, b"f" * 4301, b"5;", b"5;a=", b"5;=b", b"5;a b", b'5;a="b', b"5;a=b c",
     b'5;a="\x01"', b'5;a="\x7f"', b"5;a\rb", b"5;a=b;", b"5,a", b"5;a=\xe9", b"5;\xe9"],
    ids=short_id,
)
def test_invalid_chunk_size_lines(size_line: bytes) -> None:
    status, reason = error_of(chunked(size_line + b"\r\nhello\r\n0\r\n\r\n"))
    assert status == 400 and "chunk-size line" in reason


@pytest.mark.parametrize(
    "body",
    [b"5\nhello\r\n0\r\n\r\n", b"5;a\nb\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\n0\r\n\r\n",
     b"5\r\nhello\r0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhello0\r\n\r\n",
     b"3\r\nhello\r\n0\r\n\r\n", b"0\n\r\n", b"0\r\n\n", b"0\r\nX: 1\n\r\n",
     b"0\r\n X: 1\r\n\r\n", b"0\r\nX : 1\r\n\r\n", b"0\r\nX\r\n\r\n"],
)
def test_bad_chunk_framing(body: bytes) -> None:
    assert error_of(chunked(body))[0] == 400
    assert_split_invariant(chunked(body))


def test_huge_chunk_size_does_not_raise_value_error() -> None:
    assert error_of(chunked(b"9" * 5000 + b"\r\n"))[0] == 400
    assert error_of(chunked(b"9" * 5000 + b"\r\n"), Limits(chunk_ext=10**6))[0] == 400


def test_chunk_ext_limit() -> None:
    line = b"1;" + b"a" * 98  # 100 bytes
    assert isinstance(events(chunked(line + b"\r\nx\r\n0\r\n\r\n"), Limits(chunk_ext=100))[1], Data)
    status, reason = error_of(chunked(line + b"a\r\nx\r\n0\r\n\r\n"), Limits(chunk_ext=100))
    assert status == 400 and "too long" in reason
    # Unterminated and already too long: fails without waiting for the LF.
    assert error_of([chunked(line + b"aa")], Limits(chunk_ext=100))[0] == 400


# ------------------------------------------------------------------------------ keep-alive, Expect


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True), (b"1.1", b"close", False), (b"1.1", b"Close", False),
        (b"1.1", b"keep-alive, CLOSE", False), (b"1.1", b"upgrade", True),
        (b"1.1", b"closed", True), (b"1.0", None, False), (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True), (b"1.0", b"keep-alive, close", False),
        (b"1.0", b"close", False), (b"1.0", b"foo,keep-alive", True),
    ],
)  # fmt: skip
def test_keep_alive(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    fields = [b"Connection: " + connection] if connection is not None else []
    assert first_request(get(*fields, start=b"GET / HTTP/" + version)).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("version", "value", "expect"),
    [(b"1.1", b"100-continue", True), (b"1.1", b"100-Continue", True),
     (b"1.0", b"100-continue", False)],
)
def test_expect_continue(version: bytes, value: bytes, expect: bool) -> None:
    data = get(b"Expect: " + value, b"Content-Length: 1", start=b"PUT / HTTP/" + version) + b"x"
    assert first_request(data).expect_continue is expect


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_other_expectations_get_417(version: bytes) -> None:
    data = get(b"Expect: 200-ok", b"Content-Length: 1", start=b"PUT / HTTP/" + version) + b"x"
    assert error_of(data)[0] == 417


# ------------------------------------------------------------------------------ limits


def test_request_line_limit_across_every_split() -> None:
    limits = Limits(request_line=20)
    ok = get(start=b"GET /" + b"a" * 6 + b" HTTP/1.1")  # exactly 20
    assert isinstance(assert_split_invariant(ok, limits)[0], Request)
    bad = get(start=b"GET /" + b"a" * 7 + b" HTTP/1.1")
    assert assert_split_invariant(bad, limits)[-1][:2] == ("error", 414)


def test_unterminated_request_line_fails_early() -> None:
    parser = RequestParser(Limits(request_line=20))
    parser.feed(b"GET /" + b"a" * 15 + b"\r")  # 20 bytes + a CR that may start the CRLF
    assert parser.next_event() is NEED_DATA
    parser.feed(b"x")
    with pytest.raises(ProtocolError) as exc:
        parser.next_event()
    assert exc.value.status == 414


def test_default_request_line_limit() -> None:
    assert error_of(get(start=b"GET /" + b"a" * 8200 + b" HTTP/1.1"))[0] == 414
    assert error_of([b"GET /" + b"a" * 9000])[0] == 414
    target = b"/" + b"a" * (8190 - len(b"GET  HTTP/1.1") - 1)
    assert first_request(get(start=b"GET " + target + b" HTTP/1.1")).target == target.decode()


def test_field_size_limit_across_every_split() -> None:
    limits = Limits(field_size=17)
    ok = get(b"X-A: " + b"v" * 12)
    assert isinstance(assert_split_invariant(ok, limits)[0], Request)
    bad = get(b"X-A: " + b"v" * 13)
    assert assert_split_invariant(bad, limits)[-1][:2] == ("error", 431)


def test_fields_limit_across_every_split() -> None:
    limits = Limits(fields=3)
    assert isinstance(assert_split_invariant(get(b"A: 1", b"B: 2"), limits)[0], Request)
    result = assert_split_invariant(get(b"A: 1", b"B: 2", b"C: 3"), limits)
    assert result[-1][:2] == ("error", 431)


def test_default_fields_limit() -> None:
    fields = [b"X-%d: v" % i for i in range(99)]
    assert len(first_request(get(*fields)).headers) == 100
    assert error_of(get(*fields, b"X-Last: v"))[0] == 431


def test_dropped_underscore_fields_still_count_towards_the_limit() -> None:
    assert error_of(get(b"A_1: 1", b"A_2: 2", b"A_3: 3"), Limits(fields=3))[0] == 431


def test_first_error_in_stream_order_wins() -> None:
    # The invalid line comes first, the over-long one after: 400, however it is split.
    data = get(b"Bad Name: 1", b"X-A: " + b"v" * 40)
    assert assert_split_invariant(data, Limits(field_size=17))[-1][:2] == ("error", 400)
    data = get(b"X-A: " + b"v" * 40, b"Bad Name: 1")
    assert assert_split_invariant(data, Limits(field_size=17))[-1][:2] == ("error", 431)


def test_head_that_never_ends_stays_bounded() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError) as exc:
        for _ in range(200):
            parser.feed(b"X-Pad: " + b"p" * 70 + b"\r\n")
            assert parser.next_event() is NEED_DATA
            assert parser.buffered < 8192
    assert exc.value.status == 431


def test_huge_head_in_one_feed() -> None:
    data = get(*(b"X-%d: %s" % (i, b"v" * 8000) for i in range(99)))
    req = first_request(data)
    assert len(req.headers) == 100
    assert error_of(get(*(b"X-%d: v" % i for i in range(5000))))[0] == 431


def test_body_limit_content_length_at_head_time() -> None:
    limits = Limits(body=4)
    assert error_of(post(b"Content-Length: 5"), limits) == (413, "request body too large")
    result = events(post(b"Content-Length: 4", body=b"abcd"), limits)
    assert result[1:] == [Data(b"abcd"), EndOfMessage([]), CLOSED]
    assert error_of(post(b"Content-Length: 999999999999999999"), Limits(body=1))[0] == 413


def test_body_limit_chunked_before_the_data() -> None:
    limits = Limits(body=4)
    ok = chunked(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
    assert assert_split_invariant(ok, limits)[1] == Data(b"abcd")
    bad = chunked(b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    result = assert_split_invariant(bad, limits)
    assert result[1] == Data(b"ab") and result[-1][:2] == ("error", 413)
    # 413 as soon as the size line is read, before any of that chunk's data arrives.
    parser = RequestParser(limits)
    parser.feed(chunked(b"ffffffffffffffff\r\n"))
    assert isinstance(parser.next_event(), Request)
    with pytest.raises(ProtocolError) as exc:
        parser.next_event()
    assert exc.value.status == 413


def test_trailer_limits() -> None:
    trailers = b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert error_of(chunked(trailers), Limits(fields=2))[0] == 431
    assert events(chunked(trailers), Limits(fields=3))[-2] == EndOfMessage(
        [("a", "1"), ("b", "2"), ("c", "3")])
    assert error_of(chunked(b"0\r\nX: " + b"v" * 30 + b"\r\n\r\n"), Limits(field_size=26))[0] == 431


# ------------------------------------------------------------------------------ split invariance


@pytest.mark.parametrize(
    "data",
    [
        get(b"User-Agent: x", b"Accept: */*"),
        CRLF + CRLF + get(),
        post(b"Content-Length: 5", body=b"hello") + get(),
        chunked(b"5;a=\"b\"\r\nhello\r\n0\r\nX: y\r\n\r\n") + CRLF + get(),
        get() + b"GET /second HTTP/1.1\r\nHost: x\r\nBad : y\r\n\r\n",
        get() + head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 6",
                     b"Transfer-Encoding: chunked") + b"0\r\n\r\nX",
    ],
)
def test_split_invariance(data: bytes) -> None:
    assert_split_invariant(data)


def test_slow_and_fast_head_paths_agree() -> None:
    # A head larger than field_size skips the one-pass path; the result must not change.
    fields = [b"X-%d: %s" % (i, b"v" * 50) for i in range(30)]
    small = events(get(*fields), Limits(field_size=60))
    large = events(get(*fields))
    assert small == large and isinstance(small[0], Request)


# ------------------------------------------------------------------------------ hot path

# The heads the module docstring benchmarks: what wrk, curl and a browser send, and a
# small JSON POST. A server parses thousands of these per second on one connection.
WRK_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CURL_GET = (
    b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n\r\n"
)
BROWSER_GET = head(
    b"GET /static/app.js?v=3 HTTP/1.1",
    b"Host: www.example.com",
    b"Connection: keep-alive",
    b'sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"',
    b"sec-ch-ua-mobile: ?0",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    b" Chrome/124.0.0.0 Safari/537.36",
    b'sec-ch-ua-platform: "Linux"',
    b"Accept: */*",
    b"Sec-Fetch-Site: same-origin",
    b"Sec-Fetch-Mode: no-cors",
    b"Sec-Fetch-Dest: script",
    b"Referer: https://www.example.com/",
    b"Accept-Encoding: gzip, deflate, br",
    b"Accept-Language: en-US,en;q=0.9",
    b"Cookie: session=abc123; theme=dark",
)
POST_JSON = head(
    b"POST /api/items HTTP/1.1", b"Host: 127.0.0.1:8080", b"User-Agent: curl/8.5.0",
    b"Accept: */*", b"Content-Type: application/json", b"Content-Length: 13",
) + b'{"name":"x1"}'
HOT_HEADS = {"wrk": WRK_GET, "curl": CURL_GET, "browser": BROWSER_GET, "post": POST_JSON}


def keep_alive_round(parser: RequestParser, data: bytes) -> list[Any]:
    """What the server does per keep-alive request: feed, then events until NEED_DATA."""
    parser.feed(data)
    out = []
    while (event := parser.next_event()) is not NEED_DATA:
        out.append(event)
    return out


@pytest.mark.parametrize("name", HOT_HEADS)
def test_common_heads_take_the_one_pass_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = HOT_HEADS[name]
    reference = assert_split_invariant(data)  # the per-line path decides byte by byte

    def per_line_path(self: RequestParser) -> None:
        raise AssertionError("fell back to the per-line path")

    monkeypatch.setattr(RequestParser, "_head_lines", per_line_path)
    parser = RequestParser()
    for _ in range(3):  # the second and third time with the connection's cached Host
        assert keep_alive_round(parser, data) == reference[:-1]
    assert not parser.in_request and parser.buffered == 0


def test_common_heads_parse_as_expected() -> None:
    req = first_request(BROWSER_GET)
    assert (req.method, req.path, req.query, req.host) == (
        "GET", "/static/app.js", "v=3", "www.example.com",
    )
    assert [name for name, _ in req.headers][:4] == [
        "host", "connection", "sec-ch-ua", "sec-ch-ua-mobile",
    ]
    assert req.headers[2] == ("sec-ch-ua", '"Chromium";v="124", "Not-A.Brand";v="99"')
    assert req.keep_alive and req.content_length is None
    result = events(POST_JSON)
    assert result[0].content_length == 13 and result[0].headers[-2:] == [
        ("content-type", "application/json"), ("content-length", "13"),
    ]
    assert result[1:] == [Data(b'{"name":"x1"}'), EndOfMessage(), CLOSED]


def test_known_field_names_are_exactly_what_the_long_way_gives() -> None:
    # FIELD_NAMES only replaces name.lower().decode() for names FIELD_LINES matches.
    assert b"Host" in http11_rules.FIELD_NAMES and b"sec-ch-ua" in http11_rules.FIELD_NAMES
    for raw, name in http11_rules.FIELD_NAMES.items():
        assert name == raw.lower().decode("latin-1")
        assert http11_rules.FIELD_LINES.fullmatch(b"\r\n" + raw + b": v") is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b"X-A: a" + b" " * 8000, "a"),
        (b"X-A: " + b"a " * 4000, "a " * 3999 + "a"),
        (b"X-A:" + b" \t" * 4000, ""),
        (b"X-A: " + b"a\t" * 4000, "a\t" * 3999 + "a"),
    ],
    ids=short_id,
)
def test_long_trailing_ows_is_cheap_and_stripped(field: bytes, value: str) -> None:
    started = time.perf_counter()
    req = first_request(get(field))
    assert time.perf_counter() - started < 0.1
    assert req.headers[1] == ("x-a", value)


# ------------------------------------------------------------------------------ hostile inputs


@pytest.mark.parametrize(
    "data",
    [
        get(b"X:" + b" " * 8000 + b"\x01"),
        get(b"X: a" + b" \t" * 4000 + b"\x01"),
        get(b"X: " + b"a " * 4000 + b"\x7f"),
        get(b"X: " + b"a" * 8000 + b" \x00"),
        get(b"X: " + b"a\t" * 4000 + b"\x01"),
        get(b"X: a" + b" " * 8000 + b"\x00", b"Y: b"),
        post(b"Transfer-Encoding: a" + b", " * 4000 + b"!"),
        post(b"Transfer-Encoding: " + b" ," * 4000 + b"!"),
        post(b"Content-Length: 1" + b" , 1" * 2000 + b"x"),
        chunked(b"5" + b";a" * 2000 + b" !\r\n"),
        chunked(b"5" + b';a="' + b"\\\t" * 2000 + b"\r\n"),
        head(b"GET / HTTP/1.1", b"Host: " + b"a%41" * 2000 + b"@"),
        head(b"GET http://" + b"a" * 8000 + b"# HTTP/1.1", b"Host: a"),
        head(b"GET /" + b"a" * 8000 + b" HTTP/1.1x", b"Host: a"),
    ],
    ids=short_id,
)
def test_no_regex_blows_up_on_hostile_input(data: bytes) -> None:
    # Each case takes well under a millisecond; a pattern that backtracks
    # quadratically took 0.3-0.9 s on the first one before it was made possessive.
    for pieces in ([data], [data[:-40], data[-40:]]):
        started = time.perf_counter()
        result = events(pieces)
        assert time.perf_counter() - started < 0.1
        assert result[-1][0] == "error"


def bench(repeat: int = 20, number: int = 10000) -> None:
    """CPU time per keep-alive request for HOT_HEADS (``python tests/test_http11.py``)."""
    for name, data in HOT_HEADS.items():
        parser = RequestParser()
        calls = len(keep_alive_round(parser, data)) + 1  # + the final NEED_DATA
        feed, next_event = parser.feed, parser.next_event
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            for _ in range(number):
                feed(data)
                for _ in range(calls):
                    next_event()
            best = min(best, time.process_time() - started)
        print(f"{name:8s} {len(data):4d} bytes  {best / number * 1e6:5.2f} usec per request")


# -- the caches of lines seen valid (http11._whole_head) ------------------------------


def test_a_line_seen_valid_still_obeys_every_limit() -> None:
    """A cached request line or field line is valid grammar, but limits belong to each
    parser: a line cached under loose limits must still fail a stricter parser."""
    long_field = b"X-Long: " + b"v" * 60
    assert isinstance(first_request(get(long_field)), Request)  # now cached
    assert error_of(get(long_field), Limits(field_size=40))[0] == 431
    assert error_of(get(b"A: 1", b"B: 2"), Limits(fields=2))[0] == 431
    target = b"GET /" + b"p" * 50 + b" HTTP/1.1"
    assert isinstance(first_request(get(start=target)), Request)
    assert error_of(get(start=target), Limits(request_line=40))[0] == 414


def test_a_cached_line_parses_exactly_as_the_first_time() -> None:
    data = get(b"User-Agent: curl/8.0  ", b"Accept: */*", b"Cookie: a=1", b"Cookie: b=2",
               start=b"GET /x?y=1 HTTP/1.1")
    first, again = first_request(data), first_request(data)
    assert asdict(first) == asdict(again)
    assert first.headers[1] == ("user-agent", "curl/8.0")  # trailing OWS dropped


def test_line_caches_are_bounded() -> None:
    from prefork import http11

    for i in range(http11.SEEN_MAX + 10):
        assert isinstance(first_request(get(b"X-N: %d" % i, start=b"GET /%d HTTP/1.1" % i)),
                          Request)
    assert len(http11._seen_fields) <= http11.SEEN_MAX
    assert len(http11._seen_request_lines) <= http11.SEEN_MAX
    long_line = b"X-Big: " + b"b" * http11.SEEN_LINE_MAX
    assert isinstance(first_request(get(long_line)), Request)
    assert long_line not in http11._seen_fields  # long lines are parsed every time


def test_receive_is_feed_then_next_event() -> None:
    """receive() parses a head straight from the received bytes; what follows the head
    (a body, a pipelined request) is buffered as feed() would."""
    for data in (get(), post(b"Content-Length: 5", body=b"hello") + get(), get() + get(),
                 b"\r\n" + get(), get()[:-1]):
        via_receive, via_feed = RequestParser(), RequestParser()
        first = via_receive.receive(data)
        via_feed.feed(data)
        assert first == via_feed.next_event()
        assert via_receive.buffered == via_feed.buffered
        assert via_receive.in_request == via_feed.in_request


if __name__ == "__main__":
    bench()
