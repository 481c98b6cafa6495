#!/usr/bin/env python3
"""Benchmark prefork against gunicorn under wrk, side by side, with alternating runs.

Run by hand from anywhere (not a pytest test):

    python3 benchmarks/bench.py                        # defaults: 2 workers, wrk -t2 -c50, 3 x 5 s
    python3 benchmarks/bench.py --scenarios close,big --rounds 5 --duration 10
    python3 benchmarks/bench.py --prefork-args='--keep-alive 2' -o /tmp/results.md
    python3 benchmarks/bench.py --prefork-rev HEAD     # the last commit, not the working tree

Needs `wrk` (Debian/Ubuntu: `apt-get install wrk`), gunicorn (`python3 -m pip install
gunicorn`) and psutil (a prefork dependency). Both servers run under this interpreter
(`python3 -m prefork`, `python3 -m gunicorn`) and serve `benchmarks/hello_app.py` with the same
worker count, each on its own free loopback port. prefork is imported from this repository's
working tree (through PYTHONPATH, whatever `pip install -e` last pointed at), or with
`--prefork-rev REV` from that commit, exported with `git archive` into a temporary directory.

Scenarios (`--scenarios`, comma-separated, default all three):

- `close`: hello world with `Connection: close`, prefork (default) vs gunicorn sync;
- `keepalive`: hello world, keep-alive, prefork (default) vs gunicorn gthread (`--threads 4`);
- `big`: 1 MiB responses (`/big`), wrk's default keep-alive requests, prefork vs gunicorn sync
  (which closes after every response whatever the client asks).

Per scenario, both servers are started fresh and each gets a short warm-up run; then wrk runs
prefork, gunicorn, prefork, gunicorn, ... for `--rounds` rounds, and the medians are compared.
During those runs neither server writes an access log (both servers' default). The per-worker
request counts come from one extra prefork run with the same wrk settings and
`--access-logfile FILE --access-log-format '%(p)s'` (one line per request: the worker's pid),
whose throughput is reported too, as the cost of the access log. The measured runs also report
each worker's share of the CPU time its server used, for both servers.

Then start-up time (spawn, then connect-and-GET in a tight loop until the first 200; median of
`--starts` starts) is measured for prefork and gunicorn sync. Worker PSS (psutil
`memory_full_info().pss`) is read after each scenario's runs.

On a shared machine, other processes' CPU use is measured around every run (busy time in
/proc/stat minus our own processes'): each run and start first waits for it to drop below
`--max-other-load`, and a run it disturbed more is redone, up to `--retries` times. The
report shows what was left (*other load*) and how many runs were redone.

Progress goes to stderr; the Markdown report (for `benchmarks/RESULTS.md`) to stdout and, with
`-o FILE`, to FILE. Every process started here is killed on the way out, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import io
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("bench.py needs psutil: python3 -m pip install psutil (or install prefork)")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = "hello_app:app"  # imported with HERE as the working directory
READY_TIMEOUT = 30.0  # seconds for a server to serve its first request
STOP_TIMEOUT = 5.0  # seconds for a master to exit after SIGINT before we SIGKILL its group



@dataclasses.dataclass(frozen=True)
class Tools:
    """How to run each program: argv prefixes, and the environment prefork runs in."""

    wrk: str
    prefork: list[str]
    gunicorn: list[str]
    prefork_env: dict[str, str]
    prefork_origin: str  # for the report: which prefork code is measured


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    wrk_headers: tuple[str, ...]
    gunicorn_args: tuple[str, ...]
    gunicorn_label: str


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("close", "hello world, `Connection: close`", "/",
                 ("Connection: close",), ("-k", "sync"), "gunicorn sync"),
        Scenario("keepalive", "hello world, keep-alive", "/",
                 (), ("-k", "gthread", "--threads", "4"), "gunicorn gthread (4 threads)"),
        Scenario("big", "1 MiB responses, keep-alive requested", "/big",
                 (), ("-k", "sync"), "gunicorn sync"),
    )
}


@dataclasses.dataclass
class WrkResult:
    requests: int
    rps: float
    non_2xx: int
    socket_errors: Counter[str]  # connect, read, write, timeout
    worker_cpu: dict[int, float]  # worker pid -> CPU seconds used during the run
    other_load: float  # share of all cores used by processes this script did not start
    redone: int = 0  # earlier attempts discarded because other processes disturbed them


@dataclasses.dataclass
class SideResult:
    label: str
    command: str
    runs: list[WrkResult] = dataclasses.field(default_factory=list)
    pss_mib: list[float] = dataclasses.field(default_factory=list)

    @property
    def median_rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)


@dataclasses.dataclass
class ScenarioResult:
    scenario: Scenario
    wrk_command: str
    prefork: SideResult
    gunicorn: SideResult
    logged: WrkResult | None = None  # the prefork run with the access log on
    per_worker: Counter[int] = dataclasses.field(default_factory=Counter)


# --------------------------------------------------------------------------- processes

def find_tools(rev: str | None, tmp: Path) -> Tools:
    """Check that wrk and gunicorn are there, and pick the prefork source tree to measure."""
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("bench.py: `wrk` not found: install it with `sudo apt-get install wrk` "
                 "(Debian/Ubuntu) or build it from https://github.com/wg/wrk")
    if importlib.util.find_spec("gunicorn") is None:
        sys.exit(f"bench.py: gunicorn is not installed for {sys.executable}: install it with "
                 f"`{sys.executable} -m pip install gunicorn`")
    if rev is None:
        src, origin = REPO, f"working tree of {REPO}, {git_state(REPO)}"
    else:
        src = tmp / "prefork-src"
        commit = export_prefork(rev, src)
        origin = f"commit {commit[:12]} (`git archive` of `{rev}`)"
    # Bytecode for prefork, as `pip install` leaves it (and as gunicorn's install has):
    # without it every start would compile prefork from source, since this environment
    # may set PYTHONDONTWRITEBYTECODE, and the start-up times would not compare.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "prefork"),
                    str(HERE / "hello_app.py")], check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    imported = subprocess.run([sys.executable, "-c", "import prefork; print(prefork.__file__)"],
                              cwd=HERE, env=env, capture_output=True, text=True).stdout.strip()
    if not imported or not Path(imported).is_relative_to(src):
        sys.exit(f"bench.py: prefork does not import from {src} (got {imported or 'nothing'}); "
                 f"does {src}/prefork exist?")
    return Tools(wrk, [sys.executable, "-m", "prefork"], [sys.executable, "-m", "gunicorn"],
                 env, origin)


def git_state(tree: Path) -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *argv], capture_output=True,
                              text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "prefork")
    return f"git {head}" + (" plus uncommitted changes in prefork/" if dirty else "")


def export_prefork(rev: str, dest: Path) -> str:
    """Extract prefork/ as of `rev` into dest; returns the full commit id."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        sys.exit(f"bench.py: --prefork-rev {rev}: {commit.stderr.strip()}")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar",
                              commit.stdout.strip(), "prefork"], capture_output=True, check=True)
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return commit.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server (a master and its workers) in a session of its own, so nothing leaks."""

    def __init__(self, label: str, argv: list[str], port: int, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.label = label
        self.argv = argv
        self.port = port
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> str:
        """The command line as run, with the port (free, picked per run) shown as PORT."""
        text = shlex.join([Path(self.argv[0]).name, *self.argv[1:]])
        return text.replace(f"127.0.0.1:{self.port}", "127.0.0.1:PORT")

    def spawn(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=HERE, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_first_response(self, path: str = "/") -> None:
        """Poll with connect-and-GET until the first 200, or fail at the deadline."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not http_get_ok(self.port, path):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} before "
                                   f"serving; its log:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} served nothing in {READY_TIMEOUT:.0f} s; "
                                   f"its log:\n{tail(self.log)}")
            time.sleep(0.001)

    def workers(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children()

    def stop(self) -> None:
        """SIGINT (a quick stop for both servers), then SIGKILL for whatever is left."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Start the servers, wait until each serves a request, and always stop them all."""
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_first_response()
        yield
    finally:
        with signals_deferred():
            for server in servers:
                server.stop()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and TERM/HUP) until the block is done: a second Ctrl-C cannot cut a cleanup
    short. A signal that arrived meanwhile is delivered (KeyboardInterrupt) at the end."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def http_get_ok(port: int, path: str) -> bool:
    """One `GET path` on a fresh connection; True on a complete 200 response."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                         .encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return False
    return b"".join(chunks).startswith(b"HTTP/1.1 200 ")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cpu_seconds(procs: Sequence[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def pss_mib(procs: Sequence[psutil.Process]) -> list[float]:
    return [p.memory_full_info().pss / 2**20 for p in procs]


# --------------------------------------------------------------------------- wrk

def wrk_argv(wrk: str, args: argparse.Namespace, scenario: Scenario, port: int,
             duration: int) -> list[str]:
    argv = [wrk, f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{duration}s"]
    for header in scenario.wrk_headers:
        argv += ["-H", header]
    return [*argv, f"http://127.0.0.1:{port}{scenario.path}"]


def run_wrk(argv: list[str], server: Server, duration: int) -> WrkResult:
    workers = server.workers()
    before = cpu_seconds(workers)
    with OtherLoad() as other:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    after = cpu_seconds(workers)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout, {pid: t - before.get(pid, 0.0) for pid, t in after.items()},
                     other.share)


def measured_run(args: argparse.Namespace, wrk: str, scenario: Scenario, server: Server,
                 progress: Callable[[str], None]) -> WrkResult:
    """A wrk run on a quiet machine: wait until other processes calm down, and redo a run
    they disturbed (used more than --max-other-load of the cores), at most --retries times."""
    attempt = 0
    while True:
        wait_for_quiet(args)
        res = run_wrk(wrk_argv(wrk, args, scenario, server.port, args.duration), server,
                      args.duration)
        res.redone = attempt
        if res.other_load <= args.max_other_load or attempt >= args.retries:
            return res
        attempt += 1
        progress(f"{server.label}: {res.rps:,.0f} req/s discarded (other processes used "
                 f"{res.other_load:.0%} of the cores); again")


def wait_for_quiet(args: argparse.Namespace, window: float = 0.5) -> None:
    """Wait until processes not ours use at most --max-other-load of the cores over `window`
    seconds, or --quiet-timeout has passed (then go on: the report shows the load)."""
    if args.max_other_load >= 1:
        return
    deadline = time.monotonic() + args.quiet_timeout
    while time.monotonic() < deadline:
        with OtherLoad() as other:
            time.sleep(window)  # the measuring window, not a guess at an event
        if other.share <= args.max_other_load:
            return


class OtherLoad:
    """Measures the share of all cores that processes not ours used during the block.

    Busy CPU time of the machine (user + nice + system, from /proc/stat) minus the CPU time
    of this script, its servers and their workers, and its reaped children (wrk). Other
    engineers' test runs on a shared machine show up here; irq/softirq time is left out.
    """

    share = 0.0

    def __enter__(self) -> OtherLoad:
        me = psutil.Process()
        self.procs = [me, *me.children(recursive=True)]
        self.ours0 = self._ours()
        self.busy0 = self._busy()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        others = (self._busy() - self.busy0) - (self._ours() - self.ours0)
        self.share = max(0.0, others / (wall * (os.cpu_count() or 1)))

    def _ours(self) -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (sum(cpu_seconds(self.procs).values())
                + children.ru_utime + children.ru_stime)

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system)


def parse_wrk(out: str, worker_cpu: dict[int, float], other_load: float) -> WrkResult:
    requests = re.search(r"^\s*(\d+) requests in", out, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    if not (requests and rps):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors: Counter[str] = Counter()
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors.update(dict(zip(("connect", "read", "write", "timeout"),
                               map(int, sock.groups()), strict=True)))
    return WrkResult(int(requests[1]), float(rps[1]), int(non_2xx[1]) if non_2xx else 0,
                     errors, worker_cpu, other_load)


# --------------------------------------------------------------------------- measurements

def prefork_server(label: str, tools: Tools, args: argparse.Namespace, log: Path,
                   extra: Sequence[str] = ()) -> Server:
    port = free_port()
    argv = [*tools.prefork, APP, "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
            *args.prefork_args, *extra]
    return Server(label, argv, port, log, tools.prefork_env)


def gunicorn_server(label: str, tools: Tools, args: argparse.Namespace, log: Path,
                    extra: Sequence[str]) -> Server:
    port = free_port()
    argv = [*tools.gunicorn, APP, "-w", str(args.workers), "-b", f"127.0.0.1:{port}", *extra]
    return Server(label, argv, port, log)


def run_scenario(scenario: Scenario, args: argparse.Namespace, tools: Tools,
                 tmp: Path) -> ScenarioResult:
    def progress(msg: str) -> None:
        print(f"[{scenario.name}] {msg}", file=sys.stderr, flush=True)

    prefork = prefork_server("prefork", tools, args, tmp / f"{scenario.name}-prefork.log")
    gunicorn = gunicorn_server(scenario.gunicorn_label, tools, args,
                               tmp / f"{scenario.name}-gunicorn.log", scenario.gunicorn_args)
    wrk_command = shlex.join(wrk_argv("wrk", args, scenario, 0, args.duration))
    result = ScenarioResult(
        scenario, wrk_command.replace("127.0.0.1:0/", "127.0.0.1:PORT/"),
        SideResult("prefork", prefork.command), SideResult(gunicorn.label, gunicorn.command))

    with running(prefork, gunicorn):
        for server in (prefork, gunicorn):
            if args.warmup > 0:
                run_wrk(wrk_argv(tools.wrk, args, scenario, server.port, args.warmup),
                        server, args.warmup)
        for rnd in range(1, args.rounds + 1):
            for server, side in ((prefork, result.prefork), (gunicorn, result.gunicorn)):
                res = measured_run(args, tools.wrk, scenario, server, progress)
                side.runs.append(res)
                progress(f"round {rnd}/{args.rounds} {server.label}: {res.rps:,.0f} req/s")
        result.prefork.pss_mib = pss_mib(prefork.workers())
        result.gunicorn.pss_mib = pss_mib(gunicorn.workers())

    if args.worker_counts:
        result.logged, result.per_worker = count_per_worker(scenario, args, tools, tmp,
                                                            progress)
        progress(f"prefork with access log: {result.logged.rps:,.0f} req/s, "
                 f"per worker {dict(result.per_worker)}")
    return result


def count_per_worker(scenario: Scenario, args: argparse.Namespace, tools: Tools, tmp: Path,
                     progress: Callable[[str], None]) -> tuple[WrkResult, Counter[int]]:
    """One more prefork run with `%(p)s` in the access log: requests per worker pid."""
    access = tmp / f"{scenario.name}-access.log"
    server = prefork_server("prefork+accesslog", tools, args,
                            tmp / f"{scenario.name}-prefork-accesslog.log",
                            ["--access-logfile", str(access), "--access-log-format", "%(p)s"])
    with running(server):
        if args.warmup > 0:
            run_wrk(wrk_argv(tools.wrk, args, scenario, server.port, args.warmup), server,
                    args.warmup)
        for attempt in range(args.retries + 1):  # as measured_run(), counting one run only
            wait_for_quiet(args)
            offset = wait_stable_size(access)
            res = run_wrk(wrk_argv(tools.wrk, args, scenario, server.port, args.duration),
                          server, args.duration)
            end = wait_stable_size(access)
            if res.other_load <= args.max_other_load:
                break
            if attempt < args.retries:
                progress(f"{server.label}: run discarded (other processes used "
                         f"{res.other_load:.0%} of the cores); again")
    with open(access, "rb") as f:
        f.seek(offset)
        text = f.read(end - offset)
    # `%(p)s` is "<pid>", as in gunicorn; one line per request.
    return res, Counter(int(pid) for pid in re.findall(rb"^<(\d+)>$", text, re.M))


def wait_stable_size(path: Path, quiet: float = 0.2, timeout: float = 10.0) -> int:
    """The file's size once it stopped growing for `quiet` seconds (lines still in flight)."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size if path.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.02)
    return size


def measure_startup(label: str, make: Callable[[Path], Server], args: argparse.Namespace,
                    tmp: Path) -> list[float]:
    """Seconds from spawn to the first served 200, once per start."""
    times = []
    for i in range(args.starts):
        server = make(tmp / f"startup-{label.replace(' ', '_')}-{i}.log")
        try:
            wait_for_quiet(args)
            t0 = time.perf_counter()
            server.spawn()
            server.wait_first_response()
            times.append(time.perf_counter() - t0)
        finally:
            with signals_deferred():
                server.stop()
    print(f"[startup] {label}: " + ", ".join(f"{t * 1000:.0f} ms" for t in times),
          file=sys.stderr, flush=True)
    return times


# --------------------------------------------------------------------------- report

def machine_info(tools: Tools) -> list[str]:
    def first_line(argv: list[str], env: dict[str, str] | None = None) -> str:
        done = subprocess.run(argv, cwd=HERE, env=env, capture_output=True, text=True)
        return (done.stdout + done.stderr).strip().splitlines()[0]

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {cpu}, Linux {platform.release()}; "
        "wrk and both servers share these cores",
        f"- load average before the run: {load_average()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- {first_line([*tools.prefork, '--version'], tools.prefork_env)}: "
        f"{tools.prefork_origin}",
        f"- {first_line([*tools.gunicorn, '--version'])}",
        f"- {first_line([tools.wrk, '-v'])}",
    ]


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt_errors(runs: Sequence[WrkResult]) -> str:
    non_2xx = sum(r.non_2xx for r in runs)
    sock: Counter[str] = sum((r.socket_errors for r in runs), Counter())
    parts = [f"non-2xx {non_2xx}"] if non_2xx else []
    parts += [f"{kind} {n}" for kind, n in sock.items() if n]
    return ", ".join(parts) or "none"


def fmt_cpu_split(runs: Sequence[WrkResult]) -> str:
    total: Counter[int] = Counter()
    for r in runs:
        total.update(r.worker_cpu)
    whole = sum(total.values()) or 1.0
    return " / ".join(f"{100 * s / whole:.0f}%" for s in sorted(total.values(), reverse=True))


def report(args: argparse.Namespace, machine: list[str], results: list[ScenarioResult],
           startup: dict[str, list[float]]) -> str:
    command = shlex.join(["python3", "benchmarks/bench.py", *sys.argv[1:]])
    out = ["## Benchmark run", "", "Command (from the repo root):", "", "```sh", command, "```", ""]
    out += machine
    out += [f"- load average after the run: {load_average()}"]
    out += [f"- settings: {args.workers} workers each, wrk -t{args.wrk_threads} "
            f"-c{args.connections}, {args.rounds} alternating rounds of {args.duration:g} s "
            f"(after a {args.warmup:g} s warm-up per server), extra prefork args: "
            f"`{shlex.join(args.prefork_args) or 'none'}`"]
    if args.max_other_load < 1:
        redone = sum(r.redone for res in results for side in (res.prefork, res.gunicorn)
                     for r in side.runs)
        out += [f"- quiet machine: each run and start waited (up to {args.quiet_timeout:g} s) "
                f"until other processes used at most {args.max_other_load:.0%} of the cores, "
                f"and a run they disturbed more was redone (up to {args.retries} times); "
                f"{redone} measured runs were redone"]
    out.append("")

    out += ["| scenario | server | req/s (median) | runs | prefork / gunicorn | wrk errors "
            "| worker CPU split | worker PSS MiB | other load |",
            "|---|---|--:|---|--:|---|---|---|--:|"]
    for res in results:
        ratio = res.prefork.median_rps / res.gunicorn.median_rps
        for side, ratio_cell in ((res.prefork, f"**{ratio:.2f}×**"), (res.gunicorn, "")):
            runs = " / ".join(f"{r.rps:,.0f}" for r in side.runs)
            pss = " / ".join(f"{m:.1f}" for m in side.pss_mib)
            out.append(f"| {res.scenario.title} | {side.label} | {side.median_rps:,.0f} | {runs} "
                       f"| {ratio_cell} | {fmt_errors(side.runs)} | {fmt_cpu_split(side.runs)} "
                       f"| {pss} | {max(r.other_load for r in side.runs):.0%} |")
    out += ["", "*worker CPU split*: each worker's share of the CPU time its server's workers used "
            "in the measured runs. *other load*: the most, over the kept runs, that processes not "
            "started by bench.py used of all cores (other work on the machine).", ""]

    if any(res.per_worker for res in results):
        out += ["Requests per prefork worker under load (one extra run per scenario with "
                "`--access-logfile FILE --access-log-format '%(p)s'`, same wrk settings):", "",
                "| scenario | req/s with access log | requests per worker | shares | other load |",
                "|---|--:|---|---|--:|"]
        for res in results:
            if not (res.per_worker and res.logged):
                continue
            counts = sorted(res.per_worker.values(), reverse=True)
            total = sum(counts) or 1
            out.append(f"| {res.scenario.title} | {res.logged.rps:,.0f} "
                       f"| {' / '.join(f'{c:,}' for c in counts)} "
                       f"| {' / '.join(f'{100 * c / total:.0f}%' for c in counts)} "
                       f"| {res.logged.other_load:.0%} |")
        out.append("")

    if startup:
        out += [f"Start-up to the first served request ({args.workers} workers, median of "
                f"{args.starts} starts; spawn, then connect-and-GET every 1 ms):", "",
                "| server | median | min | max |", "|---|--:|--:|--:|"]
        for label, times in startup.items():
            out.append(f"| {label} | {statistics.median(times) * 1000:.0f} ms "
                       f"| {min(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms |")
        out.append("")

    out += ["Commands (PORT is a free loopback port picked per run; cwd `benchmarks/`):", ""]
    for res in results:
        out += [f"- {res.scenario.title}: `{res.wrk_command}`",
                f"  - `{res.prefork.command}`", f"  - `{res.gunicorn.command}`"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-w", "--workers", type=int, default=2, help="workers for each server")
    p.add_argument("-c", "--connections", type=int, default=50, help="wrk -c")
    p.add_argument("-t", "--wrk-threads", type=int, default=2, help="wrk -t")
    p.add_argument("-d", "--duration", type=int, default=5,
                   help="seconds per wrk run (wrk takes whole seconds)")
    p.add_argument("-r", "--rounds", type=int, default=3, help="alternating rounds per scenario")
    p.add_argument("--warmup", type=int, default=1,
                   help="seconds of unreported wrk warm-up per server and scenario (0: none)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    p.add_argument("--prefork-args", type=shlex.split, default=[],
                   help="extra prefork arguments, one shell-quoted string, "
                        "e.g. --prefork-args='--keep-alive 2'")
    p.add_argument("--prefork-rev", metavar="REV",
                   help="benchmark prefork/ as of this git revision instead of the working tree")
    p.add_argument("--max-other-load", type=float, default=0.10,
                   help="share of all cores other processes may use: each run waits until they "
                        "use less, and a run they disturbed more is redone (1: no checks)")
    p.add_argument("--retries", type=int, default=3,
                   help="how often to redo a run that other processes disturbed")
    p.add_argument("--quiet-timeout", type=float, default=120.0,
                   help="longest wait in seconds for other processes to calm down before a run")
    p.add_argument("--starts", type=int, default=5, help="starts per server for start-up time "
                                                         "(0: skip)")
    p.add_argument("--no-worker-counts", dest="worker_counts", action="store_false",
                   help="skip the extra access-logged prefork run per scenario")
    p.add_argument("-o", "--output", type=Path, help="also write the Markdown report here")
    args = p.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        p.error(f"unknown scenario {unknown}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = scenarios
    if args.workers < 1 or args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        p.error("--workers, --rounds, --duration and --connections must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the `finally` blocks stop every server.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    results: list[ScenarioResult] = []
    startup: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="prefork-bench-") as tmpdir:
            tmp = Path(tmpdir)
            tools = find_tools(args.prefork_rev, tmp)
            machine = machine_info(tools)
            for name in args.scenarios:
                results.append(run_scenario(SCENARIOS[name], args, tools, tmp))
            if args.starts > 0:
                startup["prefork"] = measure_startup(
                    "prefork", lambda log: prefork_server("prefork", tools, args, log), args, tmp)
                startup["gunicorn sync"] = measure_startup(
                    "gunicorn sync",
                    lambda log: gunicorn_server("gunicorn sync", tools, args, log, ["-k", "sync"]),
                    args, tmp)
    except KeyboardInterrupt:
        print("bench.py: interrupted; every server was stopped", file=sys.stderr)
        return 130
    text = report(args, machine, results, startup)
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
