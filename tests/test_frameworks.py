"""Real frameworks, unmodified, under the real server: examples/flask_app.py and
examples/django_project/ (Flask and Django come with the `test` extra).

One server per framework for the whole module. Each test speaks HTTP/1.1 over one
keep-alive connection where it makes several requests, as a browser would.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import DEADLINE, REPO, Server

EXAMPLES = REPO / "examples"
DJANGO_DIR = EXAMPLES / "django_project"
BIG = (EXAMPLES / "static" / "big.txt").read_bytes()


@dataclass
class Site:
    server: Server
    name: str  # "Flask" or "Django"

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=DEADLINE)


@pytest.fixture(scope="module")
def flask_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = Server(tmp_path_factory.mktemp("flask"), "examples.flask_app:app", workers=2)
    try:
        server.wait_ready()
        yield Site(server, "Flask")
    finally:
        server.close()


@pytest.fixture(scope="module")
def django_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = Server(tmp_path_factory.mktemp("django"), "mysite.wsgi:application",
                    "--chdir", str(DJANGO_DIR), workers=2)
    try:
        server.wait_ready()
        yield Site(server, "Django")
    finally:
        server.close()


@pytest.fixture(params=["flask_site", "django_site"])
def site(request: pytest.FixtureRequest) -> Site:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def _get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
         ) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def _csrf(site: Site, conn: http.client.HTTPConnection) -> dict[str, str]:
    """Django: the CSRF cookie and form token from GET /form (Flask has no CSRF)."""
    if site.name != "Django":
        return {}
    resp, body = _get(conn, "/form")
    assert resp.status == 200
    cookie = resp.getheader("Set-Cookie") or ""
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert cookie.startswith("csrftoken=") and match, body
    return {"cookie": cookie.split(";", 1)[0], "token": match.group(1).decode()}


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def test_get_a_page(site: Site) -> None:
    conn = site.connect()
    try:
        for _ in range(3):  # one keep-alive connection, three requests
            resp, body = _get(conn, "/")
            assert resp.status == 200
            assert body.startswith(f"Hello from {site.name}, worker pid".encode())
    finally:
        conn.close()


def test_post_a_form(site: Site) -> None:
    conn = site.connect()
    try:
        csrf = _csrf(site, conn)
        fields = {"name": "Ada Lovelace"}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if csrf:
            fields["csrfmiddlewaretoken"] = csrf["token"]
            headers["Cookie"] = csrf["cookie"]
        body = "&".join(f"{k}={v.replace(' ', '+')}" for k, v in fields.items())
        conn.request("POST", "/form", body=body, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        assert b"<p>Hello, Ada Lovelace!</p>" in resp.read()
    finally:
        conn.close()


def test_django_refuses_a_form_post_without_its_csrf_token(django_site: Site) -> None:
    status, _ = django_site.server.request(
        "/form", "POST", b"name=Mallory",
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403


def test_upload_a_file(site: Site) -> None:
    data = os.urandom(300_000)
    conn = site.connect()
    try:
        csrf = _csrf(site, conn)
        fields = {"csrfmiddlewaretoken": csrf["token"]} if csrf else {}
        content_type, body = _multipart(fields, "random.bin", data)
        headers = {"Content-Type": content_type}
        if csrf:
            headers["Cookie"] = csrf["cookie"]
        conn.request("POST", "/upload", body=body, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"filename": "random.bin", "size": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()}
    finally:
        conn.close()


def test_streamed_response_is_chunked(site: Site) -> None:
    conn = site.connect()
    try:
        resp, body = _get(conn, "/stream?n=50")
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.getheader("Content-Length") is None
        lines = body.decode().splitlines()
        assert [line.split(" at ")[0] for line in lines] == [f"line {i}" for i in range(50)]
    finally:
        conn.close()


def test_static_file(site: Site) -> None:
    conn = site.connect()
    try:
        for _ in range(2):  # the connection stays usable after a sendfile body
            resp, body = _get(conn, "/static/big.txt")
            assert resp.status == 200
            assert resp.getheader("Content-Length") == str(len(BIG))
            assert body == BIG
        resp, body = _get(conn, "/static/hello.txt")
        assert body == b"Hello from a static file.\n"
    finally:
        conn.close()


# Static files reach prefork as its wsgi.file_wrapper (so connection.py can sendfile them):
# checked by calling each framework with an environ that carries prefork's FileWrapper.
FILE_WRAPPER_CHECK = """
import sys
from prefork.wsgi import FileWrapper
from wsgiref.util import setup_testing_defaults
environ = {"PATH_INFO": "/static/big.txt", "HTTP_HOST": "127.0.0.1",
           "wsgi.file_wrapper": FileWrapper}
setup_testing_defaults(environ)
module, _, name = sys.argv[1].partition(":")
app = getattr(__import__(module, fromlist=[name]), name)
result = app(environ, lambda status, headers, exc_info=None: None)
print(type(result).__module__, type(result).__name__, result.fileno() is not None)
"""


@pytest.mark.parametrize(("spec", "cwd"), [
    ("examples.flask_app:app", REPO), ("mysite.wsgi:application", DJANGO_DIR),
])
def test_static_files_use_the_file_wrapper(spec: str, cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), str(REPO)]))
    out = subprocess.run([sys.executable, "-c", FILE_WRAPPER_CHECK, spec], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=DEADLINE)
    assert out.stdout.split() == ["prefork.wsgi", "FileWrapper", "True"], out.stderr
