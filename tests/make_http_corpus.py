"""Regenerate tests/http_corpus/ (run once: ``python tests/make_http_corpus.py``).

The expected results below are written by hand from RFC 9112/9110 and the rules in
prefork/http11.py; nothing here runs the parser. The generated files are the source of
truth for tests/test_http_corpus.py; edit this script and rerun it to add a case.

Layout:
  valid/NAME.http    the raw bytes (CRLFs literal), replayed whole and in pieces
  valid/NAME.json    {"limits": {...}?, "requests": [{method, target, path, query,
                     version, headers, host, content_length, chunked, keep_alive,
                     expect_continue, body (latin-1 text), trailers}, ...]}
  invalid/NAME.http  "# status: NNN\\n" ["# requests: N\\n"] ["# reason: text\\n"]
                     ["# limits: k=v ...\\n"] then the raw bytes; N = complete requests
                     before the error; text = a substring of ProtocolError.reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent / "http_corpus"
CRLF = b"\r\n"

valid_cases: dict[str, tuple[bytes, dict[str, Any]]] = {}
invalid_cases: dict[str, tuple[bytes, int, int, str, dict[str, int]]] = {}


def msg(start: bytes, *fields: bytes, body: bytes = b"") -> bytes:
    """A request head from its lines (CRLF added), then the body."""
    return start + CRLF + b"".join(f + CRLF for f in fields) + CRLF + body


def req(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    *,
    path: str | None = None,
    query: str | None = None,
    version: tuple[int, int] = (1, 1),
    host: str | None = "example.com",
    content_length: int | None = None,
    chunked: bool = False,
    keep_alive: bool | None = None,
    expect_continue: bool = False,
    body: bytes = b"",
    trailers: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    if path is None:
        path, _, q = target.partition("?")
        query = q if query is None else query
    return {
        "method": method,
        "target": target,
        "path": path,
        "query": query or "",
        "version": list(version),
        "headers": [list(h) for h in (headers if headers is not None else HOST)],
        "host": host,
        "content_length": content_length,
        "chunked": chunked,
        "keep_alive": version == (1, 1) if keep_alive is None else keep_alive,
        "expect_continue": expect_continue,
        "body": body.decode("latin-1"),
        "trailers": [list(t) for t in trailers or []],
    }


def valid(name: str, raw: bytes, *requests: dict[str, Any], **limits: int) -> None:
    assert name not in valid_cases, name
    doc: dict[str, Any] = {"requests": list(requests)}
    if limits:
        doc["limits"] = limits
    valid_cases[name] = (raw, doc)


def invalid(
    name: str, raw: bytes, status: int, requests: int = 0, why: str = "", **limits: int
) -> None:
    """``why``: a substring the ProtocolError reason must contain (checked if given)."""
    assert name not in invalid_cases, name
    invalid_cases[name] = (raw, status, requests, why, limits)


H = b"Host: example.com"
HOST = [("host", "example.com")]
GET = b"GET / HTTP/1.1"
POST = b"POST / HTTP/1.1"
CHUNKED = b"Transfer-Encoding: chunked"
TE_HDR = [("host", "example.com"), ("transfer-encoding", "chunked")]


def post(body: bytes, headers: list[tuple[str, str]], **kw: Any) -> dict[str, Any]:
    return req("POST", "/", headers, body=body, **kw)


# ---------------------------------------------------------------- valid: basics
valid("get_simple", msg(GET, H), req())
valid(
    "get_five_headers",
    msg(
        b"GET /index.html?x=1&y=2 HTTP/1.1",
        H,
        b"User-Agent: curl/8.0",
        b"Accept: */*",
        b"Accept-Encoding: gzip, br",
        b"Cookie: a=b; c=d",
    ),
    req(
        "GET",
        "/index.html?x=1&y=2",
        [
            ("host", "example.com"),
            ("user-agent", "curl/8.0"),
            ("accept", "*/*"),
            ("accept-encoding", "gzip, br"),
            ("cookie", "a=b; c=d"),
        ],
    ),
)
valid(
    "get_http10_no_host",
    msg(b"GET /old HTTP/1.0"),
    req("GET", "/old", [], version=(1, 0), host=None),
)
valid(
    "get_http10_keep_alive",
    msg(b"GET / HTTP/1.0", b"Connection: Keep-Alive"),
    req(headers=[("connection", "Keep-Alive")], version=(1, 0), host=None, keep_alive=True),
)
valid(
    "get_http10_keep_alive_and_close",
    msg(b"GET / HTTP/1.0", b"Connection: keep-alive, close"),
    req(headers=[("connection", "keep-alive, close")], version=(1, 0), host=None, keep_alive=False),
)
valid(
    "get_http11_connection_close",
    msg(GET, H, b"Connection: close"),
    req(headers=HOST + [("connection", "close")], keep_alive=False),
)
valid(
    "connection_token_list_close",
    msg(GET, H, b"Connection: Upgrade,  CLOSE ", b"Upgrade: x"),
    req(headers=HOST + [("connection", "Upgrade,  CLOSE"), ("upgrade", "x")], keep_alive=False),
)
valid(
    "connection_two_lines_close",
    msg(GET, H, b"Connection: keep-alive", b"Connection: close"),
    req(headers=HOST + [("connection", "keep-alive"), ("connection", "close")], keep_alive=False),
)
valid("method_case_preserved", msg(b"get / HTTP/1.1", H), req("get"))
valid("method_extension_token", msg(b"M-SEARCH* / HTTP/1.1", H), req("M-SEARCH*"))
valid("origin_form_query", msg(b"GET /a/b?c=d?e HTTP/1.1", H), req("GET", "/a/b?c=d?e"))
valid("origin_form_empty_query", msg(b"GET /a? HTTP/1.1", H), req("GET", "/a?", path="/a"))
valid("target_obs_text", msg(b"GET /caf\xe9 HTTP/1.1", H), req("GET", "/caf\xe9"))

# ---------------------------------------------------------------- valid: leading CRLF
valid("leading_crlf_one", CRLF + msg(GET, H), req())
valid("leading_crlf_two", CRLF + CRLF + msg(GET, H), req())

# ---------------------------------------------------------------- valid: header syntax
valid(
    "header_ows_stripped",
    msg(GET, H, b"X-A: \t v a l \t ", b"X-B:no-space"),
    req(headers=HOST + [("x-a", "v a l"), ("x-b", "no-space")]),
)
valid(
    "header_empty_value",
    msg(GET, H, b"X-Empty:", b"X-Blank:  \t "),
    req(headers=HOST + [("x-empty", ""), ("x-blank", "")]),
)
valid(
    "header_value_obs_text",
    msg(GET, H, b"X-Name: J\xfcrgen \x80\xff"),
    req(headers=HOST + [("x-name", "J\xfcrgen \x80\xff")]),
)
valid(
    "header_name_case_folded",
    msg(GET, b"HOST: example.com", b"X-MiXeD-CaSe: KeepCase"),
    req(headers=[("host", "example.com"), ("x-mixed-case", "KeepCase")]),
)
valid(
    "header_name_tchars",
    msg(GET, H, b"!#$%&'*+-.^`|~09azAZ: t"),
    req(headers=HOST + [("!#$%&'*+-.^`|~09azaz", "t")]),
)
valid(
    "header_underscore_dropped",
    msg(
        GET,
        H,
        b"X_Forwarded_For: 6.6.6.6",
        b"X-Forwarded-For: 10.0.0.1",
        b"Content_Length: 10",
        b"Transfer_Encoding: chunked",
    ),
    req(headers=HOST + [("x-forwarded-for", "10.0.0.1")]),
)
valid(
    "header_trailing_ows_long",
    msg(GET, H, b"X-A: v" + b" \t" * 100, b"X-B: a b" + b" " * 300),
    req(headers=HOST + [("x-a", "v"), ("x-b", "a b")]),
)
valid(
    "header_names_any_case",
    msg(GET, b"hOsT: example.com", b"USER-AGENT: x", b"user-agent: y", b"Accept: z"),
    req(headers=HOST + [("user-agent", "x"), ("user-agent", "y"), ("accept", "z")]),
)
valid(
    "header_value_with_colon",
    msg(GET, H, b"X-Time: 12:30:00"),
    req(headers=HOST + [("x-time", "12:30:00")]),
)

# ---------------------------------------------------------------- valid: host/target forms
valid(
    "absolute_form",
    msg(b"GET http://origin.example:8080/p/q?r=1 HTTP/1.1", b"Host: other.example"),
    req(
        "GET",
        "http://origin.example:8080/p/q?r=1",
        [("host", "other.example")],
        path="/p/q",
        query="r=1",
        host="origin.example:8080",
    ),
)
valid(
    "absolute_form_empty_host_header",
    msg(b"GET http://origin.example/ HTTP/1.1", b"Host:"),
    req("GET", "http://origin.example/", [("host", "")], path="/", query="", host="origin.example"),
)
valid(
    "absolute_form_scheme_any_case",
    msg(b"GET HTTPS://origin.example/a HTTP/1.1", H),
    req("GET", "HTTPS://origin.example/a", path="/a", query="", host="origin.example"),
)
valid(
    "host_port_65535",
    msg(GET, b"Host: example.com:65535"),
    req("GET", "/", [("host", "example.com:65535")], host="example.com:65535"),
)
valid(
    "absolute_form_no_path",
    msg(b"GET https://origin.example HTTP/1.1", H),
    req("GET", "https://origin.example", path="/", query="", host="origin.example"),
)
valid(
    "absolute_form_query_only",
    msg(b"GET http://origin.example?x=y HTTP/1.1", H),
    req("GET", "http://origin.example?x=y", path="/", query="x=y", host="origin.example"),
)
valid(
    "absolute_form_http10_no_host",
    msg(b"GET http://origin.example/a HTTP/1.0"),
    req(
        "GET",
        "http://origin.example/a",
        [],
        path="/a",
        query="",
        version=(1, 0),
        host="origin.example",
    ),
)
valid("options_asterisk", msg(b"OPTIONS * HTTP/1.1", H), req("OPTIONS", "*", path="*", query=""))
valid(
    "connect_authority_form",
    msg(b"CONNECT origin.example:443 HTTP/1.1", b"Host: origin.example:443"),
    req(
        "CONNECT",
        "origin.example:443",
        [("host", "origin.example:443")],
        path="",
        query="",
        host="origin.example:443",
    ),
)
valid(
    "host_ipv6_port",
    msg(GET, b"Host: [2001:db8::1]:8080"),
    req(headers=[("host", "[2001:db8::1]:8080")], host="[2001:db8::1]:8080"),
)
valid(
    "host_ipv4_port",
    msg(GET, b"Host: 192.0.2.7:80"),
    req(headers=[("host", "192.0.2.7:80")], host="192.0.2.7:80"),
)
valid(
    "host_pct_encoded_reg_name",
    msg(GET, b"Host: ex%41mple.com"),
    req(headers=[("host", "ex%41mple.com")], host="ex%41mple.com"),
)

# ---------------------------------------------------------------- valid: expect
valid(
    "expect_100_continue",
    msg(b"PUT /u HTTP/1.1", H, b"Expect: 100-Continue", b"Content-Length: 2", body=b"ok"),
    req(
        "PUT",
        "/u",
        HOST + [("expect", "100-Continue"), ("content-length", "2")],
        content_length=2,
        expect_continue=True,
        body=b"ok",
    ),
)
valid(
    "expect_100_continue_http10_ignored",
    msg(b"PUT /u HTTP/1.0", b"Expect: 100-continue", b"Content-Length: 2", body=b"ok"),
    req(
        "PUT",
        "/u",
        [("expect", "100-continue"), ("content-length", "2")],
        version=(1, 0),
        host=None,
        content_length=2,
        body=b"ok",
    ),
)

# ---------------------------------------------------------------- valid: Content-Length
valid(
    "cl_zero",
    msg(POST, H, b"Content-Length: 0"),
    post(b"", HOST + [("content-length", "0")], content_length=0),
)
valid(
    "post_content_length",
    msg(POST, H, b"Content-Length: 11", body=b"hello world"),
    post(b"hello world", HOST + [("content-length", "11")], content_length=11),
)
valid(
    "cl_leading_zeros_decimal",
    msg(POST, H, b"Content-Length: 0010", body=b"0123456789"),
    post(b"0123456789", HOST + [("content-length", "0010")], content_length=10),
)
valid(
    "cl_list_equal_values",
    msg(POST, H, b"Content-Length: 5 ,\t5", b"Content-Length: 5", body=b"abcde"),
    post(
        b"abcde", HOST + [("content-length", "5 ,\t5"), ("content-length", "5")], content_length=5
    ),
)
valid(
    "cl_body_binary",
    msg(POST, H, b"Content-Length: 6", body=b"\r\n\x00\xff\n\r"),
    post(b"\r\n\x00\xff\n\r", HOST + [("content-length", "6")], content_length=6),
)

# ---------------------------------------------------------------- valid: chunked
valid(
    "chunked_simple",
    msg(POST, H, CHUNKED, body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    post(b"hello world", TE_HDR, chunked=True),
)
valid(
    "chunked_uppercase_hex_and_zero_padding",
    msg(POST, H, CHUNKED, body=b"0000A\r\n0123456789\r\naB\r\n" + b"x" * 171 + b"\r\n000\r\n\r\n"),
    post(b"0123456789" + b"x" * 171, TE_HDR, chunked=True),
)
valid(
    "chunked_extensions",
    msg(
        POST,
        H,
        CHUNKED,
        body=b'3;a=1;b="q \\" \\\\ ok";c\r\nabc\r\n2 ; d = "x" ;e=f\r\nde\r\n0;last\r\n\r\n',
    ),
    post(b"abcde", TE_HDR, chunked=True),
)
valid(
    "chunked_trailers",
    msg(
        POST,
        H,
        CHUNKED,
        body=b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nContent-Length: 99\r\nHost: evil\r\n"
        b"Transfer-Encoding: gzip\r\nAuthorization: x\r\nX_Under: 1\r\nX-Other:  v \r\n\r\n",
    ),
    post(b"abc", TE_HDR, chunked=True, trailers=[("x-checksum", "123"), ("x-other", "v")]),
)
valid("chunked_no_data", msg(POST, H, CHUNKED, body=b"0\r\n\r\n"), post(b"", TE_HDR, chunked=True))
valid(
    "te_case_insensitive",
    msg(POST, H, b"Transfer-Encoding: ChUnKeD", body=b"1\r\nz\r\n0\r\n\r\n"),
    post(b"z", HOST + [("transfer-encoding", "ChUnKeD")], chunked=True),
)
valid(
    "te_empty_elements_chunked",
    msg(POST, H, b"Transfer-Encoding: , ,chunked,", body=b"1\r\nz\r\n0\r\n\r\n"),
    post(b"z", HOST + [("transfer-encoding", ", ,chunked,")], chunked=True),
)
valid(
    "te_empty_line_then_chunked",
    msg(POST, H, b"Transfer-Encoding:", CHUNKED, body=b"1\r\nz\r\n0\r\n\r\n"),
    post(b"z", HOST + [("transfer-encoding", ""), ("transfer-encoding", "chunked")], chunked=True),
)

# ---------------------------------------------------------------- valid: pipelining
valid(
    "pipelined_two_get",
    msg(b"GET /1 HTTP/1.1", H) + msg(b"GET /2 HTTP/1.1", H),
    req("GET", "/1"),
    req("GET", "/2"),
)
valid(
    # The parser validates a Host once per connection and value: each request is
    # still checked, whatever the previous ones carried.
    "pipelined_same_host_three_times",
    msg(GET, H)
    + msg(b"GET /2 HTTP/1.1", H, b"Connection: Keep-Alive")
    + msg(b"GET /3 HTTP/1.1", b"host: example.com", b"Connection: close"),
    req(),
    req("GET", "/2", HOST + [("connection", "Keep-Alive")]),
    req("GET", "/3", HOST + [("connection", "close")], keep_alive=False),
)
valid(
    "pipelined_three_with_bodies",
    msg(POST, H, b"Content-Length: 3", body=b"one")
    + msg(POST, H, CHUNKED, body=b"3\r\ntwo\r\n0\r\n\r\n")
    + msg(b"GET /three HTTP/1.1", H),
    post(b"one", HOST + [("content-length", "3")], content_length=3),
    post(b"two", TE_HDR, chunked=True),
    req("GET", "/three"),
)
valid(
    "pipelined_with_leading_crlf",
    msg(POST, H, b"Content-Length: 2", body=b"ab") + CRLF + CRLF + msg(GET, H),
    post(b"ab", HOST + [("content-length", "2")], content_length=2),
    req(),
)
valid(
    "pipelined_body_looks_like_request",
    msg(POST, H, b"Content-Length: 21", body=b"GET /x HTTP/1.1\r\n\r\n\r\n") + msg(GET, H),
    post(b"GET /x HTTP/1.1\r\n\r\n\r\n", HOST + [("content-length", "21")], content_length=21),
    req(),
)

# ---------------------------------------------------------------- valid: exactly at the limits
valid(
    "limit_request_line_exact",
    msg(b"GET /" + b"a" * 18 + b" HTTP/1.1", H),
    req("GET", "/" + "a" * 18),
    request_line=32,
)
valid(
    "limit_field_size_exact",
    msg(GET, H, b"X-A: " + b"v" * 12),
    req(headers=HOST + [("x-a", "v" * 12)]),
    field_size=17,
)
valid(
    "limit_fields_exact",
    msg(GET, H, b"A: 1", b"B: 2"),
    req(headers=HOST + [("a", "1"), ("b", "2")]),
    fields=3,
)
valid(
    "limit_body_cl_exact",
    msg(POST, H, b"Content-Length: 4", body=b"abcd"),
    post(b"abcd", HOST + [("content-length", "4")], content_length=4),
    body=4,
)
valid(
    "limit_body_chunked_exact",
    msg(POST, H, CHUNKED, body=b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
    post(b"abcd", TE_HDR, chunked=True),
    body=4,
)
valid(
    "limit_chunk_ext_exact",
    msg(POST, H, CHUNKED, body=b"1;abcdefgh\r\nz\r\n0\r\n\r\n"),
    post(b"z", TE_HDR, chunked=True),
    chunk_ext=10,
)

# ---------------------------------------------------------------- invalid: Content-Length
for name, value in [
    ("cl_plus_sign", b"+5"),
    ("cl_minus_sign", b"-5"),
    ("cl_underscore", b"1_0"),
    ("cl_hex_prefix", b"0x5"),
    ("cl_inner_space", b"1 0"),
    ("cl_empty", b""),
    ("cl_nonascii_digit", "\u0665".encode()),
    ("cl_nbsp_prefix", b"\xa05"),
    ("cl_vertical_tab", b"5\x0b"),
    ("cl_form_feed", b"\x0c5"),
    ("cl_19_digits", b"1" * 19),
    ("cl_4300_plus_digits", b"9" * 5000),
    ("cl_list_differs", b"5, 6"),
    ("cl_list_same_number_other_digits", b"005, 5"),
    ("cl_list_empty_element", b"5,,5"),
    ("cl_trailing_comma", b"5,"),
    ("cl_decimal_point", b"5.0"),
]:
    why = "header value" if any(c in b"\x0b\x0c" for c in value) else "Content-Length"
    invalid(name, msg(POST, H, b"Content-Length: " + value, body=b"hello"), 400, why=why)
invalid(
    "cl_duplicate_lines_differ",
    msg(POST, H, b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
    400,
)
invalid(
    "cl_duplicate_lines_same_number_other_digits",
    msg(POST, H, b"Content-Length: 5", b"Content-Length: 05", body=b"hello"),
    400,
    why="conflicting Content-Length",
)

# ---------------------------------------------------------------- invalid: Expect
# RFC 9110 §10.1.1: an expectation the server cannot meet gets 417, before the app.
for name, value in [
    ("expect_unknown_token", b"something-else"),
    ("expect_100_continue_with_parameter", b"100-continue; x=1"),
    ("expect_empty", b""),
]:
    invalid(name, msg(b"PUT /u HTTP/1.1", H, b"Expect: " + value, b"Content-Length: 2",
                      body=b"ok"), 417, why="expectation")

# ---------------------------------------------------------------- invalid: TE / smuggling
invalid(
    "smuggle_cl_te",
    msg(POST, H, b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\nX"),
    400,
    why="both Transfer-Encoding and Content-Length",
)
invalid(
    "smuggle_te_cl",
    msg(POST, H, CHUNKED, b"Content-Length: 3", body=b"8\r\nSMUGGLED\r\n0\r\n\r\n"),
    400,
)
invalid(
    "smuggle_cl_te_pipelined",
    msg(GET, H) + msg(POST, H, b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\nX"),
    400,
    requests=1,
)
invalid(
    "te_chunked_then_gzip",
    msg(POST, H, b"Transfer-Encoding: chunked, gzip"),
    400,
    why="final transfer coding",
)
invalid(
    "te_chunked_twice",
    msg(POST, H, b"Transfer-Encoding: chunked, chunked"),
    400,
    why="final transfer coding",
)
invalid("te_two_lines_chunked", msg(POST, H, CHUNKED, CHUNKED), 400, why="final transfer coding")
invalid(
    "te_gzip_only",
    msg(POST, H, b"Transfer-Encoding: gzip", body=b"x"),
    400,
    why="final transfer coding",
)
invalid(
    "te_identity_only",
    msg(POST, H, b"Transfer-Encoding: identity", body=b"x"),
    400,
    why="final transfer coding",
)
invalid(
    "te_empty", msg(POST, H, b"Transfer-Encoding: ", body=b"x"), 400, why="final transfer coding"
)
invalid(
    "te_gzip_then_chunked",
    msg(POST, H, b"Transfer-Encoding: gzip, chunked"),
    501,
    why="unsupported transfer coding",
)
invalid(
    "te_identity_then_chunked",
    msg(POST, H, b"Transfer-Encoding: identity", CHUNKED),
    501,
    why="unsupported transfer coding",
)
invalid(
    "te_xfoo_then_chunked",
    msg(POST, H, b"Transfer-Encoding: x-foo,chunked"),
    501,
    why="unsupported transfer coding",
)
invalid("te_http10", msg(b"POST / HTTP/1.0", CHUNKED, body=b"0\r\n\r\n"), 400, why="HTTP/1.0")
invalid("te_value_vertical_tab", msg(POST, H, b"Transfer-Encoding: chunked\x0b"), 400)
invalid(
    "te_value_nbsp", msg(POST, H, b"Transfer-Encoding: chunked\xa0"), 400, why="Transfer-Encoding"
)
invalid(
    "te_value_quoted", msg(POST, H, b'Transfer-Encoding: "chunked"'), 400, why="Transfer-Encoding"
)
invalid(
    "te_value_parameter",
    msg(POST, H, b"Transfer-Encoding: chunked;q=1"),
    400,
    why="Transfer-Encoding",
)
invalid(
    "te_value_space_separated",
    msg(POST, H, b"Transfer-Encoding: gzip chunked"),
    400,
    why="Transfer-Encoding",
)
invalid("te_name_nbsp", msg(POST, H, b"Transfer-Encoding\xa0: chunked"), 400, why="header")
invalid(
    "te_name_space_before_colon", msg(POST, H, b"Transfer-Encoding : chunked"), 400, why="header"
)
invalid("te_obs_fold", msg(POST, H, b"Transfer-Encoding: gzip,", b" chunked"), 400, why="obs-fold")

# ---------------------------------------------------------------- invalid: chunk framing
TE_POST = msg(POST, H, CHUNKED)
for name, line in [
    ("chunk_size_hex_prefix", b"0x5"),
    ("chunk_size_plus", b"+5"),
    ("chunk_size_minus", b"-5"),
    ("chunk_size_underscore", b"1_0"),
    ("chunk_size_leading_space", b" 5"),
    ("chunk_size_trailing_space", b"5 "),
    ("chunk_size_empty", b""),
    ("chunk_size_17_digits", b"0" * 16 + b"5"),
    ("chunk_size_4300_plus_digits", b"f" * 5000),
    ("chunk_size_nonascii_digit", "\u0665".encode()),
    ("chunk_ext_bare_cr", b"5;a\rb"),
    ("chunk_ext_no_name", b"5;"),
    ("chunk_ext_ctl_in_quoted", b'5;a="\x01"'),
    ("chunk_ext_unterminated_quote", b'5;a="b'),
    ("chunk_ext_space_in_token", b"5;a b"),
]:
    invalid(name, TE_POST + line + b"\r\nhello\r\n0\r\n\r\n", 400, why="chunk-size line")
invalid(
    "chunk_ext_trailing_whitespace",
    TE_POST + b"5;a=b\t\r\nhello\r\n0\r\n\r\n",
    400,
    why="chunk-size line",
)
invalid(
    "chunk_ext_too_long",
    TE_POST + b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
    400,
    why="too long",
)
invalid("chunk_line_bare_lf", TE_POST + b"5\nhello\r\n0\r\n\r\n", 400, why="bare LF")
invalid("chunk_ext_bare_lf", TE_POST + b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400, why="bare LF")
invalid(
    "chunk_data_bad_terminator",
    TE_POST + b"5\r\nhelloXX0\r\n\r\n",
    400,
    why="chunk data not followed by CRLF",
)
invalid(
    "chunk_data_bare_lf_terminator",
    TE_POST + b"5\r\nhello\n0\r\n\r\n",
    400,
    why="chunk data not followed by CRLF",
)
invalid(
    "chunk_data_longer_than_size",
    TE_POST + b"3\r\nhello\r\n0\r\n\r\n",
    400,
    why="chunk data not followed by CRLF",
)
invalid("chunk_last_bare_lf", TE_POST + b"0\n\n", 400, why="bare LF")
invalid("trailer_obs_fold", TE_POST + b"0\r\nX-A: 1\r\n folded\r\n\r\n", 400, why="obs-fold")
invalid("trailer_bare_lf", TE_POST + b"0\r\nX-A: 1\n\r\n", 400, why="bare LF")
invalid("trailer_space_before_colon", TE_POST + b"0\r\nX-A : 1\r\n\r\n", 400)

# ---------------------------------------------------------------- invalid: truncation (EOF)
invalid("truncated_head", b"GET / HTTP/1.1\r\nHost: exa", 400, why="truncated")
invalid("truncated_head_no_final_crlf", msg(GET, H)[:-2], 400, why="truncated")
invalid(
    "truncated_cl_body", msg(POST, H, b"Content-Length: 10", body=b"short"), 400, why="truncated"
)
invalid("truncated_chunk_data", TE_POST + b"a\r\nshort", 400, why="truncated")
invalid("truncated_chunk_size_line", TE_POST + b"5\r\nhello\r\n0", 400, why="truncated")
invalid("truncated_missing_last_chunk", TE_POST + b"5\r\nhello\r\n", 400, why="truncated")
invalid("truncated_missing_final_crlf", TE_POST + b"5\r\nhello\r\n0\r\n", 400, why="truncated")
invalid("truncated_in_trailer", TE_POST + b"0\r\nX-A: 1\r\n", 400, why="truncated")
invalid("truncated_second_pipelined_request", msg(GET, H) + b"GET /2 HTTP/1.1\r\n", 400, requests=1)

# ---------------------------------------------------------------- invalid: request line
invalid("reqline_bare_lf", b"GET / HTTP/1.1\nHost: example.com\r\n\r\n", 400, why="bare LF")
invalid("reqline_all_bare_lf", b"GET / HTTP/1.1\nHost: example.com\n\n", 400, why="bare LF")
invalid("reqline_bare_cr", msg(b"GET /\rx HTTP/1.1", H), 400)
invalid("reqline_double_space", msg(b"GET  / HTTP/1.1", H), 400)
invalid("reqline_tab_separator", msg(b"GET\t/ HTTP/1.1", H), 400)
invalid("reqline_trailing_space", msg(b"GET / HTTP/1.1 ", H), 400)
invalid("reqline_lowercase_version", msg(b"GET / http/1.1", H), 400)
invalid("reqline_http2_version", msg(b"GET / HTTP/2.0", H), 505, why="version")
invalid("reqline_http09_version", msg(b"GET / HTTP/0.9", H), 505, why="version")
invalid("reqline_version_two_digit_minor", msg(b"GET / HTTP/1.10", H), 400)
invalid("reqline_version_leading_zero", msg(b"GET / HTTP/01.1", H), 400)
invalid("reqline_missing_version", msg(b"GET /", H), 400)
invalid("reqline_target_ctl", msg(b"GET /a\x01b HTTP/1.1", H), 400)
invalid("reqline_target_del", msg(b"GET /a\x7fb HTTP/1.1", H), 400)
invalid("reqline_method_invalid_char", msg(b"GE(T / HTTP/1.1", H), 400)
invalid("target_relative", msg(b"GET foo/bar HTTP/1.1", H), 400, why="target")
invalid("target_asterisk_not_options", msg(b"GET * HTTP/1.1", H), 400, why="target")
invalid("target_authority_not_connect", msg(b"GET example.com:80 HTTP/1.1", H), 400, why="target")
invalid("target_connect_origin_form", msg(b"CONNECT / HTTP/1.1", H), 400, why="target")
invalid("target_connect_no_port", msg(b"CONNECT example.com HTTP/1.1", H), 400, why="target")
invalid(
    "target_absolute_userinfo", msg(b"GET http://u:p@example.com/ HTTP/1.1", H), 400, why="target"
)
invalid("target_absolute_empty_authority", msg(b"GET http:///x HTTP/1.1", H), 400, why="target")
invalid("leading_crlf_three", CRLF * 3 + msg(GET, H), 400)
invalid("leading_space", b" " + msg(GET, H), 400)
invalid("leading_bare_lf", b"\n" + msg(GET, H), 400, why="bare LF")
invalid("leading_junk_then_request", b"xx" + CRLF + msg(GET, H), 400)

# ---------------------------------------------------------------- invalid: header lines
invalid("header_space_before_colon", msg(GET, H, b"X-A : 1"), 400, why="whitespace before colon")
invalid("header_tab_before_colon", msg(GET, H, b"X-A\t: 1"), 400, why="whitespace before colon")
invalid("header_obs_fold", msg(GET, H, b"X-A: 1", b"\tcontinued"), 400, why="obs-fold")
invalid("header_first_line_whitespace", msg(GET, b" X-A: 1", H), 400, why="leading whitespace")
invalid("header_nul_in_value", msg(GET, H, b"X-A: a\x00b"), 400)
invalid("header_bare_cr_in_value", msg(GET, H, b"X-A: a\rb"), 400)
invalid("header_del_in_value", msg(GET, H, b"X-A: a\x7fb"), 400)
invalid(
    "header_bare_lf_line",
    b"GET / HTTP/1.1\r\nHost: example.com\nX-A: 1\r\n\r\n",
    400,
    why="bare LF",
)
invalid("header_name_nonascii", msg(GET, H, b"X-\xe9: 1"), 400)
invalid("header_name_slash", msg(GET, H, b"X/A: 1"), 400)
invalid("header_no_colon", msg(GET, H, b"X-A 1"), 400)
invalid("header_empty_name", msg(GET, H, b": 1"), 400)
invalid(
    "content_type_duplicate",
    msg(POST, H, b"Content-Type: a/b", b"Content-Type: c/d"),
    400,
    why="Content-Type",
)

# ---------------------------------------------------------------- invalid: Host
invalid("host_missing_http11", msg(GET, b"Accept: */*"), 400, why="Host")
invalid("host_duplicate", msg(GET, H, H), 400, why="Host")
invalid("host_duplicate_http10", msg(b"GET / HTTP/1.0", H, b"Host: other"), 400, why="Host")
invalid("host_with_slash", msg(GET, b"Host: example.com/x"), 400, why="Host")
invalid("host_with_userinfo", msg(GET, b"Host: user@example.com"), 400, why="Host")
invalid("host_with_inner_space", msg(GET, b"Host: exa mple.com"), 400, why="Host")
invalid("host_empty_origin_form", msg(GET, b"Host:"), 400, why="Host")
invalid("host_bad_port", msg(GET, b"Host: example.com:http"), 400, why="Host")
invalid("host_absolute_form_missing", msg(b"GET http://origin.example/ HTTP/1.1"), 400, why="Host")
invalid("host_invalid_after_valid", msg(GET, H) + msg(GET, b"Host: exa mple.com"), 400, 1, "Host")
invalid("host_empty_after_valid", msg(GET, H) + msg(GET, b"Host:"), 400, 1, "invalid Host")
invalid("host_missing_after_valid", msg(GET, H) + msg(GET, b"Accept: */*"), 400, 1, "missing Host")
invalid("host_port_above_65535", msg(GET, b"Host: example.com:65536"), 400, why="Host")
invalid("host_ipv6_not_an_address", msg(GET, b"Host: [:::]"), 400, why="Host")
invalid("target_absolute_other_scheme", msg(b"GET foo://evil.example/ HTTP/1.1", H), 400,
        why="target")
invalid("target_absolute_bad_ipv6", msg(b"GET http://[1.2]/ HTTP/1.1", H), 400, why="target")

# ---------------------------------------------------------------- invalid: limits
RL_LONG, FIELD_LONG, FIELDS_MANY, BODY_BIG = (
    "request line too long",
    "header line too long",
    "too many",
    "body too large",
)
invalid("limit_request_line_414", msg(b"GET /" + b"a" * 9000 + b" HTTP/1.1", H), 414, why=RL_LONG)
invalid(
    "limit_request_line_small_414",
    msg(b"GET /" + b"a" * 19 + b" HTTP/1.1", H),
    414,
    why=RL_LONG,
    request_line=32,
)
invalid(
    "limit_request_line_unterminated_414", b"GET /" + b"a" * 40, 414, why=RL_LONG, request_line=32
)
invalid(
    "limit_request_line_bare_lf_after_limit_414",
    b"GET /" + b"a" * 40 + b"\n",
    414,
    why=RL_LONG,
    request_line=32,
)
invalid("limit_header_line_431", msg(GET, H, b"X-A: " + b"v" * 9000), 431, why=FIELD_LONG)
invalid(
    "limit_header_line_small_431",
    msg(GET, H, b"X-A: " + b"v" * 13),
    431,
    why=FIELD_LONG,
    field_size=17,
)
invalid(
    "limit_header_line_unterminated_431",
    msg(GET, H)[:-2] + b"X-A: " + b"v" * 40,
    431,
    why=FIELD_LONG,
    field_size=17,
)
invalid(
    "limit_fields_101", msg(GET, H, *(b"X-%d: v" % i for i in range(100))), 431, why=FIELDS_MANY
)
invalid(
    "limit_fields_small_431", msg(GET, H, b"A: 1", b"B: 2", b"C: 3"), 431, why=FIELDS_MANY, fields=3
)
invalid(
    "limit_error_order_400_before_431",
    msg(GET, H, b"Bad Name: 1", b"X-A: " + b"v" * 40),
    400,
    why="header name",
    field_size=17,
)
invalid(
    "limit_body_cl_413",
    msg(POST, H, b"Content-Length: 5", body=b"abcde"),
    413,
    why=BODY_BIG,
    body=4,
)
invalid(
    "limit_body_cl_huge_413",
    msg(POST, H, b"Content-Length: 999999999999999999"),
    413,
    why=BODY_BIG,
    body=1 << 20,
)
invalid(
    "limit_body_chunked_413",
    TE_POST + b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n",
    413,
    why=BODY_BIG,
    body=4,
)
invalid(
    "limit_body_chunked_huge_size_413",
    TE_POST + b"ffffffffffffffff\r\nab",
    413,
    why=BODY_BIG,
    body=1 << 20,
)
invalid(
    "limit_body_chunked_second_request_413",
    msg(POST, H, b"Content-Length: 4", body=b"abcd") + TE_POST + b"5\r\nhello\r\n0\r\n\r\n",
    413,
    requests=1,
    why=BODY_BIG,
    body=4,
)
invalid(
    "limit_trailer_fields_431",
    TE_POST + b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
    431,
    why="too many trailer fields",
    fields=3,
)
invalid(
    "limit_trailer_line_431",
    TE_POST + b"0\r\nX-A: " + b"v" * 40 + b"\r\n\r\n",
    431,
    why="trailer line too long",
    field_size=26,
)


def main() -> None:
    for sub in ("valid", "invalid"):
        shutil.rmtree(ROOT / sub, ignore_errors=True)
        (ROOT / sub).mkdir(parents=True)
    for name, (raw, doc) in valid_cases.items():
        (ROOT / "valid" / f"{name}.http").write_bytes(raw)
        text = json.dumps(doc, indent=1, ensure_ascii=True) + "\n"
        (ROOT / "valid" / f"{name}.json").write_text(text, encoding="ascii")
    for name, (raw, status, requests, why, limits) in invalid_cases.items():
        meta = b"# status: %d\n" % status
        if requests:
            meta += b"# requests: %d\n" % requests
        if why:
            meta += b"# reason: " + why.encode("ascii") + b"\n"
        if limits:
            meta += b"# limits: " + " ".join(f"{k}={v}" for k, v in limits.items()).encode() + b"\n"
        (ROOT / "invalid" / f"{name}.http").write_bytes(meta + raw)
    print(f"{len(valid_cases)} valid, {len(invalid_cases)} invalid cases in {ROOT}")


if __name__ == "__main__":
    main()
