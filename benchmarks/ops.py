"""Operational timings of the real server, read from its own log (run by hand).

    python3 benchmarks/ops.py [--workers 2]

Starts `prefork examples.hello:app --timeout 2` on a free loopback port, then measures from
the master's log timestamps (so the client's polling does not count):
- kill -9 a worker -> its replacement forked, and ready;
- SIGSTOP a worker -> timeout noticed, SIGKILL, replacement ready (--timeout 2);
- TERM with idle workers -> master exit;
and, separately, kill -9 the master -> every worker gone (psutil, polled every 1 ms).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?(\S.*)$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.001)
    raise SystemExit(f"timed out waiting for {what}")


def when(log: Path, pattern: str, after: float = 0.0) -> float:
    """Epoch seconds of the first log line matching `pattern` stamped at or after `after`."""
    def find() -> float | None:
        for stamp, text in STAMP.findall(log.read_text()):
            t = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if t >= after - 0.0005 and re.search(pattern, text):
                return t
        return None
    return float(wait(find, pattern))


def start(workers: int, log: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefork", "examples.hello:app", "-w", str(workers), "-t", "2",
         "-b", f"127.0.0.1:{port}", "--name", name, "--error-logfile", str(log)], cwd=REPO)
    wait(lambda: f"all {workers} workers ready" in log.read_text() if log.exists() else None,
         "boot")
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="prefork-ops-"))
    log = tmp / "error.log"
    proc, _ = start(args.workers, log, "opsbench")
    try:
        master = psutil.Process(proc.pid)
        time.sleep(6)  # let the workers age past the 5 s "died young" window
        victim = master.children()[0].pid
        t0 = time.time()
        os.kill(victim, signal.SIGKILL)
        forked = when(log, r"booting worker", t0)
        ready = when(log, r"worker ready", forked)
        print(f"kill -9 worker -> replacement forked {1000 * (forked - t0):.0f} ms, "
              f"ready {1000 * (ready - t0):.0f} ms")
        stopped = master.children()[0].pid
        t0 = time.time()
        os.kill(stopped, signal.SIGSTOP)
        noticed = when(log, rf"worker timeout .*pid={stopped}", t0)
        killed = when(log, rf"killing worker .*pid={stopped}", t0)
        ready = when(log, r"worker ready", killed)
        print(f"SIGSTOP worker (--timeout 2) -> timeout noticed {noticed - t0:.2f} s, "
              f"SIGKILL {killed - t0:.2f} s, replacement ready {ready - t0:.2f} s")
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        print(f"TERM with idle workers -> master exited {1000 * (time.time() - t0):.0f} ms")
        proc, _ = start(args.workers, tmp / "error2.log", "opsbench2")
        kids = psutil.Process(proc.pid).children()
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        wait(lambda: not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE
                             for k in kids), "workers to exit")
        print(f"kill -9 master -> all workers gone {1000 * (time.monotonic() - t0):.0f} ms")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
