"""--threads N: requests run in a pool, idle connections cost no thread, stuck threads are seen."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.harness import DEADLINE, wait_for
from tests.test_master import hold, read_response


def test_one_worker_serves_requests_concurrently(servers, tmp_path: Path) -> None:
    server = servers("tests.apps:app", "--threads", "3", workers=1)
    server.wait_ready()
    (pid,) = server.wait_workers(1)
    held = [hold(server, tmp_path / f"held{i}") for i in range(3)]
    assert {p for _, p in held} == {pid}  # three requests in flight in one process
    for i, (conn, _) in enumerate(held):
        (tmp_path / f"held{i}").unlink()
        assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
        conn.close()


def test_idle_keepalive_connections_cost_no_thread(servers) -> None:
    server = servers("tests.apps:app", "--threads", "2", "--keep-alive", "30", workers=1)
    server.wait_ready()
    idle = []
    for _ in range(8):  # four times as many open connections as threads
        conn = socket.create_connection(("127.0.0.1", server.port), DEADLINE)
        conn.settimeout(DEADLINE)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
        idle.append(conn)
    assert server.request("/")[0] == 200  # still served while 8 connections sit idle
    for conn in idle:  # and every idle connection can still be used
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
        conn.close()


def test_environ_says_multithread(servers) -> None:
    server = servers("tests.apps:app", "--threads", "2", workers=1)
    server.wait_ready()
    assert server.request("/multithread") == (200, b"True")


def test_stuck_thread_gets_the_worker_replaced(servers, tmp_path: Path) -> None:
    server = servers("tests.apps:app", "--threads", "2", "--timeout", "2", workers=1)
    server.wait_ready()
    (victim,) = server.wait_workers(1)
    with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as conn:
        conn.sendall(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n")
        # The other thread keeps serving while the first one spins...
        assert server.request("/")[0] == 200
        # ...but the worker stops beating, gets its stacks dumped and is replaced.
        server.wait_log(r"stopping heartbeats so the master replaces this worker")
        server.wait_log(rf"stack dump of worker slot=1 pid={victim}[^\n]*\n[\s\S]*spin_forever")
    server.wait_workers(1, exclude={victim})
    assert server.request("/")[0] == 200


def test_threaded_tcp_handlers(servers) -> None:
    server = servers("tests.apps:echo", "--protocol", "tcp", "--threads", "3", workers=1)
    server.wait_ready()
    conns = [socket.create_connection(("127.0.0.1", server.port), DEADLINE) for _ in range(3)]
    try:
        for i, conn in enumerate(conns):  # all three open at once, in one worker
            conn.settimeout(DEADLINE)
            conn.sendall(b"hello %d" % i)
        for i, conn in enumerate(conns):
            assert conn.recv(100) == b"hello %d" % i
    finally:
        for conn in conns:
            conn.close()


def test_graceful_stop_waits_for_threaded_requests(servers, tmp_path: Path) -> None:
    server = servers("tests.apps:app", "--threads", "2", workers=1)
    server.wait_ready()
    first, _ = hold(server, tmp_path / "a")
    second, _ = hold(server, tmp_path / "b")
    server.kill(signal.SIGTERM)
    server.notify.wait("STOPPING=1")
    for name, conn in (("a", first), ("b", second)):
        (tmp_path / name).unlink()
        assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
        conn.close()
    assert server.wait_exit() == 0
    wait_for(lambda: not server.survivors(), what="every process gone")


def read_responses(conn: socket.socket, count: int) -> list[bytes]:
    """`count` responses with Content-Length bodies, in order (the bodies)."""
    data, bodies = b"", []
    while len(bodies) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) if sep else -1
        if sep and len(rest) >= length:
            assert head.startswith(b"HTTP/1.1 200 OK"), head
            bodies.append(rest[:length])
            data = rest[length:]
            continue
        chunk = conn.recv(65536)
        assert chunk, f"EOF after {len(bodies)} of {count} responses"
        data += chunk
    return bodies


def test_pipelined_and_queued_requests_are_not_a_stuck_thread(servers) -> None:
    """Each request is timed from its own start: requests pipelined on one connection, or
    queued for a free thread, do not add up to --timeout (they used to: the worker was
    killed serving healthy 0.3 s requests)."""
    server = servers("tests.apps:app", "--threads", "2", "--timeout", "2", workers=1)
    server.wait_ready()
    (pid,) = server.wait_workers(1)
    with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as conn:
        conn.settimeout(DEADLINE)
        conn.sendall(b"GET /sleep?0.3 HTTP/1.1\r\nHost: t\r\n\r\n" * 12)  # 3.6 s in all
        assert read_responses(conn, 12) == [b"slept 0.3"] * 12
    # 16 connections at once on 2 threads: the last waits ~4 s in the queue.
    conns = [socket.create_connection(("127.0.0.1", server.port), DEADLINE)
             for _ in range(16)]
    for conn in conns:
        conn.settimeout(DEADLINE)
        conn.sendall(b"GET /sleep?0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
    for conn in conns:
        assert read_responses(conn, 1) == [b"slept 0.5"]
        conn.close()
    assert server.worker_pids() == {pid}
    assert "no progress" not in server.log()


def test_a_worker_at_worker_connections_leaves_new_ones_to_its_siblings(servers) -> None:
    """--worker-connections 1: a worker holding an idle keep-alive connection stops
    accepting, so the next connection is always another worker's (without the cap, the
    kernel may hand it to either)."""
    server = servers("tests.apps:app", "--worker-connections", "1", "--keep-alive", "30",
                     workers=2)
    server.wait_ready()
    server.wait_workers(2)
    for _ in range(6):
        first = socket.create_connection(("127.0.0.1", server.port), DEADLINE)
        second = socket.create_connection(("127.0.0.1", server.port), DEADLINE)
        pids = []
        for conn in (first, second):
            conn.settimeout(DEADLINE)
            conn.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            pids.append(read_responses(conn, 1)[0])
        assert pids[0] != pids[1]
        # Both workers are at the cap: a third connection waits in the accept queue
        # until one of them lets its connection go.
        third = socket.create_connection(("127.0.0.1", server.port), DEADLINE)
        third.settimeout(DEADLINE)
        third.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        first.close()
        assert read_responses(third, 1)[0] == pids[0]
        second.close()
        third.close()
