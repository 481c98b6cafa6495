#!/usr/bin/env python3
"""What observability costs: the scoreboard per request, and the master's PSS sampling.

Run by hand from the repository root (not a pytest test):

    python3 benchmarks/observe_cost.py                 # 8 workers, 30 s windows
    python3 benchmarks/observe_cost.py --window 60 --workers 8

1. Scoreboard: `Writer.start()` + `Writer.end()` (what a worker adds to each request) in a
   loop of --loops calls, best of 5 repeats, next to an empty loop and one bare
   `struct.pack_into`; then the master's `Board.read()` of one board.
2. Master CPU: prefork serves benchmarks/hello_app.py with --workers N, without and with
   `--max-worker-memory` (a limit no worker reaches, the default 5 s interval, so every
   sample runs and none recycles). For each, the master's user+system CPU time
   (psutil `cpu_times()`) is taken over a fixed --window with the workers idle, then over
   the same window under `wrk -t2 -c50` (keep-alive hello world). Also the cost of one
   sampling pass (memory_full_info() of every worker) timed directly.

Needs wrk (`apt-get install wrk`) for the loaded runs. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prefork.scoreboard import Board, Writer  # noqa: E402


def pack_into_cost(loops: int) -> float:
    """One struct.pack_into of the request descriptor (what start() writes), in µs."""
    import mmap
    import struct

    mm = mmap.mmap(-1, 4096)
    fmt = struct.Struct("=dQ16s208s")
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            fmt.pack_into(mm, 8, 1.0, 3, b"GET", b"/some/path/of/typical/length")
        best = min(best, time.perf_counter() - t)
    mm.close()
    return best / loops * 1e6


def scoreboard_cost(loops: int) -> tuple[float, float, float]:
    board = Board(1)
    writer = Writer(board.mm, 1)
    start, end = writer.start, writer.end
    best = empty = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            start("GET", "/some/path/of/typical/length")
            end(200)
        best = min(best, time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(loops):
            pass
        empty = min(empty, time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(1000):
        board.read()
    read = (time.perf_counter() - t) / 1000
    writer.close()
    board.close()
    return (best - empty) / loops * 1e6, empty / loops * 1e6, read * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"prefork did not listen on {port}")


def master_cpu(workers: int, window: float, extra: list[str]) -> dict[str, float]:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="observe-cost-", suffix=".log", delete=False)
    argv = [sys.executable, "-m", "prefork", "benchmarks.hello_app:app", "-w", str(workers),
            "-b", f"127.0.0.1:{port}", "--error-logfile", log.name, *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, cwd=REPO, env=env)
    out: dict[str, float] = {}
    try:
        wait_port(port, time.monotonic() + 30)
        master = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while len(master.children()) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # let the boot settle before the idle window (a measurement)

        def window_cpu(load: bool) -> float:
            before = master.cpu_times()
            if load:
                subprocess.run(["wrk", "-t2", "-c50", f"-d{int(window)}s",
                                f"http://127.0.0.1:{port}/"], check=True,
                               stdout=subprocess.DEVNULL)
            else:
                time.sleep(window)  # the stimulus: an idle window of fixed length
            after = master.cpu_times()
            return (after.user + after.system) - (before.user + before.system)

        out["idle"] = window_cpu(False)
        if shutil.which("wrk"):
            out["load"] = window_cpu(True)
        pids = [p.pid for p in master.children()]
        t = time.perf_counter()
        for _ in range(20):
            for pid in pids:
                psutil.Process(pid).memory_full_info()
        out["pass_ms"] = (time.perf_counter() - t) / 20 * 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        os.unlink(log.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--loops", type=int, default=200_000)
    args = parser.parse_args()
    per_request, empty, read = scoreboard_cost(args.loops)
    print(f"- scoreboard, per request (start + end, best of 5 x {args.loops:,}): "
          f"**{per_request:.2f} µs** (the empty loop: {empty:.3f} µs per turn)")
    print(f"- for scale, one `struct.pack_into` of the request descriptor: "
          f"{pack_into_cost(args.loops):.2f} µs")
    print(f"- master, one `Board.read()` (1 request thread): {read:.1f} µs")
    print(f"- load average before the master runs: {os.getloadavg()}")
    print()
    print("| --max-worker-memory | workers | window | master CPU idle | master CPU under "
          "wrk -t2 -c50 | one sampling pass |")
    print("|---|--:|--:|--:|--:|--:|")
    for label, extra in (("off", []), ("on (limit not reached, 5 s interval)",
                                       ["--max-worker-memory", "100000"])):
        r = master_cpu(args.workers, args.window, extra)
        idle = f"{r['idle'] * 1000:.0f} ms ({100 * r['idle'] / args.window:.3f}%)"
        load = (f"{r['load'] * 1000:.0f} ms ({100 * r['load'] / args.window:.3f}%)"
                if "load" in r else "no wrk")
        print(f"| {label} | {args.workers} | {args.window:.0f} s | {idle} | {load} | "
              f"{r['pass_ms']:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
