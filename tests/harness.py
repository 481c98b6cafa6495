"""Run the real server as a subprocess and watch it through events, never sleeps.

- The listening socket is bound here and handed over as fd 3 with LISTEN_FDS/LISTEN_PID,
  as systemd would (no port races between tests).
- NOTIFY_SOCKET points at a datagram socket this harness owns; READY=1 from the master's
  pid (checked with SO_PASSCRED) says the workers are up.
- The error log goes to a file; `wait_log()` waits for a line with a deadline.
- Every server gets a unique --name, so teardown can prove no process survived it.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 20.0  # generous: a busy 2-core CI machine must never fail a correct test


def prefork_command() -> list[str]:
    exe = shutil.which("prefork")
    return [exe] if exe else [sys.executable, "-m", "prefork"]


def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout`."""
    end = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class NotifySocket:
    """A fake systemd notify socket: records (pid, message) datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[int, str]] = []

    def _drain(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return
        pid = 0
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("=iII", payload[:12])[0]
        self.messages.append((pid, data.decode()))

    def wait(self, needle: str, timeout: float = DEADLINE, after: int = 0) -> tuple[int, str]:
        """The first message at index >= after that contains `needle` as a line."""
        end = time.monotonic() + timeout
        while True:
            for pid, msg in self.messages[after:]:
                if needle in msg.split("\n"):
                    return pid, msg
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} on the notify socket; got {self.messages}")
            self._drain(min(left, 0.5))

    def close(self) -> None:
        self.sock.close()


class Server:
    def __init__(self, tmp_path: Path, app: str = "tests.apps:app", *args: str,
                 workers: int | None = 2, env: dict[str, str] | None = None,
                 listen: bool = True, cwd: Path = REPO) -> None:
        self.tmp = tmp_path
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.log_path = tmp_path / f"{self.name}.log"
        self.notify = NotifySocket(tmp_path / f"{self.name}.notify")
        self.listener: socket.socket | None = None
        argv = [*prefork_command(), app, "--name", self.name,
                "--error-logfile", str(self.log_path), *args]
        if workers is not None:
            argv += ["--workers", str(workers)]
        environ = dict(os.environ, NOTIFY_SOCKET=self.notify.path, PYTHONDONTWRITEBYTECODE="1")
        environ.pop("PREFORK_CMD_ARGS", None)
        environ.update(env or {})
        pass_fds: tuple[int, ...] = ()
        preexec = None
        if listen:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(128)
            self.port = self.listener.getsockname()[1]
            environ["LISTEN_FDS"] = "1"
            # LISTEN_PID must be the server's own pid: the shell exports its $$, then
            # exec keeps that pid for prefork.
            argv = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *argv]
            fd = self.listener.fileno()
            pass_fds = (3,)

            def preexec() -> None:
                os.dup2(fd, 3)

        self.argv = argv
        self.stdout_path = tmp_path / f"{self.name}.out"
        self.stderr_path = tmp_path / f"{self.name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=environ, cwd=cwd, pass_fds=pass_fds,
                                         preexec_fn=preexec, stdout=out, stderr=err)
        self.pid = self.proc.pid

    # -- events ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = DEADLINE, after: int = 0) -> None:
        pid, _ = self.notify.wait("READY=1", timeout, after)
        assert pid == self.pid, f"READY=1 came from pid {pid}, not the master {self.pid}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = DEADLINE, count: int = 1) -> list[str]:
        regex = re.compile(pattern)

        def found() -> list[str]:
            hits = regex.findall(self.log())
            return hits if len(hits) >= count else []

        try:
            return wait_for(found, timeout, f"log line /{pattern}/ x{count}")  # type: ignore
        except AssertionError:
            raise AssertionError(f"no /{pattern}/ in the log:\n{self.log()}") from None

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not exit; log:\n{self.log()}") from None

    # -- processes ------------------------------------------------------------------------

    def children(self) -> list[psutil.Process]:
        """The master's live children: workers and, with --preload, templates."""
        try:
            kids = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for p in kids:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                continue  # exited between the listing and the look
        return alive

    def workers(self) -> list[psutil.Process]:
        """Children titled as workers. A child that has not set its title yet (it still
        reads "prefork: master") is not counted: it may be a template about to be."""
        return [p for p in self.children() if _titled(p, "worker")]

    def templates(self) -> list[psutil.Process]:
        return [p for p in self.children() if _titled(p, "template")]

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.workers()}

    def wait_workers(self, n: int, exclude: set[int] = frozenset()) -> set[int]:  # type: ignore
        """Wait until exactly n live workers, none in `exclude`, have all beaten ready."""
        def check() -> set[int] | None:
            pids = self.worker_pids()
            return pids if len(pids) == n and not pids & exclude else None
        return wait_for(check, what=f"{n} workers") # type: ignore[no-any-return]

    def kill(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def survivors(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if p.pid != os.getpid() and any(self.name in part for part in
                                                (p.info["cmdline"] or [])):
                    if p.status() != psutil.STATUS_ZOMBIE:
                        out.append(p)
            except psutil.NoSuchProcess:
                continue
        return out

    def close(self) -> None:
        """Stop everything; fail if any process of this server outlives it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.listener:
            self.listener.close()
        self.notify.close()
        left = wait_for_none(self.survivors)
        for p in left:
            p.kill()
        assert not left, f"orphans survived: {left}"

    # -- clients --------------------------------------------------------------------------

    def request(self, path: str = "/", method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = DEADLINE
                ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")


class Load:
    """`threads` clients sending GET `path` over fresh connections until the block ends:
    `failures` keeps every error or non-200, `bodies` every distinct body."""

    def __init__(self, server: Server, path: str = "/pid", threads: int = 4) -> None:
        self.server, self.path = server, path
        self.failures: list[str] = []
        self.bodies: set[bytes] = set()
        self.served = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(threads)]

    def pids(self) -> set[int]:
        """The bodies as pids (for an app path that answers with its pid)."""
        return {int(b) for b in set(self.bodies)}

    def _client(self) -> None:
        while not self.stop.is_set():
            try:
                status, body = self.server.request(self.path, headers={"Connection": "close"})
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status != 200:
                self.failures.append(f"status {status}")
            self.bodies.add(body)
            self.served += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(DEADLINE)


def _titled(proc: psutil.Process, role: str) -> bool:
    try:
        return " ".join(proc.cmdline()).startswith(f"prefork: {role} ")
    except psutil.NoSuchProcess:
        return False


def wait_for_none(get: Callable[[], list[Any]], timeout: float = 5.0) -> list[Any]:
    """Wait until `get()` is empty; return what is left after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        left = get()
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


def run_cli(*args: str, timeout: float = DEADLINE, cwd: Path = REPO,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    environ.pop("PREFORK_CMD_ARGS", None)
    environ.pop("NOTIFY_SOCKET", None)
    environ.update(env or {})
    return subprocess.run([*prefork_command(), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=environ)


def ipv6_loopback_port() -> int:
    """A free port on ::1, or skip the test when this machine has no IPv6 loopback."""
    import pytest

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("::1 is not configured")
        return int(probe.getsockname()[1])
