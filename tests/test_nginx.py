"""nginx in front of prefork over a unix socket, with examples/nginx.conf itself.

nginx runs as our own subprocess (foreground, its own prefix, pid file, logs and temp
paths under tmp_path, a loopback high port): no system service, no port 80. `.ci/run`
installs Debian's nginx; without it these tests skip and say why.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import DEADLINE, REPO, Server, wait_for

EXAMPLE = REPO / "examples" / "nginx.conf"


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
        None)


NGINX = _nginx()
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx with "
                          "apt-get; it could not here)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def render_config(tmp: Path, upstream: Path, port: int, static: Path) -> str:
    """examples/nginx.conf with this test's socket, port and paths, in a main config."""
    site = EXAMPLE.read_text()
    for old, new in (("unix:/run/prefork/prefork.sock", f"unix:{upstream}"),
                     ("listen 80;", f"listen 127.0.0.1:{port};"),
                     ("/srv/myapp/static/", f"{static}/")):
        assert old in site, f"examples/nginx.conf no longer has {old!r}"
        site = site.replace(old, new)
    user = "user root root;" if os.geteuid() == 0 else ""  # else workers run as nobody
    return f"""
{user}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{site}
}}
"""


@dataclass
class Front:
    prefork: Server
    port: int
    socket_path: Path
    tmp: Path

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)

    def get(self, path: str, headers: dict[str, str] | None = None
            ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = self.connect()
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp, resp.read()
        finally:
            conn.close()

    def upstream_connections(self) -> set[str]:
        """Inodes of connected sockets accepted on prefork's unix socket (/proc/net/unix:
        an accepted socket shows its listener's path; state 03 is connected)."""
        inodes = set()
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == str(self.socket_path) and fields[5] == "03":
                inodes.add(fields[6])
        return inodes


def _start_nginx(tmp: Path, upstream: Path, static: Path) -> tuple[subprocess.Popen[bytes], int]:
    assert NGINX is not None
    for _ in range(3):  # the port is picked free, but someone may take it first
        port = _free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(render_config(tmp, upstream, port, static))
        (tmp / "error.log").write_text("")
        with open(tmp / "nginx.stderr", "wb") as err:
            proc = subprocess.Popen([NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"),
                                     "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        # nginx writes its pid file after it has bound its listeners.
        wait_for(lambda p=proc: (tmp / "nginx.pid").exists() or p.poll() is not None,
                 what="nginx to start")
        if proc.poll() is None:
            return proc, port
        if "Address already in use" not in (tmp / "error.log").read_text():
            raise AssertionError("nginx did not start:\n" + (tmp / "error.log").read_text()
                                 + (tmp / "nginx.stderr").read_text())
    raise AssertionError("no free port for nginx after 3 tries")


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    tmp = tmp_path_factory.mktemp("nginx")
    sock = tmp / "prefork.sock"
    static = tmp / "static"
    static.mkdir()
    (static / "hello.txt").write_text("static from nginx\n")
    server = Server(tmp, "tests.apps:app", "--bind", f"unix:{sock}", workers=2, listen=False)
    nginx = None
    try:
        server.wait_ready()
        nginx, port = _start_nginx(tmp, sock, static)
        yield Front(server, port, sock, tmp)
    finally:
        if nginx is not None:
            nginx.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                nginx.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        server.close()


def test_nginx_config_is_valid(front: Front) -> None:
    assert NGINX is not None
    out = subprocess.run([NGINX, "-t", "-p", str(front.tmp), "-e", str(front.tmp / "t.log"),
                          "-c", str(front.tmp / "nginx.conf")], capture_output=True, text=True,
                         timeout=DEADLINE)
    assert out.returncode == 0, out.stderr


def test_requests_pass_through(front: Front) -> None:
    resp, body = front.get("/")
    assert resp.status == 200
    assert resp.getheader("Server", "").startswith("nginx")
    assert body.startswith(b"hello from ")
    worker = int(body.split()[-1])
    assert worker in front.prefork.worker_pids()


def test_large_body_is_buffered_by_nginx_and_arrives_whole(front: Front) -> None:
    data = os.urandom(3 * 1024 * 1024)
    conn = front.connect()
    try:
        conn.request("POST", "/echo", body=data)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == data
    finally:
        conn.close()


def test_static_files_are_served_by_nginx(front: Front) -> None:
    resp, body = front.get("/static/hello.txt")
    assert resp.status == 200 and body == b"static from nginx\n"


def test_forwarded_headers_give_the_client_address_and_scheme(front: Front) -> None:
    resp, body = front.get("/env")
    env = dict(line.split("=", 1) for line in body.decode().splitlines())
    assert env["REMOTE_ADDR"] == "127.0.0.1"  # the client of nginx, not "" (unix peer)
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(front.port)


def test_a_client_cannot_spoof_its_address_or_scheme(front: Front) -> None:
    resp, body = front.get("/env", {"X-Forwarded-For": "6.6.6.6",
                                    "X-Forwarded-Proto": "https"})
    env = dict(line.split("=", 1) for line in body.decode().splitlines())
    # nginx appends the real peer to X-Forwarded-For and prefork takes that last hop;
    # nginx replaces X-Forwarded-Proto with its own $scheme.
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


def test_keep_alive_on_both_sides(front: Front) -> None:
    """One client connection to nginx carries many requests, and nginx carries them to
    prefork over one pooled upstream connection that stays open between requests."""
    conn = front.connect()
    try:
        conn.request("GET", "/")
        first = conn.getresponse()
        assert first.status == 200 and first.getheader("Connection") != "close"
        first.read()
        client_sock = conn.sock
        pooled = wait_for(front.upstream_connections, what="an idle upstream connection")
        for _ in range(20):
            conn.request("GET", "/pid")
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
        assert conn.sock is client_sock  # http.client did not reconnect
        assert front.upstream_connections() == pooled  # the same upstream connection
    finally:
        conn.close()


def test_prefork_reload_behind_nginx_fails_no_request(front: Front) -> None:
    """kill -HUP while requests flow through nginx: every request answered with 200."""
    import signal

    conn = front.connect()
    before = front.prefork.worker_pids()
    statuses = []
    try:
        front.prefork.kill(signal.SIGHUP)
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            conn.request("GET", "/pid")
            resp = conn.getresponse()
            statuses.append(resp.status)
            resp.read()
            now = front.prefork.worker_pids()
            if len(now) == 2 and not now & before:
                break
        else:
            raise AssertionError("the new generation did not take over")
        for _ in range(5):
            conn.request("GET", "/pid")
            resp = conn.getresponse()
            statuses.append(resp.status)
            resp.read()
    finally:
        conn.close()
    assert set(statuses) == {200}
