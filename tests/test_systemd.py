"""prefork under systemd: sd_notify, the watchdog, socket activation and the shipped units.

Three levels, cheapest first:
- in memory: the watchdog's health rule, STATUS text, EXTEND_TIMEOUT_USEC, the Notifier;
- the real server with a fake manager: the harness hands the listeners over as fds 3, 4 with
  LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES and owns NOTIFY_SOCKET; a `Recorder` thread reads
  every datagram as it arrives, with its sender pid (SO_PASSCRED) and arrival time, so
  ping intervals are measured, not guessed; Debian's `systemd-socket-activate` and
  `systemd-analyze verify` where installed;
- optionally the real manager: systemd 252 as PID 1 of a private PID + mount namespace runs
  the shipped units (skipped, with the reason, where namespaces are not allowed).
Every wait has a deadline; sleeps happen only as stimulus durations ("stay stopped 3 s").
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from prefork import systemd
from prefork.errors import ExitCode
from prefork.policy import WorkerRecord
from tests import harness
from tests.harness import DEADLINE, REPO, NotifySocket, Server, wait_for

UNITS = REPO / "systemd"


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Note:
    at: float  # time.monotonic() on arrival
    pid: int  # the sender, from SCM_CREDENTIALS
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def get(self, key: str) -> str | None:
        for line in self.lines:
            if line.startswith(key + "="):
                return line[len(key) + 1:]
        return None


class Recorder:
    """Reads a NotifySocket in a thread: every datagram with its sender pid and arrival time."""

    def __init__(self, notify: NotifySocket) -> None:
        self.sock = notify.sock
        self.sock.settimeout(0.1)
        self.notes: list[Note] = []
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            except OSError:
                return  # closed under us at teardown
            at = time.monotonic()
            pid = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("=iII", payload[:12])[0]
            with self.cond:
                self.notes.append(Note(at, pid, data.decode()))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.notes)

    def wait(self, match: Callable[[Note], bool] | str, after: int = 0,
             timeout: float = DEADLINE) -> tuple[int, Note]:
        """The first note at index >= after that matches (a str: has that line)."""
        if isinstance(match, str):
            line = match
            match = lambda n: line in n.lines  # noqa: E731
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(after, len(self.notes)):
                    if match(self.notes[i]):
                        return i, self.notes[i]
                left = end - time.monotonic()
                if left <= 0:
                    texts = [n.text for n in self.notes[after:]]
                    raise AssertionError(f"no matching notification; got {texts}")
                self.cond.wait(left)

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        with self.cond:
            return [n.at for n in self.notes if "WATCHDOG=1" in n.lines and since < n.at < until]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(DEADLINE)


class Launched(Server):
    """A harness.Server started from our own fd map and wrapper.

    `fds` become 3, 4, ... in the child; `wrap(argv, notify_path)` returns the full command
    line (a shell that exports LISTEN_PID=$$ before exec, or systemd-socket-activate).
    """

    def __init__(self, tmp_path: Path, wrap: Callable[[list[str], str], list[str]],
                 *args: str, fds: Sequence[socket.socket] = (), app: str = "tests.apps:app",
                 workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp_path
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.log_path = tmp_path / f"{self.name}.log"
        self.notify = NotifySocket(tmp_path / f"{self.name}.notify")
        self.listener = None
        argv = [sys.executable, "-m", "prefork", app, "--name", self.name,
                "--error-logfile", str(self.log_path), "--workers", str(workers), *args]
        self.argv = wrap(argv, self.notify.path)
        environ = dict(os.environ, NOTIFY_SOCKET=self.notify.path, PYTHONDONTWRITEBYTECODE="1")
        for var in ("PREFORK_CMD_ARGS", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
                    "WATCHDOG_USEC", "WATCHDOG_PID"):
            environ.pop(var, None)
        environ.update(env or {})
        numbers = [s.fileno() for s in fds]

        def preexec() -> None:
            # Two steps, so that a source fd that is itself 3 or 4 is not overwritten early.
            high = [os.dup(fd) for fd in numbers]
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)

        self.stdout_path = tmp_path / f"{self.name}.out"
        self.stderr_path = tmp_path / f"{self.name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, env=environ, cwd=REPO,
                                         pass_fds=tuple(range(3, 3 + len(fds))),
                                         preexec_fn=preexec, stdout=out, stderr=err)
        self.pid = self.proc.pid


def export_own_pid(*variables: str) -> Callable[[list[str], str], list[str]]:
    """A wrapper that exports each variable as the server's own pid ($$ survives exec)."""
    sets = "; ".join(f"{v}=$$; export {v}" for v in variables)
    return lambda argv, _: ["/bin/sh", "-c", f'{sets}; exec "$@"', "sh", *argv]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=DEADLINE)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def unix_get(path: Path, target: str = "/") -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", target, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tcp_get(port: int, target: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        conn.request("GET", target, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tcp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., tuple]]:
    """start(*args, env=..., own_pid=(...), launch=...) -> (server, recorder)."""
    started: list[tuple[Server, Recorder]] = []

    def run(*args: str, own_pid: Sequence[str] = (), launch: Callable[[], Server] | None = None,
            **kw: object) -> tuple[Server, Recorder]:
        if launch is not None:
            server = launch()
        else:
            with pytest.MonkeyPatch.context() as patch:
                if own_pid:
                    # harness.Server wraps its command in a shell exporting LISTEN_PID=$$;
                    # ours goes inside it and exports more of the same pid.
                    wrapped = export_own_pid(*own_pid)(harness.prefork_command(), "")
                    patch.setattr(harness, "prefork_command", lambda: wrapped)
                server = Server(tmp_path, *args, **kw)  # type: ignore[arg-type]
        recorder = Recorder(server.notify)
        started.append((server, recorder))
        return server, recorder

    yield run
    for server, recorder in started:
        recorder.close()
        server.close()


def wait_ready(server: Server, recorder: Recorder, after: int = 0) -> tuple[int, Note]:
    index, note = recorder.wait("READY=1", after)
    assert note.pid == server.pid, f"READY=1 from pid {note.pid}, not the master {server.pid}"
    return index, note


def worker(record_ready: bool = True, beat: float = 0.0, **kw: object) -> WorkerRecord:
    values: dict = dict(pid=1, slot=1, generation=1, channel=None, dump_fd=-1, born=0.0,
                        last_beat=beat, ready=record_ready)
    values.update(kw)
    return WorkerRecord(**values)


# -- in memory -------------------------------------------------------------------------------


def hup_serves_on(server: Server, notes: Recorder, *gets: Callable[[], tuple[int, bytes]]) -> None:
    """HUP, wait for READY, then every socket (one `get` each) is served by the new workers."""
    old = server.wait_workers(2)
    mark = notes.mark()
    server.kill(signal.SIGHUP)
    wait_ready(server, notes, after=mark)
    new = server.wait_workers(2, exclude=old)
    for get in gets:
        assert int(get()[1]) in new


def test_watchdog_takes_its_variables_out_of_the_environment() -> None:
    environ = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "77", "OTHER": "x"}
    dog = systemd.Watchdog.from_environ(environ, 77, now=100.0)
    assert dog is not None and environ == {"OTHER": "x"}  # workers inherit neither
    assert dog.interval == 2.0 and dog.window == systemd.BEAT_WINDOW_FLOOR
    assert dog.next_deadline() == 102.0
    # Without WATCHDOG_PID the duty is ours (sd_watchdog_enabled(3)).
    assert systemd.Watchdog.from_environ({"WATCHDOG_USEC": "20000000"}, 5, 0.0) is not None
    # Another process's watchdog, or none at all: no pings, and the variables still go.
    for env in ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "78"},
                {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "abc"}, {"WATCHDOG_PID": "77"},
                {"WATCHDOG_USEC": "٣"}):
        assert systemd.Watchdog.from_environ(env, 77, 0.0) is None
        assert env == {}


def test_watchdog_health_rule() -> None:
    dog = systemd.Watchdog(usec=20_000_000, now=0.0)  # WatchdogSec=20: ping every 10 s
    assert (dog.interval, dog.window) == (10.0, 10.0)
    # Not due yet: no ping, whatever the workers do.
    assert not dog.tick([worker(beat=9.0)], now=9.0)
    # Due, and one ready worker beat within the window: ping.
    assert dog.tick([worker(beat=1.0), worker(beat=0.5)], now=10.0)
    assert dog.next_deadline() == 20.0 and dog.problem == ""
    # Workers that do not count: not ready yet, retiring, or gone (EOF seen).
    ignored = [worker(record_ready=False, beat=30.0), worker(beat=30.0, retiring=True),
               worker(beat=30.0, gone=True), worker(beat=19.0)]
    assert not dog.tick(ignored, now=30.0)
    assert "no worker has beaten within 10 s" in dog.problem
    # A withheld ping is re-checked one interval later, never in a busy loop.
    assert dog.next_deadline() == 40.0
    assert not dog.tick([worker(beat=39.0)], now=39.5)
    assert dog.tick([worker(beat=39.0)], now=40.0) and dog.problem == ""


def test_watchdog_window_has_a_floor_above_the_worker_beat_interval() -> None:
    dog = systemd.Watchdog(usec=1_000_000, now=0.0)  # ping every 0.5 s
    assert dog.window == systemd.BEAT_WINDOW_FLOOR == 3.0
    assert dog.tick([worker(beat=0.0)], now=2.9)  # two missed beats: still healthy
    assert not dog.tick([worker(beat=0.0)], now=3.5)


def test_status_line() -> None:
    line = systemd.status_line
    assert line("running", 4, 4, 3, 2, 4) == "4/4 workers ready, generation 3"
    assert line("booting", 1, 4, 1, 0, 1) == "booting: 1/4 workers ready, generation 1"
    assert (line("reloading", 2, 4, 4, 3, 6)
            == "reloading: 2/4 workers ready, generation 4; generation 3 serving")
    assert line("stopping", 4, 4, 3, 2, 3) == "stopping: 3 workers left"
    assert (line("running", 2, 2, 1, 1, 2, ["reload failed: boom", ""])
            == "reload failed: boom; 2/2 workers ready, generation 1")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Recorder]:
    notify = NotifySocket(tmp_path / "notify")
    recorder = Recorder(notify)
    yield recorder
    recorder.close()
    notify.close()


def test_notifier_status_is_sent_when_it_changes(receiver: Recorder) -> None:
    notifier = systemd.Notifier(receiver.sock.getsockname())
    notifier.status("1/2 workers ready, generation 1")
    notifier.status("1/2 workers ready, generation 1")  # unchanged: not sent again
    notifier.status("2/2 workers ready, generation 1", "READY=1")
    notifier.status("2/2 workers ready, generation 1", "READY=1")  # with READY: always sent
    assert notifier.main_pid(4242)
    receiver.wait("MAINPID=4242")
    assert [n.text for n in receiver.notes] == [
        "STATUS=1/2 workers ready, generation 1",
        "READY=1\nSTATUS=2/2 workers ready, generation 1",
        "READY=1\nSTATUS=2/2 workers ready, generation 1",
        "MAINPID=4242",
    ]
    assert {n.pid for n in receiver.notes} == {os.getpid()}


def test_notifier_abstract_address_and_no_address() -> None:
    name = f"prefork-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert systemd.Notifier("@" + name).notify("READY=1", "STATUS=x")
        sock.settimeout(DEADLINE)
        assert sock.recv(100) == b"READY=1\nSTATUS=x"
    assert not systemd.Notifier(None).notify("READY=1")
    assert not systemd.Notifier("vsock:2:1234").enabled  # newer systemd only: unsupported
    assert not systemd.Notifier("/nonexistent/notify").notify("READY=1")  # never raises


def test_timeout_extender_asks_once_per_phase(receiver: Recorder) -> None:
    extender = systemd.TimeoutExtender(systemd.Notifier(receiver.sock.getsockname()))
    extender.cover(130.0, now=100.0)  # boot: 30 s from now + the margin
    extender.cover(130.0, now=101.0)  # same deadline: nothing new to ask
    extender.cover(130.9, now=101.0)  # less than a second later: the margin covers it
    extender.cover(140.0, now=110.0)  # the deadline moved (a worker spawned later)
    extender.cover(105.0, now=100.0, new_phase=True)  # a stop: a new timer in systemd
    margin = int(systemd.EXTEND_MARGIN * 1_000_000)
    receiver.wait(lambda n: n.text == f"EXTEND_TIMEOUT_USEC={5_000_000 + margin}")
    assert [n.text for n in receiver.notes] == [
        f"EXTEND_TIMEOUT_USEC={30_000_000 + margin}",
        f"EXTEND_TIMEOUT_USEC={30_000_000 + margin}",
        f"EXTEND_TIMEOUT_USEC={5_000_000 + margin}",
    ]


# -- the real server, a fake manager ---------------------------------------------------------


def test_ready_once_workers_are_up_and_status_kept_current(start) -> None:
    server, notes = start(workers=2)
    _, ready = wait_ready(server, notes)
    # READY=1 went out after every worker of the first generation reported ready, so a
    # client connecting right now is served.
    assert server.log().count("worker ready slot=") == 2
    assert server.request("/")[0] == 200
    assert ready.get("STATUS") == "2/2 workers ready, generation 1"
    # STATUS follows the worker count; READY is not repeated.
    mark = notes.mark()
    server.kill(signal.SIGTTIN)
    notes.wait(lambda n: n.get("STATUS") == "3/3 workers ready, generation 1", mark)
    assert sum("READY=1" in n.lines for n in notes.notes) == 1
    # Nothing but the master speaks, no watchdog without WATCHDOG_USEC, nothing leaks.
    assert {n.pid for n in notes.notes} == {server.pid}
    assert not notes.pings()
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS",
                "LISTEN_FDNAMES"):
        assert server.request(f"/getenv?{var}")[1] == b"<unset>", var


def test_hup_sends_reloading_with_monotonic_usec_then_ready(start) -> None:
    server, notes = start(workers=2)
    wait_ready(server, notes)
    old = server.wait_workers(2)
    mark = notes.mark()
    before = time.monotonic()
    server.kill(signal.SIGHUP)
    i, reloading = notes.wait("RELOADING=1", mark)
    # One datagram, as Type=notify-reload requires, stamped with CLOCK_MONOTONIC in µs
    # (the same clock as our time.monotonic()).
    stamp = reloading.get("MONOTONIC_USEC")
    assert stamp is not None and before * 1e6 <= int(stamp) <= reloading.at * 1e6
    # The new generation has its own deadline: max(--timeout, 5 s) = 30 s, plus the margin.
    _, extend = notes.wait(lambda n: n.get("EXTEND_TIMEOUT_USEC") is not None, i)
    assert int(extend.get("EXTEND_TIMEOUT_USEC") or 0) == pytest.approx(35e6, abs=0.5e6)
    notes.wait(lambda n: (n.get("STATUS") or "").startswith("reloading: "), i)
    _, ready = wait_ready(server, notes, after=i)
    assert ready.get("STATUS") == "2/2 workers ready, generation 2"
    assert {n.pid for n in notes.notes[mark:]} == {server.pid}
    server.wait_workers(2, exclude=old)
    assert server.request("/")[0] == 200


def test_failed_reload_sends_ready_with_the_reason(start, tmp_path: Path) -> None:
    app = tmp_path / "reloadable.py"
    app.write_text("def app(e, sr):\n    sr('200 OK', [])\n    return [b'v1']\n")
    server, notes = start("reloadable:app", "--chdir", str(tmp_path), workers=1)
    wait_ready(server, notes)
    app.write_text("raise ImportError('broken on disk')\n")
    mark = notes.mark()
    server.kill(signal.SIGHUP)
    i, ready = wait_ready(server, notes, after=mark)  # so `systemctl reload` never hangs
    status = ready.get("STATUS") or ""
    assert status.startswith("reload failed: ImportError: broken on disk")
    assert status.endswith("; 1/1 workers ready, generation 1")
    assert server.request("/")[1] == b"v1"
    # The reason stays in STATUS until a reload succeeds.
    assert all("reload failed" in (n.get("STATUS") or "reload failed")
               for n in notes.notes[i:])
    app.write_text("def app(e, sr):\n    sr('200 OK', [])\n    return [b'v2']\n")
    mark = notes.mark()
    server.kill(signal.SIGHUP)
    _, ready = wait_ready(server, notes, after=mark)
    assert ready.get("STATUS") == "1/1 workers ready, generation 2"


def test_stopping_on_term_asks_for_the_graceful_timeout(start) -> None:
    server, notes = start("tests.apps:app", "--graceful-timeout", "50", workers=2)
    wait_ready(server, notes)
    mark = notes.mark()
    server.kill(signal.SIGTERM)
    i, stopping = notes.wait("STOPPING=1", mark)
    assert stopping.pid == server.pid
    assert (stopping.get("STATUS") or "").startswith("stopping: ")
    # TimeoutStopSec= may be shorter than --graceful-timeout: ask for 50 s + the margin.
    _, extend = notes.wait(lambda n: n.get("EXTEND_TIMEOUT_USEC") is not None, i)
    assert int(extend.get("EXTEND_TIMEOUT_USEC") or 0) == 55_000_000
    assert server.wait_exit() == 0


def test_quick_stop_sends_stopping_without_extension(start) -> None:
    server, notes = start(workers=1)
    wait_ready(server, notes)
    mark = notes.mark()
    server.kill(signal.SIGINT)
    notes.wait("STOPPING=1", mark)
    assert server.wait_exit() == 0
    assert not any(n.get("EXTEND_TIMEOUT_USEC") for n in notes.notes[mark:])


@pytest.mark.parametrize("preload", [False, True])
def test_boot_asks_for_the_time_prefork_itself_allows(start, preload: bool) -> None:
    # Without --preload each worker imports the app and is ready, or killed, --timeout (45 s)
    # plus the stack-dump grace after its birth; with --preload the master's own import gets
    # --timeout. Either way prefork asks for that (+ the margin) before READY.
    args = ["--preload"] if preload else []
    server, notes = start("tests.apps:app", "--timeout", "45", *args, workers=1)
    index, _ = wait_ready(server, notes)
    asked = [int(n.get("EXTEND_TIMEOUT_USEC") or 0) for n in notes.notes[:index]
             if n.get("EXTEND_TIMEOUT_USEC")]
    # (With --preload the workers' own deadline is less than a second later: not re-sent.)
    assert asked == [pytest.approx(50e6 if preload else 50.5e6, abs=0.3e6)]
    assert not any(n.get("EXTEND_TIMEOUT_USEC") for n in notes.notes[index:])


def test_app_import_error_says_so_in_status(start) -> None:
    server, notes = start("tests.broken_app:app", workers=1)
    assert server.wait_exit() == ExitCode.APP_LOAD_ERROR
    _, stopping = notes.wait("STOPPING=1")
    assert (stopping.get("STATUS") or "").startswith("boot failed: worker slot=1 died")
    assert not any("READY=1" in n.lines for n in notes.notes)


# -- the watchdog ----------------------------------------------------------------------------

WATCHDOG_1S = {"WATCHDOG_USEC": "1000000"}  # systemd's WatchdogSec=1: ping every 0.5 s


def test_watchdog_pings_at_half_the_interval_from_the_master(start) -> None:
    server, notes = start(workers=2, env=WATCHDOG_1S, own_pid=["WATCHDOG_PID"])
    wait_ready(server, notes)
    first = notes.wait("WATCHDOG=1")[1].at
    wait_for(lambda: len(notes.pings(first - 0.001)) >= 9, what="nine pings")
    pings = notes.pings(first - 0.001)[:9]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    print(f"watchdog ping gaps (WATCHDOG_USEC=1000000): {[f'{g:.3f}' for g in gaps]}")
    assert {n.pid for n in notes.notes if "WATCHDOG=1" in n.lines} == {server.pid}
    # Never faster than half the interval (minus the receiver's own jitter), and typically
    # at half: judged by the median, since a loaded machine may delay any one ping.
    assert min(gaps) > 0.45, gaps
    assert 0.45 < statistics.median(gaps) < 0.7, gaps
    # Workers never inherit the duty.
    assert server.request("/getenv?WATCHDOG_USEC")[1] == b"<unset>"
    assert server.request("/getenv?WATCHDOG_PID")[1] == b"<unset>"


def test_watchdog_pings_stop_while_the_master_is_stopped(start) -> None:
    server, notes = start(workers=2, env=WATCHDOG_1S)
    wait_ready(server, notes)
    notes.wait("WATCHDOG=1")
    stopped = time.monotonic()
    server.kill(signal.SIGSTOP)
    try:
        time.sleep(3)  # the stimulus: a master stopped for six ping intervals
    finally:
        resumed = time.monotonic()
        server.kill(signal.SIGCONT)
    # A ping already on its way may land just after SIGSTOP; none can come later.
    assert notes.pings(stopped + 0.3, resumed) == []
    wait_for(lambda: notes.pings(resumed), what="pings after SIGCONT")


def test_watchdog_pings_stop_when_every_worker_is_stopped(start) -> None:
    # --timeout 60: the master's own hang handling stays out of the way for this test.
    server, notes = start("tests.apps:app", "--timeout", "60", workers=2, env=WATCHDOG_1S)
    wait_ready(server, notes)
    notes.wait("WATCHDOG=1")
    workers = server.wait_workers(2)
    stopped = time.monotonic()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        # The stimulus: the 3 s window plus three ping intervals.
        time.sleep(systemd.BEAT_WINDOW_FLOOR + 1.5)
        # The loop is still turning and deciding (it logged why it withholds the pings).
        server.wait_log("watchdog: no worker has beaten within 3 s, pings withheld")
    finally:
        resumed, mark = time.monotonic(), notes.mark()
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    # Pings went on while the last beats were fresh, then stopped: the window is 3 s from
    # each worker's last beat, which came at most a second before SIGSTOP.
    assert notes.pings(stopped, stopped + 1.5), "pings stopped before the window ended"
    assert notes.pings(stopped + systemd.BEAT_WINDOW_FLOOR + 0.3, resumed) == []
    notes.wait(lambda n: "pings withheld" in (n.get("STATUS") or ""))
    # Resumed workers beat again: pings resume, and the log and STATUS say so.
    wait_for(lambda: notes.pings(resumed), what="pings after SIGCONT")
    server.wait_log("watchdog: a worker beat again; pings resumed")
    notes.wait(lambda n: n.get("STATUS") == "2/2 workers ready, generation 1", mark)


def test_no_watchdog_for_another_pid(start) -> None:
    # WATCHDOG_PID names another process: the variables are not for us (sd_watchdog_enabled).
    server, notes = start(workers=1, env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    wait_ready(server, notes)
    time.sleep(1.0)  # the stimulus: five would-be ping intervals
    assert server.request("/getenv?WATCHDOG_USEC")[1] == b"<unset>"
    assert not notes.pings()


# -- socket activation -----------------------------------------------------------------------


def test_two_named_sockets_are_adopted_kept_across_hup_and_never_shut_down(
        start, tmp_path: Path) -> None:
    tcp = tcp_listener()
    unix_path = tmp_path / "admin.sock"
    unix = unix_listener(unix_path)
    port = tcp.getsockname()[1]
    try:
        server, notes = start(launch=lambda: Launched(
            tmp_path, export_own_pid("LISTEN_PID"), fds=[tcp, unix],
            env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin"}))
        wait_ready(server, notes)
        log = server.log()
        assert f"listening at 127.0.0.1:{port} (systemd:http)" in log
        assert f"listening at unix:{unix_path} (systemd:admin)" in log
        assert "127.0.0.1:8000" not in log  # the default --bind was never bound
        assert tcp_get(port)[0] == 200 and unix_get(unix_path)[0] == 200
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            assert unix_get(unix_path, f"/getenv?{var}")[1] == b"<unset>", var
        # HUP: a new generation serves on the very same sockets.
        hup_serves_on(server, notes, lambda: tcp_get(port, "/pid"),
                      lambda: unix_get(unix_path, "/pid"))
        server.kill(signal.SIGTERM)
        assert server.wait_exit() == 0
        # The manager's copies are intact: never shutdown(), the unix file never unlinked.
        assert unix_path.exists()
        for family, address in ((socket.AF_INET, ("127.0.0.1", port)),
                                (socket.AF_UNIX, str(unix_path))):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(DEADLINE)
                client.connect(address)  # lands in the backlog we still hold
    finally:
        tcp.close()
        unix.close()


def test_listen_fds_for_another_pid_are_ignored(start, tmp_path: Path) -> None:
    passed = tcp_listener()
    own = tmp_path / "own.sock"
    try:
        server, notes = start(launch=lambda: Launched(
            tmp_path, lambda argv, _: argv, "--bind", f"unix:{own}", fds=[passed],
            env={"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "http"}))
        wait_ready(server, notes)
        assert f"listening at unix:{own} (unix:{own})" in server.log()
        assert "systemd:" not in server.log()
        # Not ours, so not used, and unset all the same (sd_listen_fds does both).
        assert unix_get(own, "/getenv?LISTEN_FDS")[1] == b"<unset>"
        assert unix_get(own, "/getenv?LISTEN_PID")[1] == b"<unset>"
    finally:
        passed.close()


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"),
                    reason="systemd-socket-activate is not installed")
def test_systemd_socket_activate(start, tmp_path: Path) -> None:
    # systemd-socket-activate binds, waits for the first connection, then execs prefork in
    # its own pid with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set; it passes no environment
    # but what -E names. Unix sockets: no port to race for.
    http_sock, admin_sock = tmp_path / "http.sock", tmp_path / "admin.sock"
    never = tmp_path / "never.sock"

    def wrap(argv: list[str], notify_path: str) -> list[str]:
        return ["systemd-socket-activate", "-l", str(http_sock), "-l", str(admin_sock),
                "--fdname=http:admin", "-E", f"NOTIFY_SOCKET={notify_path}",
                "-E", "PYTHONDONTWRITEBYTECODE=1", *argv]

    server, notes = start(launch=lambda: Launched(tmp_path, wrap, "--bind", f"unix:{never}"))
    wait_for(lambda: f"Listening on {admin_sock} as 4." in server.stderr(),
             what="systemd-socket-activate to listen")
    assert not notes.notes  # prefork does not exist yet
    # The first connection starts prefork, which serves it from the backlog.
    assert unix_get(http_sock)[0] == 200
    wait_ready(server, notes)  # same pid: socket-activate exec'd into prefork
    assert psutil.Process(server.pid).cmdline()[0].startswith("prefork: master")
    log = server.log()
    assert f"listening at unix:{http_sock} (systemd:http)" in log
    assert f"listening at unix:{admin_sock} (systemd:admin)" in log
    assert not never.exists()  # --bind was not used
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        assert unix_get(admin_sock, f"/getenv?{var}")[1] == b"<unset>", var
    hup_serves_on(server, notes, lambda: unix_get(http_sock, "/pid"),
                  lambda: unix_get(admin_sock, "/pid"))
    server.kill(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert http_sock.exists() and admin_sock.exists()  # never unlinked by prefork


# -- the shipped unit files ------------------------------------------------------------------


def unit_lines(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every directive, in order."""
    out, section = [], ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((section, key, value))
    return out


def directive(path: Path, key: str) -> str:
    values = [v for _, k, v in unit_lines(path) if k == key]
    assert len(values) == 1, f"{path.name}: {key}= {values}"
    return values[0]


@pytest.mark.parametrize("name", ["prefork.service", "prefork@.service"])
def test_service_units_say_what_the_issue_asks(name: str) -> None:
    unit = UNITS / name
    assert directive(unit, "Type") == "notify"
    # The systemd >= 253 variant is documented, in comments only (252 does not know it).
    mentions = [line for line in unit.read_text().splitlines() if "Type=notify-reload" in line]
    assert mentions and all(line.startswith("#") for line in mentions)
    assert directive(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert directive(unit, "NotifyAccess") == "main"
    assert directive(unit, "KillMode") == "mixed"
    assert directive(unit, "Restart") == "on-failure"
    codes = {int(c) for c in directive(unit, "RestartPreventExitStatus").split()}
    assert codes == {ExitCode.WORKER_BOOT_ERROR, ExitCode.APP_LOAD_ERROR}
    exec_start = directive(unit, "ExecStart")
    graceful = re.search(r"--graceful-timeout (\d+)", exec_start)
    timeout = re.search(r"--timeout (\d+)", exec_start)
    # Defaults when the unit does not set them: 30 s each (config.py).
    graceful_s = int(graceful.group(1)) if graceful else 30
    timeout_s = int(timeout.group(1)) if timeout else 30
    assert int(directive(unit, "TimeoutStopSec")) > graceful_s
    assert int(directive(unit, "WatchdogSec")) >= 2 * timeout_s
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "DynamicUser",
                "RestrictAddressFamilies"):
        directive(unit, key)
    assert "AF_UNIX" in directive(unit, "RestrictAddressFamilies")  # sd_notify, heartbeats


@pytest.mark.parametrize("name", ["prefork.service", "prefork@.service", "prefork.socket",
                                  "prefork@.socket"])
def test_every_directive_says_why(name: str) -> None:
    # [Service] and [Socket] directives each follow their own comment line.
    lines = (UNITS / name).read_text().splitlines()
    section = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section in ("[Service]", "[Socket]"):
            assert lines[i - 1].startswith("#"), f"{name}: no comment above {line!r}"


@pytest.mark.parametrize("name", ["prefork.socket", "prefork@.socket"])
def test_socket_units_name_their_fds(name: str) -> None:
    assert directive(UNITS / name, "FileDescriptorName") == "http"
    text = (UNITS / name).read_text()
    assert "ListenStream=127.0.0.1:" in text or "ListenStream=/run/prefork/%i.sock" in text
    assert "ListenStream=/run/prefork/" in text  # a unix example in both


def real_prefork() -> list[str]:
    exe = shutil.which("prefork")
    return [os.path.realpath(exe)] if exe else [sys.executable, "-m", "prefork"]


def units_for_verify(tmp_path: Path) -> Path:
    """A copy of systemd/ whose ExecStart= names an executable that exists here.

    `systemd-analyze verify` fails a unit whose ExecStart binary is missing, and the units
    name /usr/local/bin/prefork, where `pip install` puts it on a Debian host; this machine
    may have it elsewhere (a virtualenv, pyenv). Nothing else is changed.
    """
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/usr/local/bin/prefork", " ".join(real_prefork()))
        (out / unit.name).write_text(text)
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          timeout=DEADLINE)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    units = units_for_verify(tmp_path)
    # It exits 0 even for unknown values (they are only warned about), so stderr must be
    # empty. The template is verified through an instance (prefork@demo.*).
    for files in (["prefork.service", "prefork.socket"],
                  ["prefork@demo.service", "prefork@demo.socket"]):
        result = analyze("verify", *(str(units / f) for f in files))
        assert (result.returncode, result.stderr) == (0, ""), files
    # The check has teeth: systemd < 253 does not know notify-reload, and says so.
    version = int(analyze("--version").stdout.split()[1])
    if version < 253:
        service = units / "prefork.service"
        service.write_text(service.read_text().replace("\nType=notify\n",
                                                       "\nType=notify-reload\n"))
        result = analyze("verify", str(service), str(units / "prefork.socket"))
        assert "notify-reload" in result.stderr


# -- the real manager ------------------------------------------------------------------------

SYSTEMD = Path("/lib/systemd/systemd")

BOOT = """#!/bin/bash
# PID 1 of a new PID + mount namespace: a private /run (the host keeps seeing "not booted"),
# our units in /run/systemd/system, and a target that starts nothing else.
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system
cp -r {units}/. /run/systemd/system/
export container=prefork-test
exec {systemd} --system --unit=pftest.target --log-target=console --show-status=no
"""


def namespace_refusal() -> str | None:
    """Why this machine cannot run systemd in a namespace, or None if it can."""
    if os.getuid() != 0:
        return "needs root (CAP_SYS_ADMIN) for unshare --pid --mount"
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--mount-proc", "true"],
                           capture_output=True, text=True, timeout=DEADLINE)
    if probe.returncode != 0:
        return f"namespaces are not permitted here: {probe.stderr.strip()}"
    return None


class Manager:
    """systemd as PID 1 of its own namespace, driven with nsenter + systemctl."""

    def __init__(self, tmp_path: Path, units: Path, service_log: Path) -> None:
        self.log_path = tmp_path / "boot.log"  # the boot script; systemd logs to the console
        self.service_log = service_log
        boot = tmp_path / "boot.sh"
        boot.write_text(BOOT.format(units=units, systemd=SYSTEMD))
        boot.chmod(0o755)
        with open(self.log_path, "wb") as log:
            self.unshare = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount", "--mount-proc", str(boot)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = 0  # systemd, as the host sees it

        def init() -> int:
            try:
                kids = psutil.Process(self.unshare.pid).children()
            except psutil.NoSuchProcess:
                return 0
            return next((k.pid for k in kids if "systemd" in " ".join(k.cmdline())), 0)

        self.pid = wait_for(init, what="systemd to start in the namespace")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", *args],
                                capture_output=True, text=True, timeout=DEADLINE)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr, self.log())
        return result

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait(self, unit: str, what: str, **expected: str) -> dict[str, str]:
        def check() -> dict[str, str] | None:
            props = self.show(unit, *expected)
            return props if all(props[k] == v for k, v in expected.items()) else None
        return wait_for(check, what=f"{what} ({expected})")  # type: ignore[no-any-return]

    def log(self) -> str:
        """What the boot script and the service wrote, for failure messages."""
        return "".join(f"--- {p.name}:\n{p.read_text(errors='replace')}"
                       for p in (self.log_path, self.service_log) if p.exists())

    def close(self) -> None:
        # SIGKILL to a namespace's PID 1 kills every process in it, services included.
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.unshare.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(self.unshare.pid, signal.SIGKILL)
            self.unshare.wait()


def host_pid(ns_pid: str, name: str) -> int:
    """The host pid of the process named `name` whose innermost pid is `ns_pid`."""
    for p in psutil.process_iter(["cmdline"]):
        if name in " ".join(p.info["cmdline"] or []):
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
            except FileNotFoundError:
                continue
            nspids = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            if nspids.split()[-1] == ns_pid:
                return p.pid
    raise AssertionError(f"no process {name!r} with namespace pid {ns_pid}")


def test_real_systemd_runs_the_shipped_units(tmp_path: Path) -> None:
    reason = namespace_refusal()
    if reason:
        pytest.skip(f"real systemd in a namespace: {reason}")
    name = f"t{uuid.uuid4().hex[:10]}"
    sock_path, service_log = tmp_path / "http.sock", tmp_path / "service.log"
    units = tmp_path / "units"
    units.mkdir()
    for unit in ("prefork.service", "prefork.socket"):
        shutil.copy(UNITS / unit, units / unit)  # verbatim: the drop-ins below adapt them
    (units / "prefork.service.d").mkdir()
    (units / "prefork.service.d" / "test.conf").write_text(f"""\
[Unit]
# Start only what the test asks for, no sysinit/basic targets.
DefaultDependencies=no
[Service]
# This checkout's server and test app instead of /usr/local/bin/prefork and /srv/prefork.
ExecStart=
ExecStart={" ".join(real_prefork())} --name {name} --workers 2 --graceful-timeout 5 tests.apps:app
WorkingDirectory={REPO}
# Visible even when the checkout (or a virtualenv) is under /tmp, which PrivateTmp=
# replaces.
BindReadOnlyPaths={" ".join(sorted({str(REPO), sys.prefix, sys.base_prefix}))}
Environment=PYTHONDONTWRITEBYTECODE=1
# No journald in the namespace.
StandardOutput=append:{service_log}
StandardError=append:{service_log}
# A watchdog the test can see expire within seconds.
WatchdogSec=2
# The interpreter and checkout may live under /root, which a dynamic user cannot read and
# ProtectHome= hides; every other hardening directive stays on.
DynamicUser=no
ProtectHome=no
""")
    (units / "prefork.socket.d").mkdir()
    (units / "prefork.socket.d" / "test.conf").write_text(f"""\
[Unit]
DefaultDependencies=no
[Socket]
# A unix socket in the test's directory: no port to race for.
ListenStream=
ListenStream={sock_path}
""")
    (units / "pftest.target").write_text(
        "[Unit]\nDescription=prefork test\nDefaultDependencies=no\nWants=prefork.socket\n")

    manager = Manager(tmp_path, units, service_log)
    try:
        def up() -> bool:
            state = manager.run("systemctl", "is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")
        try:
            wait_for(up, what="systemd to finish booting")
        except AssertionError:
            pytest.skip(f"real systemd in a namespace did not boot:\n{manager.log()[-2000:]}")
        unit = "prefork.service"
        manager.wait("prefork.socket", "the socket unit", ActiveState="active")

        # start: Type=notify returns once READY=1 came, i.e. the workers are up.
        manager.run("systemctl", "start", unit)
        props = manager.show(unit, "ActiveState", "StatusText", "MainPID")
        assert props["ActiveState"] == "active"
        assert props["StatusText"] == "2/2 workers ready, generation 1"
        master = host_pid(props["MainPID"], f"prefork: master [{name}]")
        assert unix_get(sock_path)[0] == 200
        for var in ("LISTEN_FDS", "NOTIFY_SOCKET", "WATCHDOG_USEC"):
            assert unix_get(sock_path, f"/getenv?{var}")[1] == b"<unset>", var
        assert "(systemd:http)" in service_log.read_text()
        # The manager accepts our pings (NotifyAccess=main: they come from MainPID).
        first = manager.show(unit, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
        wait_for(lambda: manager.show(unit, "WatchdogTimestampMonotonic")[
            "WatchdogTimestampMonotonic"] != first, what="a second watchdog ping")

        # reload: ExecReload= sends HUP; RELOADING=1 ... READY=1 frame the job.
        old = {p.pid for p in psutil.Process(master).children()}
        manager.run("systemctl", "reload", unit)
        props = manager.wait(unit, "the reload", ActiveState="active",
                             StatusText="2/2 workers ready, generation 2")
        assert host_pid(manager.show(unit, "MainPID")["MainPID"], name) == master
        wait_for(lambda: {p.pid for p in psutil.Process(master).children()}.isdisjoint(old),
                 what="old workers replaced")
        assert unix_get(sock_path)[0] == 200

        # Every worker wedged: the pings stop, systemd aborts the master, Restart= restarts.
        for worker_process in psutil.Process(master).children():
            worker_process.send_signal(signal.SIGSTOP)
        # (Result=watchdog lasts for RestartSec=2 s, then the restart resets it.)
        manager.wait(unit, "the watchdog abort", Result="watchdog")
        manager.wait(unit, "the restart", NRestarts="1", ActiveState="active",
                     StatusText="2/2 workers ready, generation 1")
        assert not psutil.pid_exists(master) or psutil.Process(master).status() == "zombie"
        assert unix_get(sock_path)[0] == 200  # the socket unit kept the socket

        # stop: TERM to the master, a graceful drain, exit 0.
        manager.run("systemctl", "stop", unit)
        props = manager.show(unit, "ActiveState", "Result", "ExecMainStatus")
        assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
        assert "graceful stop" in service_log.read_text()
    finally:
        manager.close()
    left = harness.wait_for_none(
        lambda: [p for p in psutil.process_iter(["cmdline"])
                 if name in " ".join(p.info["cmdline"] or []) and p.status() != "zombie"])
    assert not left, f"processes outlived the namespace: {left}"
