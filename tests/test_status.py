"""`prefork status|reload|scale|stop` against live servers, through the control socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from pathlib import Path

from prefork import control
from tests.harness import DEADLINE, Server, run_cli, wait_for
from tests.test_master import hold, read_response


def start(servers, *args: str, workers: int = 2) -> Server:
    server = servers("tests.apps:app", *args, workers=workers)
    server.wait_ready()
    return server


def test_status_shows_the_request_a_busy_worker_is_serving(servers, tmp_path: Path) -> None:
    server = servers("tests.apps:app", "--control-socket", str(tmp_path / "s.ctl"), workers=2)
    server.wait_ready()
    for _ in range(3):
        assert server.request("/")[0] == 200
    # A request is counted just after its response went out: wait until all three are.
    wait_for(lambda: control.call(str(tmp_path / "s.ctl"), {"verb": "status"})["totals"]
             ["requests"] == 3, what="three requests counted")
    marker = tmp_path / "held"
    conn, busy = hold(server, marker)
    try:
        table = run_cli("status", "--control-socket", str(tmp_path / "s.ctl"))
        assert table.returncode == 0, table.stderr
        doc = json.loads(run_cli("status", "--control-socket", str(tmp_path / "s.ctl"),
                                 "--json").stdout)
    finally:
        marker.unlink()
    assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
    conn.close()

    text = table.stdout
    assert f"master pid {server.pid}, running" in text
    assert f"127.0.0.1:{server.port}" in text
    row = next(line for line in text.splitlines() if f" {busy} " in f" {line} ")
    assert " busy " in row and "GET /hold (" in row, text

    master = doc["master"]
    assert master["pid"] == server.pid and master["generation"] == 1
    assert master["binds"] == [f"127.0.0.1:{server.port}"] and master["target"] == 2
    workers = {w["pid"]: w for w in doc["workers"]}
    assert set(workers) == server.worker_pids()
    w = workers[busy]
    assert w["state"] == "busy" and w["generation"] == 1 and w["slot"] in (1, 2)
    (current,) = w["current"]
    assert current["method"] == "GET" and current["path"] == "/hold"
    assert 0 <= current["age"] < DEADLINE
    assert 0 < w["pss"] <= w["rss"] and 0 < w["uss"] <= w["rss"]
    assert w["cpu_percent"] >= 0 and 0 <= w["last_beat"] < DEADLINE
    assert w["restarts"] == 0 and w["last_restart_reason"] is None
    idle = next(v for pid, v in workers.items() if pid != busy)
    assert idle["state"] == "ready" and idle["current"] == []
    # The three requests before the held one were served and counted (the held one is
    # counted when it ends).
    assert doc["totals"]["requests"] == 3 and doc["totals"]["by_status"]["2xx"] == 3
    assert sum(v["requests"] for v in workers.values()) == 3


def test_status_finds_the_socket_from_the_pidfile(servers, tmp_path: Path) -> None:
    pidfile = tmp_path / "p.pid"
    server = servers("tests.apps:app", "--pid", str(pidfile), workers=1)
    server.wait_ready()
    socket_path = Path(f"{pidfile}.ctl")
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    doc = json.loads(run_cli("status", "--pid", str(pidfile), "--json").stdout)
    assert doc["master"]["pid"] == server.pid
    assert doc["master"]["control_socket"] == str(socket_path)
    server.kill(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not socket_path.exists()  # removed on exit
    gone = run_cli("status", "--pid", str(pidfile))
    assert gone.returncode == 1 and "no such file" in gone.stderr


def test_scale_reload_and_stop_verbs(servers, tmp_path: Path) -> None:
    server = start(servers, "--control-socket", str(tmp_path / "v.ctl"), workers=1)
    path = str(tmp_path / "v.ctl")
    first = server.wait_workers(1)
    result = run_cli("scale", "3", "--control-socket", path)
    assert result.returncode == 0 and result.stdout.strip() == "workers=3", result.stderr
    server.wait_workers(3)
    assert run_cli("scale", "1", "--control-socket", path).returncode == 0
    remaining = server.wait_workers(1)
    assert not remaining & first, "scaling down retires the oldest first"
    bad = run_cli("scale", "0", "--control-socket", path)
    assert bad.returncode == 1 and "expected workers >= 1" in bad.stderr

    mark = len(server.notify.messages)
    result = run_cli("reload", "--control-socket", path)
    assert result.returncode == 0, result.stderr
    server.wait_ready(after=mark)  # the same transaction as HUP
    server.wait_workers(1, exclude=remaining)
    assert json.loads(run_cli("status", "--control-socket", path, "--json").stdout
                      )["master"]["generation"] == 2

    result = run_cli("stop", "--control-socket", path)
    assert result.returncode == 0 and "stop" in result.stdout
    assert server.wait_exit() == 0


def test_a_stuck_client_does_not_stall_the_master(servers, tmp_path: Path) -> None:
    path = str(tmp_path / "c.ctl")
    server = start(servers, "--control-socket", path)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(path)  # connects, says nothing
    partial = socket.socket(socket.AF_UNIX)
    partial.connect(path)
    partial.sendall(b'{"verb": "sta')  # half a request
    try:
        assert control.call(path, {"verb": "status"})["master"]["pid"] == server.pid
        server.kill(signal.SIGTTIN)  # the loop still turns
        server.wait_workers(3)
        # Garbage and unknown verbs get an error answer, not a hang.
        for request in (b"not json\n", b'{"verb": "explode"}\n', b"[1]\n"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(DEADLINE)
                sock.connect(path)
                sock.sendall(request)
                reply = json.loads(sock.makefile("rb").readline())
                assert reply["ok"] is False and reply["error"]
        # The master drops both idle clients at their deadline (endpoint.DEADLINE).
        silent.settimeout(DEADLINE)
        assert silent.recv(10) == b""
        partial.settimeout(DEADLINE)
        assert partial.recv(10) == b""
    finally:
        silent.close()
        partial.close()


def test_status_without_flags_finds_the_one_live_master(servers, tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    server = servers("tests.apps:app", workers=1, env=env)
    server.wait_ready()
    wait_for(lambda: (tmp_path / f"prefork-{server.pid}.ctl").exists())
    (tmp_path / "prefork-999999999.ctl").touch()  # a dead master's leftover is ignored
    result = run_cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["master"]["pid"] == server.pid
    # A master SIGKILLed leaves its socket behind; the next master removes it.
    server.kill(signal.SIGKILL)
    server.wait_exit()
    assert (tmp_path / f"prefork-{server.pid}.ctl").exists()
    wait_for(lambda: not server.workers(), what="the workers to follow their master")
    second = servers("tests.apps:app", workers=1, env=env)
    second.wait_ready()
    assert not (tmp_path / f"prefork-{server.pid}.ctl").exists()
    assert (tmp_path / f"prefork-{second.pid}.ctl").exists()
    assert (tmp_path / "prefork-999999999.ctl").exists()  # not a socket: not ours to judge
    os.unlink(tmp_path / "prefork-999999999.ctl")


def test_status_shows_each_request_thread(servers, tmp_path: Path) -> None:
    path = str(tmp_path / "t.ctl")
    server = start(servers, "--control-socket", path, "--threads", "3", workers=1)
    held = [hold(server, tmp_path / f"held{i}") for i in range(2)]
    try:
        doc = control.call(path, {"verb": "status"})
    finally:
        for i in range(2):
            (tmp_path / f"held{i}").unlink()
    for conn, _ in held:
        assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
        conn.close()
    (worker,) = doc["workers"]
    assert worker["state"] == "busy"
    assert [c["path"] for c in worker["current"]] == ["/hold", "/hold"]
    wait_for(lambda: control.call(path, {"verb": "status"})["totals"]["requests"] == 2,
             what="both threaded requests counted")


def test_a_second_master_takes_over_the_control_socket_once_it_runs(servers,
                                                                     tmp_path: Path) -> None:
    # What a USR2 upgrade does (upgrade.py): the pidfile moves aside and a second master
    # starts with the same settings while the first still serves.
    from tests.test_metrics import free_port, scrape

    pidfile, port = tmp_path / "p.pid", free_port()
    path = f"{pidfile}.ctl"
    args = ("--pid", str(pidfile), "--metrics-bind", f"127.0.0.1:{port}")
    first = servers("tests.apps:app", *args, workers=1)
    first.wait_ready()
    os.replace(pidfile, f"{pidfile}.oldbin")
    # A second master that cannot boot never takes the path (nor the metrics port).
    broken = servers("tests.broken_app:app", *args, workers=1)
    assert broken.wait_exit() == 4
    assert control.call(path, {"verb": "status"})["master"]["pid"] == first.pid
    assert not os.path.exists(f"{path}.{broken.pid}")
    # One that boots shares the metrics port (SO_REUSEPORT) and takes the path when ready.
    second = servers("tests.apps:app", *args, workers=1)
    second.wait_ready()
    second.wait_log(f"control socket: took over {path}")
    assert control.call(path, {"verb": "status"})["master"]["pid"] == second.pid
    first.kill(signal.SIGTERM)
    assert first.wait_exit() == 0
    # The first master left the path alone: it is the second one's now.
    assert control.call(path, {"verb": "status"})["master"]["pid"] == second.pid
    assert scrape(port)[0] == 200
