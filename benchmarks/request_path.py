"""CPU time of one keep-alive request through the HTTP shell, without the master (by hand).

    python3 benchmarks/request_path.py [--profile]

A socketpair stands in for the client: it sends a wrk-style GET, the connection object of
a real worker parses it, runs examples/hello.py and sends the response, the client reads
it. Reported: process CPU time per request (both sides), which shared-machine noise
affects less than wall time. --profile prints the cProfile top 25.
"""

from __future__ import annotations

import cProfile
import pstats
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
N = 20000


class FakeWorker:
    """The worker hooks the connection calls (worker.py); they do nothing here."""

    stopping = False

    def on_request(self, method: str = "", path: str = "") -> None: ...
    def on_request_end(self, status: int) -> None: ...
    def on_rejected(self, status: int) -> None: ...


def main() -> None:
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


if __name__ == "__main__":
    main()
