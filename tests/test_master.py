"""The pre-fork core against real processes: workers, heartbeats, signals, reload, stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.harness import DEADLINE, Load, Server, wait_for


def hold(server: Server, marker: Path) -> tuple[socket.socket, int]:
    """Start a request that holds its worker until `marker` is deleted; return the pid."""
    conn = socket.create_connection(("127.0.0.1", server.port), DEADLINE)
    conn.settimeout(DEADLINE)
    conn.sendall(b"GET /hold?%s HTTP/1.1\r\nHost: t\r\n\r\n" % str(marker).encode())
    wait_for(marker.exists, what="the worker to start the held request")
    return conn, int(marker.read_text())


def read_response(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"Content-Length: %d" % len(body) in head:
            break
    return data


def test_requests_are_spread_over_worker_processes(servers, tmp_path: Path) -> None:
    server = servers(workers=2)
    server.wait_ready()
    marker = tmp_path / "held"
    conn, busy = hold(server, marker)
    # The first worker is inside the app: every new request must go to the other one.
    others = {int(server.request("/pid")[1]) for _ in range(5)}
    assert len(others) == 1 and busy not in others
    assert others | {busy} == server.worker_pids()
    marker.unlink()
    assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
    conn.close()


def test_process_titles(servers) -> None:
    server = servers(workers=2)
    server.wait_ready()
    master = psutil.Process(server.pid)
    assert " ".join(master.cmdline()).startswith(f"prefork: master [{server.name}]")
    titles = sorted(" ".join(p.cmdline()).strip() for p in server.workers())
    assert titles == [f"prefork: worker 1 [{server.name}]", f"prefork: worker 2 [{server.name}]"]


def test_tcp_echo(servers) -> None:
    server = servers("tests.apps:echo", "--protocol", "tcp", workers=2)
    server.wait_ready()
    with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as conn:
        conn.settimeout(DEADLINE)
        for message in (b"hello", b"processes, not threads"):
            conn.sendall(message)
            got = b""
            while len(got) < len(message):
                got += conn.recv(100)
            assert got == message


def test_killed_worker_is_replaced(servers) -> None:
    server = servers(workers=2)
    server.wait_ready()
    before = server.wait_workers(2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    server.wait_log(rf"worker exited slot=\d pid={victim} generation=1 signal SIGKILL")
    after = server.wait_workers(2, exclude={victim})
    assert len(after & before) == 1
    assert server.proc.poll() is None
    assert all(server.request("/")[0] == 200 for _ in range(5))


def test_stopped_worker_is_dumped_and_replaced(servers) -> None:
    server = servers("tests.apps:app", "--timeout", "2", workers=1)
    server.wait_ready()
    (victim,) = server.wait_workers(1)
    os.kill(victim, signal.SIGSTOP)
    started = time.monotonic()
    server.wait_log(rf"stack dump of worker slot=1 pid={victim} \(timeout\):\n[^\n]*\n +File")
    server.wait_workers(1, exclude={victim})
    # --timeout 2 plus the dump grace; generous slack for a loaded machine.
    assert time.monotonic() - started < 2 + 0.5 + 5
    assert f"worker timeout slot=1 pid={victim}" in server.log()
    assert server.request("/")[0] == 200


@pytest.mark.parametrize(("path", "frame"), [
    ("/spin", "spin_forever"),  # a pure-Python loop
    ("/c-sleep", "tests/apps.py"),  # blocked in C while holding the GIL
])
def test_hung_request_is_dumped_then_replaced(servers, path: str, frame: str) -> None:
    server = servers("tests.apps:app", "--timeout", "2", workers=1)
    server.wait_ready()
    (victim,) = server.wait_workers(1)
    with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as conn:
        conn.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        server.wait_log(rf"stack dump of worker slot=1 pid={victim}[^\n]*\n[\s\S]*{frame}")
    server.wait_workers(1, exclude={victim})


def test_stalled_master_kills_no_worker(servers) -> None:
    server = servers("tests.apps:app", "--timeout", "2", workers=2)
    server.wait_ready()
    before = server.wait_workers(2)
    server.kill(signal.SIGSTOP)
    try:
        time.sleep(4)  # the stimulus itself: a master stopped for twice the timeout
    finally:
        server.kill(signal.SIGCONT)
    # Prove the master has run several turns since it resumed: ask for one more worker
    # and wait until it is up.
    server.kill(signal.SIGTTIN)
    after = server.wait_workers(3)
    assert before < after
    assert "worker timeout" not in server.log()


def test_killed_master_takes_its_workers_with_it(servers) -> None:
    server = servers(workers=3)
    server.wait_ready()
    workers = server.workers()
    assert len(workers) == 3
    server.kill(signal.SIGKILL)
    gone, alive = psutil.wait_procs(workers, timeout=2)
    assert not alive, f"workers outlived the master by 2 s: {alive}"


def test_graceful_stop_finishes_in_flight_request(servers, tmp_path: Path) -> None:
    server = servers(workers=1)
    server.wait_ready()
    marker = tmp_path / "held"
    conn, _ = hold(server, marker)
    server.kill(signal.SIGTERM)
    server.notify.wait("STOPPING=1")
    marker.unlink()  # the request finishes after the stop began
    response = read_response(conn)
    conn.close()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in response
    assert server.wait_exit() == 0


def test_reload_under_load_drops_nothing_and_replaces_every_worker(servers) -> None:
    server = servers(workers=2)
    server.wait_ready()
    old = server.wait_workers(2)
    with Load(server) as load:
        wait_for(lambda: load.served, what="requests flowing")
        mark = len(server.notify.messages)
        server.kill(signal.SIGHUP)
        server.wait_ready(after=mark)
        new = server.wait_workers(2, exclude=old)
        wait_for(lambda: new & load.pids(), what="a request served by the new generation")
    assert not load.failures, load.failures[:5]
    assert not new & old


def test_reload_with_broken_app_keeps_old_workers(servers, tmp_path: Path) -> None:
    app = tmp_path / "reloadable.py"
    app.write_text("def app(e, sr):\n    sr('200 OK', [])\n    return [b'v1']\n")
    server = servers("reloadable:app", "--chdir", str(tmp_path), workers=2)
    server.wait_ready()
    old = server.wait_workers(2)
    app.write_text("raise ImportError('broken on disk')\n")
    mark = len(server.notify.messages)
    server.kill(signal.SIGHUP)
    _, message = server.notify.wait("READY=1", after=mark)
    assert "STATUS=reload failed" in message
    server.wait_log("reload failed")
    assert "broken on disk" in server.log()
    assert "STATUS=reload failed: ImportError: broken on disk" in message
    assert server.request("/")[1] == b"v1"
    wait_for(lambda: server.worker_pids() == old, what="only the old workers")
    # A fixed app reloads fine afterwards.
    app.write_text("def app(e, sr):\n    sr('200 OK', [])\n    return [b'v2']\n")
    mark = len(server.notify.messages)
    server.kill(signal.SIGHUP)
    server.wait_ready(after=mark)
    server.wait_workers(2, exclude=old)
    assert server.request("/")[1] == b"v2"


def test_ttin_ttou_change_the_worker_count(servers) -> None:
    server = servers(workers=2)
    server.wait_ready()
    first = server.wait_workers(2)
    server.kill(signal.SIGTTIN)
    server.wait_workers(3)
    # Standard signals do not queue: send the next one once the first took effect.
    server.kill(signal.SIGTTOU)
    server.wait_workers(2)
    server.kill(signal.SIGTTOU)
    remaining = server.wait_workers(1)
    assert not remaining & first, "TTOU retires the oldest workers first"
    server.kill(signal.SIGTTOU)  # never below one
    server.wait_log("TTOU: workers=1")
    assert len(server.wait_workers(1)) == 1
    assert server.request("/")[0] == 200


def test_usr1_reopens_a_rotated_log(servers) -> None:
    server = servers(workers=1)
    server.wait_ready()
    rotated = server.log_path.with_suffix(".log.1")
    server.log_path.rename(rotated)
    server.kill(signal.SIGUSR1)
    wait_for(server.log_path.exists, what="a new log file")
    server.kill(signal.SIGTTIN)
    server.wait_log("TTIN: workers=2")
    assert "reopening logs" in rotated.read_text()


def test_max_requests_recycles_workers(servers) -> None:
    server = servers("tests.apps:app", "--max-requests", "3", workers=1)
    server.wait_ready()
    (first,) = server.wait_workers(1)
    pids = [int(server.request("/pid")[1]) for _ in range(3)]
    assert pids == [first] * 3
    server.wait_log("max requests reached")
    (second,) = server.wait_workers(1, exclude={first})
    assert int(server.request("/pid")[1]) == second


def test_preload_serves(servers) -> None:
    server = servers("tests.apps:app", "--preload", workers=2)
    server.wait_ready()
    assert server.request("/")[0] == 200


def test_foreign_child_exiting_does_not_stop_the_master(servers, tmp_path: Path) -> None:
    # A preloaded app that forks a helper: the master reaps a child it never spawned
    # (and that exits 4, the app-load code) and must carry on.
    (tmp_path / "forker.py").write_text(
        "import os\n"
        "if os.fork() == 0:\n"
        "    import time; time.sleep(0.5); os._exit(4)\n"
        "def app(e, sr):\n    sr('200 OK', [])\n    return [b'ok']\n")
    server = servers("forker:app", "--preload", "--chdir", str(tmp_path), "--log-level",
                     "debug", workers=1)
    server.wait_ready()
    server.wait_log("reaped a child we did not fork")
    assert server.proc.poll() is None
    assert server.request("/")[1] == b"ok"


def test_app_import_error_exits_4_without_respawn_storm(servers) -> None:
    server = servers("tests.broken_app:app", workers=3)
    started = time.monotonic()
    assert server.wait_exit(timeout=DEADLINE) == 4
    assert time.monotonic() - started < 5 + 5  # 5 s asked; slack for a loaded machine
    log = server.log()
    assert "RuntimeError: this app is broken on purpose" in log
    assert "Traceback" in log
    assert log.count("booting worker") <= 3
    assert "exit 4" in server.stderr()


def test_a_worker_that_hit_eof_keeps_its_slot_until_reaped(servers) -> None:
    # EOF on the heartbeat a second before the exit: the slot is not refilled in between,
    # so a first generation that cannot boot still ends the server without extra workers.
    server = servers("tests.closes_heartbeat:app", workers=3)
    assert server.wait_exit(timeout=DEADLINE) in (3, 4)
    log = server.log()
    assert "closed my heartbeat, then failed" in log
    assert log.count("booting worker") == 3


def test_a_worker_still_running_after_closing_its_heartbeat_is_killed(servers) -> None:
    server = servers("tests.closes_heartbeat:app", "-e", "CLOSES_HEARTBEAT=hang", workers=1)
    assert server.wait_exit(timeout=DEADLINE) == 3
    assert "reason=still running after closing its heartbeat" in server.log()


def test_missing_module_is_one_clear_line(servers) -> None:
    server = servers("tests.no_such_module:app", workers=1)
    assert server.wait_exit() == 4
    assert "no module named 'tests.no_such_module'" in server.log()


def test_first_generation_crash_exits_3(servers, tmp_path: Path) -> None:
    # Imports fine, then the worker dies before it can report ready.
    (tmp_path / "crasher.py").write_text("import os\nos.kill(os.getpid(), 9)\n")
    server = servers("crasher:app", "--chdir", str(tmp_path), workers=2)
    assert server.wait_exit() == 3
    assert "died before it was ready (signal SIGKILL)" in server.log()


def test_worker_that_keeps_dying_young_is_backed_off(servers) -> None:
    server = servers(workers=1)
    server.wait_ready()
    for attempt, delay in ((1, "0.0"), (2, "0.1"), (3, "0.2")):
        (pid,) = server.wait_workers(1)
        server.wait_log(rf"worker ready slot=1 pid={pid}")
        with pytest.raises(OSError):  # http.client sees the connection die
            server.request("/exit")
        server.wait_log(rf"slot=1 crashed young {attempt} time\(s\) in a row; respawn in "
                        rf"{delay} s")
    server.wait_workers(1)
    assert server.proc.poll() is None


def test_workers_hold_only_their_own_descriptors(servers) -> None:
    server = servers(workers=4)
    server.wait_ready()
    counts = {p.pid: p.num_fds() for p in server.workers()}
    # The last worker forked while the master held three more channels: if it had
    # inherited them its count would be higher than the first worker's.
    assert len(set(counts.values())) == 1, counts


def test_raw_env_reaches_the_workers(servers) -> None:
    server = servers("tests.apps:app", "-e", "PREFORK_TEST_VAR=forty two", workers=1)
    server.wait_ready()
    assert server.request("/getenv?PREFORK_TEST_VAR")[1] == b"forty two"
    # The master must not leak systemd's variables to the app either.
    assert server.request("/getenv?NOTIFY_SOCKET")[1] == b"<unset>"
    assert server.request("/getenv?LISTEN_FDS")[1] == b"<unset>"


@pytest.mark.skipif(os.getuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_privileges(servers) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    # The app is imported after the switch, so it must live where nobody can read it.
    public = Path(tempfile.mkdtemp(prefix="prefork-public-"))
    try:
        public.chmod(0o755)
        (public / "whoami_app.py").write_text(
            "import os\n"
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [])\n"
            "    return [f'{os.getuid()}:{os.getgid()}'.encode()]\n")
        server = servers("whoami_app:app", "--user", "nobody", "--chdir", str(public),
                         workers=1)
        server.wait_ready()
        assert server.request("/")[1] == f"{nobody.pw_uid}:{nobody.pw_gid}".encode()
    finally:
        shutil.rmtree(public)
    assert psutil.Process(server.pid).uids().real == 0  # the master keeps root to bind


def test_hup_rereads_the_config_file(servers, tmp_path: Path) -> None:
    config = tmp_path / "conf.py"
    config.write_text("workers = 2\n")
    server = servers("tests.apps:app", "-c", str(config), workers=None)
    server.wait_ready()
    old = server.wait_workers(2)
    config.write_text("workers = 3\n")
    mark = len(server.notify.messages)
    server.kill(signal.SIGHUP)
    server.wait_ready(after=mark)
    server.wait_workers(3, exclude=old)


def test_hup_with_a_broken_config_keeps_serving(servers, tmp_path: Path) -> None:
    config = tmp_path / "conf.py"
    config.write_text("workers = 2\n")
    server = servers("tests.apps:app", "-c", str(config), workers=None)
    server.wait_ready()
    old = server.wait_workers(2)
    config.write_text("wrokers = 3\n")
    mark = len(server.notify.messages)
    server.kill(signal.SIGHUP)
    _, message = server.notify.wait("READY=1", after=mark)
    assert "unknown setting 'wrokers' (did you mean workers?)" in message
    assert server.worker_pids() == old
    assert server.request("/")[0] == 200


def test_ttin_survives_a_reload(servers) -> None:
    server = servers(workers=1)
    server.wait_ready()
    server.kill(signal.SIGTTIN)
    old = server.wait_workers(2)
    mark = len(server.notify.messages)
    server.kill(signal.SIGHUP)
    server.wait_ready(after=mark)
    server.wait_workers(2, exclude=old)


def test_fd_bind(servers, tmp_path: Path) -> None:
    # fd://N: an inherited listening socket at a number of our choosing (here 3, handed
    # over by the harness without LISTEN_FDS).
    server = servers("tests.apps:app", "--bind", "fd://3", workers=1,
                     env={"LISTEN_FDS": ""})
    server.wait_ready()
    assert server.request("/")[0] == 200


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_quick_stop_does_not_wait_for_requests(servers, tmp_path: Path, sig: int) -> None:
    server = servers(workers=2)
    server.wait_ready()
    conn, busy = hold(server, tmp_path / "held")  # never released
    workers = server.workers()
    server.kill(sig)
    assert server.wait_exit() == 0
    gone, alive = psutil.wait_procs(workers, timeout=DEADLINE)
    assert not alive
    assert conn.recv(100) == b""  # the held request died with its worker
    conn.close()


def test_serve_api_runs_a_tcp_handler(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "serve_echo.py"
    script.write_text(
        "import sys\n"
        "import prefork\n"
        "from tests.apps import echo\n"
        "sys.exit(prefork.serve(echo, protocol='tcp', bind=['fd://3'], workers=2,\n"
        "                       proc_name=sys.argv[1]))\n")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    fd = sock.fileno()
    name = f"api{os.getpid()}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, str(script), name], env=env, pass_fds=(3,),
                            preexec_fn=lambda: os.dup2(fd, 3), stderr=subprocess.PIPE)
    try:
        with socket.create_connection(sock.getsockname(), DEADLINE) as client:
            client.settimeout(DEADLINE)
            client.sendall(b"ping")
            assert client.recv(10) == b"ping"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        assert b"worker ready" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        sock.close()
