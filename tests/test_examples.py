"""The small examples run as the README says: hello, cpu_bound, echo_server (TCP)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.harness import DEADLINE, Server


def test_hello(tmp_path: Path) -> None:
    server = Server(tmp_path, "examples.hello:app", workers=2)
    try:
        server.wait_ready()
        status, body = server.request("/")
        assert status == 200 and body.startswith(b"Hello, world! (worker pid ")
    finally:
        server.close()


def test_cpu_bound(tmp_path: Path) -> None:
    server = Server(tmp_path, "examples.cpu_bound:app", "--threads", "2", workers=1,
                    env={"CPU_BOUND_WORK": "1000"})
    try:
        server.wait_ready()
        status, body = server.request("/")
        assert status == 200 and b" from pid " in body
        status, body = server.request("/wait?ms=1")
        assert status == 200 and body.startswith(b"waited 1 ms in pid ")
    finally:
        server.close()


def test_echo_server(tmp_path: Path) -> None:
    server = Server(tmp_path, "examples.echo_server:handle", "--protocol", "tcp", workers=2)
    try:
        server.wait_ready()
        with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as client:
            greeting = b""
            while not greeting.endswith(b"\n"):
                greeting += client.recv(100)
            assert greeting.startswith(b"echo server, worker pid ")
            client.sendall(b"ping\n")
            echoed = b""
            while len(echoed) < 5:
                echoed += client.recv(100)
            assert echoed == b"ping\n"
    finally:
        server.close()
