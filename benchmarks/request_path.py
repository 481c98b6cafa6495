"""CPU time per request through prefork's request path, without wrk (run by hand).

    python3 benchmarks/request_path.py [--profile]   # the connection shell, in-process
    python3 benchmarks/request_path.py --worker      # a real worker loop, in a child

Default: a socketpair stands in for the client: it sends a wrk-style GET, the connection
object of a real worker parses it, runs examples/hello.py and sends the response, the
client reads it. Reported: process CPU time per request (both sides), which shared-machine
noise affects less than wall time. --profile prints the cProfile top 25.

--worker: a forked child runs a real worker (worker.run: its epoll loop, heartbeat,
scoreboard) on a loopback listener, with the same app; this process is the client, one
request at a time, and reports the *worker's* CPU time per request (from
/proc/PID/stat, so best with many requests) for three scenarios: keep-alive on one
connection, `Connection: close` (a new connection per request), and keep-alive over
--conns connections sent in bursts (several ready sockets per wake-up, as under wrk).

--once SCENARIO N (keep-alive, close or x10): the same worker serves N requests of one
scenario, untimed, and the worker's pid is printed. Under callgrind, the worker's
instruction count (user space) is the same from run to run, unlike CPU time on a shared
machine; the difference of two runs over the difference of their N is the count per
request (RESULTS.md shows the commands).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.hello import app  # noqa: E402
from prefork import log  # noqa: E402
from prefork.config import Config  # noqa: E402
from prefork.connection import make_handler  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
N = 20000


class FakeWorker:
    """The worker hooks the connection calls (worker.py); they do nothing here."""

    stopping = False

    def on_request(self, method: str = "", path: str = "") -> None: ...
    def on_request_end(self, status: int) -> None: ...
    def on_rejected(self, status: int) -> None: ...
    def on_progress(self) -> None: ...


def in_process() -> None:
    log.access_logger.disabled = True  # as without --access-logfile
    handler = make_handler(app, Config(app="examples.hello:app", values={}), FakeWorker())
    server, client = socket.socketpair()
    client.sendall(REQUEST)
    conn = handler(server, ("127.0.0.1", 1234), time.monotonic())
    assert conn is not None
    client.recv(65536)

    def run() -> None:
        for _ in range(N):
            client.send(REQUEST)
            conn.readable(time.monotonic())
            client.recv(65536)

    best = min(_timed(run) for _ in range(3))
    print(f"{best / N * 1e6:.1f} us CPU per keep-alive request ({N} requests, best of 3)")
    if "--profile" in sys.argv:
        cProfile.runctx("run()", globals(), {"run": run}, "/tmp/request_path.prof")
        pstats.Stats("/tmp/request_path.prof").sort_stats("tottime").print_stats(25)


def _timed(run: object) -> float:
    start = time.process_time()
    run()  # type: ignore[operator]
    return time.process_time() - start


# -- a real worker in a child ---------------------------------------------------------


def _cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` (clock ticks, /proc/PID/stat fields 14-15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn_worker(listener: socket.socket) -> tuple[int, socket.socket]:
    """Fork a worker as the master would (worker.run never returns); (pid, our channel end)."""
    from prefork import heartbeat, worker
    from prefork.scoreboard import Board
    from prefork.sockets import Listener

    config = Config(app="examples.hello:app", values={"errorlog": "-", "loglevel": "warning"})
    log.setup("-", "warning", None)
    master_end, worker_end = heartbeat.pair()
    dump_r, dump_w = heartbeat.dump_pipe()
    board = Board(1)
    pid = os.fork()
    if pid == 0:
        master_end.close()
        ctx = worker.Context(
            config=config, slot=1, generation=1, listeners=[Listener(listener, "bench")],
            channel=worker_end, dump_fd=dump_w, master_pid=os.getppid(), close_fds=[dump_r],
            app=app, board=board.mm)
        worker.run(ctx)
    worker_end.close()
    os.close(dump_w)
    master_end.setblocking(True)  # wait for READY
    if master_end.recv(64)[:1] != heartbeat.READY:
        raise SystemExit("the worker did not report ready")
    master_end.setblocking(False)
    return pid, master_end


def _drain(channel: socket.socket) -> None:
    """Read queued beats, as the master would, so the worker's sends never fill up."""
    while True:
        try:
            if not channel.recv(64):
                return
        except BlockingIOError:
            return


def _read_response(sock: socket.socket) -> None:
    data = sock.recv(65536)
    if not data.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected response {data[:80]!r}")


def _keepalive(addr: tuple[str, int], n: int, channel: socket.socket) -> None:
    with socket.create_connection(addr) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(n):
            sock.send(REQUEST)
            _read_response(sock)
            if i % 1000 == 0:
                _drain(channel)


def _close(addr: tuple[str, int], n: int, channel: socket.socket) -> None:
    for i in range(n):
        with socket.create_connection(addr) as sock:
            sock.send(CLOSE_REQUEST)
            while sock.recv(65536):
                pass
        if i % 1000 == 0:
            _drain(channel)


def _burst(addr: tuple[str, int], n: int, channel: socket.socket, conns: int) -> None:
    socks = [socket.create_connection(addr) for _ in range(conns)]
    for i in range(n // conns):
        for sock in socks:
            sock.send(REQUEST)
        for sock in socks:
            _read_response(sock)
        if i % 100 == 0:
            _drain(channel)
    for sock in socks:
        sock.close()


def in_worker() -> None:
    n = N
    conns = 10
    if "--conns" in sys.argv:
        conns = int(sys.argv[sys.argv.index("--conns") + 1])
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.setblocking(False)
    addr = listener.getsockname()
    pid, channel = _spawn_worker(listener)
    try:
        for name, run in (("keep-alive", lambda: _keepalive(addr, n, channel)),
                          ("close", lambda: _close(addr, n // 2, channel)),
                          (f"keep-alive x{conns}", lambda: _burst(addr, n, channel, conns))):
            count = n // 2 if name == "close" else n // conns * conns if "x" in name else n
            best = float("inf")
            for _ in range(3):
                before = _cpu(pid)
                run()
                best = min(best, _cpu(pid) - before)
            print(f"{name:>16}: {best / count * 1e6:5.1f} us worker CPU per request "
                  f"({count} requests, best of 3)")
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


def once(scenario: str, n: int) -> None:
    """Serve `n` requests of one scenario (keep-alive, close, x10), untimed, and print the
    worker's pid: for counting instructions, which a shared machine does not disturb."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.setblocking(False)
    addr = listener.getsockname()
    pid, channel = _spawn_worker(listener)
    try:
        if scenario == "keep-alive":
            _keepalive(addr, n, channel)
        elif scenario == "close":
            _close(addr, n, channel)
        else:
            _burst(addr, n, channel, 10)
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    print(pid)


if __name__ == "__main__":
    if "--once" in sys.argv:
        at = sys.argv.index("--once")
        once(sys.argv[at + 1], int(sys.argv[at + 2]))
    elif "--worker" in sys.argv:
        in_worker()
    else:
        in_process()
