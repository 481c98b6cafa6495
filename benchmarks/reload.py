"""HUP timings and memory with and without --preload (run by hand).

    python3 benchmarks/reload.py [--app examples.flask_app:app] [--workers 4] [--hups 5]

For each mode (workers import the app themselves; --preload, where a template process
imports it once per generation and forks the workers) it starts the real server with a
notify socket, then reports:
- boot: spawn -> READY=1 (every worker ready);
- HUP -> READY=1 (the new generation ready; the old one then drains), median of --hups;
- PSS of the workers (and the template) once ready, summed: what the server costs.
Both modes run from the same interpreter and import prefork from this repository.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def wait_ready(notify: socket.socket) -> None:
    while True:
        if "READY=1" in notify.recv(4096).decode().split("\n"):
            return


def pss_total(master: int) -> tuple[float, int]:
    """(PSS of the master's children in MiB, how many there are)."""
    kids = psutil.Process(master).children()
    return sum(k.memory_full_info().pss for k in kids) / MIB, len(kids)


def run(app: str, workers: int, hups: int, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(path)
        notify.settimeout(60)
        env = dict(os.environ, NOTIFY_SOCKET=path,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])))
        argv = [sys.executable, "-m", "prefork", app, "-w", str(workers), "-b",
                "127.0.0.1:0", "--error-logfile", os.path.join(tmp, "log"), *extra]
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, env=env)
        try:
            wait_ready(notify)
            boot = time.monotonic() - started
            pss, processes = pss_total(proc.pid)
            times = []
            for _ in range(hups):
                sent = time.monotonic()
                proc.send_signal(signal.SIGHUP)
                wait_ready(notify)
                times.append(time.monotonic() - sent)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            notify.close()
    return {"boot": boot, "hup": statistics.median(times), "pss": pss,
            "processes": processes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="examples.flask_app:app")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--hups", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.app}, {args.workers} workers, median of {args.hups} HUPs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| mode | boot to READY | HUP to READY | PSS of the children |")
    print("|---|--:|--:|--:|")
    for label, extra in (("workers import the app", []), ("--preload (template)",
                                                          ["--preload"])):
        r = run(args.app, args.workers, args.hups, extra)
        print(f"| {label} | {r['boot'] * 1000:.0f} ms | {r['hup'] * 1000:.0f} ms | "
              f"{r['pss']:.1f} MiB in {r['processes']:.0f} processes |")


if __name__ == "__main__":
    main()
