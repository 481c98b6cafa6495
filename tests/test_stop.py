"""Stopping without losing anyone: the accept queue is served, and the lame-duck delay."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.harness import DEADLINE, Server, wait_for
from tests.test_master import hold, read_response


def stop_with_a_queue(server: Server, marker: Path, paths: list[str]) -> list[bytes]:
    """Hold the only worker in the app, queue a request for each path in the kernel's
    accept queue, send TERM, release the worker: the responses of the queued requests."""
    busy, _ = hold(server, marker)  # the only worker is inside the app
    queued = []
    for path in paths:  # these wait in the kernel's accept queue, not yet accepted
        conn = socket.create_connection(("127.0.0.1", server.port), DEADLINE)
        conn.settimeout(DEADLINE)
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        queued.append(conn)
    server.kill(signal.SIGTERM)
    server.notify.wait("STOPPING=1")
    marker.unlink()
    assert read_response(busy).startswith(b"HTTP/1.1 200 OK")
    responses = []
    for conn in queued:
        responses.append(read_response(conn))
        conn.close()
    busy.close()
    return responses


def test_graceful_stop_serves_the_whole_accept_queue(servers, tmp_path: Path) -> None:
    server = servers("tests.apps:app", workers=1)
    server.wait_ready()
    responses = stop_with_a_queue(server, tmp_path / "held", [f"/pid?{i}" for i in range(20)])
    for response in responses:
        assert response.startswith(b"HTTP/1.1 200 OK"), response
        assert b"Connection: close" in response  # served after the worker had the TERM
    assert server.wait_exit() == 0


def test_drain_delay_keeps_serving_new_connections_after_term(servers) -> None:
    server = servers("tests.apps:app", "--drain-delay", "2", workers=2)
    server.wait_ready()
    server.kill(signal.SIGTERM)
    server.notify.wait("STOPPING=1")
    stopped_at = time.monotonic()
    server.wait_log(r"graceful stop in 2\.0 s \(--drain-delay\)")
    # Lame duck: a brand-new connection is still accepted and answered.
    assert server.request("/")[0] == 200
    assert server.wait_exit() == 0
    assert time.monotonic() - stopped_at >= 2.0 - 0.1
    assert "graceful stop\n" in server.log() or "INFO graceful stop" in server.log()


def test_quick_stop_during_drain_delay_does_not_wait(servers) -> None:
    server = servers("tests.apps:app", "--drain-delay", "60", workers=1)
    server.wait_ready()
    server.kill(signal.SIGTERM)
    server.notify.wait("STOPPING=1")
    server.kill(signal.SIGINT)
    assert server.wait_exit() == 0


def test_fork_failure_is_retried_with_backoff_and_heals(servers) -> None:
    """fork() failing with EAGAIN (a cgroup pids.max): no busy loop, no exit, top-up later."""
    root = Path("/sys/fs/cgroup/pids")
    group = root / f"prefork-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a pids cgroup here ({exc.strerror}); needs cgroup v1 pids")
    server = servers("tests.apps:app", workers=1)
    try:
        server.wait_ready()
        (worker,) = server.wait_workers(1)
        (group / "pids.max").write_text("2\n")  # the master and its one worker, no more
        for pid in (server.pid, worker):
            (group / "cgroup.procs").write_text(f"{pid}\n")
        server.kill(signal.SIGTTIN)
        server.wait_log(r"fork\(\): Resource temporarily unavailable; retrying slot=2 in ")
        server.wait_log(r"retrying slot=2 in", count=3)  # retried, with growing delays
        assert server.request("/")[0] == 200  # still serving with the worker it has
        assert server.proc.poll() is None
        (group / "pids.max").write_text("max\n")
        server.wait_workers(2)
        log = server.log()
        delays = [float(x) for x in re.findall(r"retrying slot=2 in ([0-9.]+) s", log)]
        assert delays == sorted(delays), delays  # backing off, never a hot loop
        assert len(delays) < 30, delays
    finally:
        server.close()
        for pid in (group / "cgroup.procs").read_text().split():
            (root / "cgroup.procs").write_text(f"{pid}\n")
        wait_for(lambda: not (group / "cgroup.procs").read_text().strip())
        group.rmdir()


def test_accept_out_of_descriptors_does_not_spin(servers) -> None:
    """accept() failing with EMFILE: the worker pauses its accepts instead of spinning."""
    import resource

    import psutil

    server = servers("tests.apps:app", workers=1)
    server.wait_ready()
    (pid,) = server.wait_workers(1)
    worker = psutil.Process(pid)
    soft, hard = worker.rlimit(resource.RLIMIT_NOFILE)
    taken = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = min(set(range(len(taken) + 1)) - taken)
    # A new descriptor takes the lowest free number: cap the limit right there.
    worker.rlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    clients = [socket.create_connection(("127.0.0.1", server.port), DEADLINE) for _ in range(3)]
    try:
        server.wait_log(r"accept\(\): Too many open files; pausing accepts for 0\.5 s")
        before = sum(worker.cpu_times()[:2])
        time.sleep(1.0)  # the measurement window itself, not a synchronisation
        spent = sum(worker.cpu_times()[:2]) - before
        assert spent < 0.5, f"worker used {spent:.2f} s of CPU in 1 s while out of fds"
        worker.rlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for conn in clients:  # once descriptors are back, the queued clients are served
            conn.settimeout(DEADLINE)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.1 200 OK")
    finally:
        for conn in clients:
            conn.close()
