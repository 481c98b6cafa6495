"""CPU time per access-log line, in-process, without a server (run by hand).

    python3 benchmarks/access_log.py                  # this working tree's prefork/
    python3 benchmarks/access_log.py --rev f2c3cb5    # a commit's prefork/ (git archive)
    python3 benchmarks/access_log.py --formats combined,pid --lines 50000 --runs 7
    python3 benchmarks/access_log.py --wrk --rev f2c3cb5   # a real server under wrk

Each format is timed through `prefork.log.access()` exactly as a worker calls it after a
request, with the access log set up as `--access-logfile FILE` sets it (a file in a
temporary directory unless --target is given: `/dev/null` leaves out the disk). The
environ is what a wrk-style keep-alive GET gives an app. Reported: process CPU time per
line (user + system, so the write(2) counts), the best of --runs runs of --lines lines,
which a shared machine disturbs less than wall time. The file is checked afterwards to
hold one line per call.

Formats: `combined` (gunicorn's default, also prefork's), `pid` (`%(p)s`, which bench.py
uses to count requests per worker), `all` (every atom, with escaping to do in the
User-Agent), `bad` (a format that falls back to the "bad access log format" line).

--wrk: instead, a real server (`python3 -m prefork hello_app:app -w 2`, from the tree
measured) under `wrk -t2 -c50` for --seconds after a 1 s warm-up, without an access
log and with `--access-logfile FILE` (default format), alternating, --rounds times.
Reported per setting: the median requests/s, and the workers' CPU time per request
(from psutil), which other load on a shared machine disturbs far less than requests/s.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

FORMATS = {
    "combined": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    "pid": "%(p)s",
    "all": ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s %(B)s "%(f)s" "%(a)s" %(m)s %(U)s '
            '%(q)s %(H)s %(L)s %(T)s %(D)s %(M)s %(p)s %(x)s'),
    "bad": "%(h)s %(s)d",
}


def typical_environ(user_agent: str) -> dict[str, Any]:
    """A keep-alive GET from wrk, as build_environ() hands it to the app."""
    return {
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "prefork/0.1.0", "SCRIPT_NAME": "",
        "REQUEST_METHOD": "GET", "PATH_INFO": "/api/items/42", "QUERY_STRING": "page=2",
        "RAW_URI": "/api/items/42?page=2", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": user_agent,
        "HTTP_ACCEPT": "*/*",
    }


def export(rev: str, dest: Path) -> str:
    """prefork/ at `rev` into dest (git archive); returns the full commit id."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    data = subprocess.run(["git", "-C", str(REPO), "archive", commit, "prefork"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return commit


def measure(log: Any, fmt: str, environ: dict[str, Any], lines: int, runs: int) -> float:
    """Best CPU microseconds per line over `runs` runs of `lines` calls."""
    access = log.access
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        for _ in range(lines):
            access(fmt, environ, None, 200, 13, 0.000123)
        best = min(best, time.process_time() - start)
    return best / lines * 1e6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_served(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode} before serving")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("the server did not answer within 20 s")


def wrk_round(src: str, access: str | None, seconds: int, tmp: str) -> tuple[float, float]:
    """(requests/s, worker CPU microseconds per request) for one server run."""
    import psutil

    port = _free_port()
    argv = [sys.executable, "-m", "prefork", "hello_app:app", "-w", "2",
            "-b", f"127.0.0.1:{port}", "--error-logfile", os.path.join(tmp, "error.log")]
    if access:
        argv += ["--access-logfile", access]
    env = dict(os.environ, PYTHONPATH=src)
    proc = subprocess.Popen(argv, cwd=HERE, env=env)
    try:
        _wait_served(port, proc)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["wrk", "-t2", "-c50", "-d1s", url], check=True, capture_output=True)
        workers = psutil.Process(proc.pid).children()

        def cpu() -> float:
            return sum(sum(w.cpu_times()[:2]) for w in workers)

        before = cpu()
        out = subprocess.run(["wrk", "-t2", "-c50", f"-d{seconds}s", url], check=True,
                             capture_output=True, text=True).stdout
        used = cpu() - before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    rate = float(next(ln.split()[1] for ln in out.splitlines() if "Requests/sec" in ln))
    count = int(next(ln.split()[0] for ln in out.splitlines() if "requests in" in ln))
    return rate, used / count * 1e6


def wrk_main(src: str, origin: str, seconds: int, rounds: int, tmp: str) -> None:
    if not shutil.which("wrk"):
        sys.exit("--wrk needs wrk (apt-get install wrk)")
    settings = {"no access log": None, "--access-logfile FILE": os.path.join(tmp, "x.log")}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for _ in range(rounds):
        for name, access in settings.items():
            if access and os.path.exists(access):
                os.unlink(access)
            results[name].append(wrk_round(src, access, seconds, tmp))
    print(f"prefork: {origin}; Python {sys.version.split()[0]}; {rounds} rounds of "
          f"wrk -t2 -c50 -d{seconds}s, 2 workers, hello_app:app, os.cpu_count()={os.cpu_count()}")
    for name, runs in results.items():
        rates = " / ".join(f"{r:,.0f}" for r, _ in runs)
        print(f"{name:>22}: {statistics.median(r for r, _ in runs):8,.0f} req/s (median of "
              f"{rates}), {statistics.median(c for _, c in runs):5.1f} us worker CPU per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="measure prefork/ at this git revision, not the tree")
    parser.add_argument("--formats", default="combined,pid,all,bad",
                        help=f"comma-separated, from {', '.join(FORMATS)} (default: all four)")
    parser.add_argument("--lines", type=int, default=20000, help="lines per run (20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per format; best kept (5)")
    parser.add_argument("--target", help="access log path (default: a file in a temp dir)")
    parser.add_argument("--wrk", action="store_true", help="a real server under wrk instead")
    parser.add_argument("--seconds", type=int, default=5, help="--wrk: seconds per run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="--wrk: rounds (3)")
    args = parser.parse_args()
    names = [n for n in args.formats.split(",") if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        parser.error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")

    with tempfile.TemporaryDirectory() as tmp:
        if args.rev:
            src = os.path.join(tmp, "src")
            origin = f"commit {export(args.rev, Path(src))[:12]}"
        else:
            src, origin = str(REPO), f"working tree {REPO}"
        if args.wrk:
            wrk_main(src, origin, args.seconds, args.rounds, tmp)
            return
        sys.path.insert(0, src)
        from prefork import log  # noqa: PLC0415 (the tree to measure is chosen above)

        target = args.target or os.path.join(tmp, "access.log")
        log.setup(os.path.join(tmp, "error.log"), "info", target)
        print(f"prefork: {origin}; Python {sys.version.split()[0]}; access log {target}")
        for name in names:
            ua = "curl/8.5.0 \x1b[31mred\x1b[0m" if name == "all" else "wrk/4.1.0"
            before = os.path.getsize(target) if os.path.isfile(target) else 0
            cost = measure(log, FORMATS[name], typical_environ(ua), args.lines, args.runs)
            if os.path.isfile(target):
                with open(target, "rb") as f:
                    f.seek(before)
                    written = f.read().count(b"\n")
                if written != args.lines * args.runs:
                    sys.exit(f"{name}: {written} lines written, expected {args.lines * args.runs}")
            print(f"{name:>9}: {cost:6.2f} us CPU per line (best of {args.runs} x {args.lines})")
        log.setup(os.path.join(tmp, "error.log"), "info", None)  # close the files


if __name__ == "__main__":
    main()
