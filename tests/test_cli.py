"""The command line and config against the real executable: flags, config files, errors."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from prefork import __version__
from tests.harness import Server, ipv6_loopback_port, run_cli, wait_for


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.strip() == f"prefork {__version__}"
    out = run_cli("--help").stdout
    for text in ("server socket:", "worker processes:", "logging:", "--graceful-timeout",
                 "--limit-request-line", "signals (sent to the master):", "TTIN",
                 "exit codes:", "4 app_load_error"):
        assert text in out


def test_python_dash_m_works() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "prefork", "--version"], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == f"prefork {__version__}"


@pytest.mark.parametrize(("args", "needle"), [
    (["tests.apps:app", "--wokers", "2"], "unrecognized option --wokers (did you mean --workers?)"),
    (["tests.apps:app", "--workers", "two"], "invalid value for workers"),
    (["tests.apps:app", "--workers", "0"], "must be >= 1"),
    (["tests.apps:app", "--log-level", "loud"], "invalid value for loglevel"),
    (["tests.apps:app", "--protocol", "udp"], "invalid value for protocol"),
    ([], "no app given"),
])
def test_bad_flags_exit_2_naming_them(args: list[str], needle: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_config_key_exits_2_with_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "conf.py"
    config.write_text("import multiprocessing\nworkrs = 2\n")
    result = run_cli("tests.apps:app", "-c", str(config))
    assert result.returncode == 2
    assert "unknown setting 'workrs' (did you mean workers?)" in result.stderr


def test_config_key_of_the_wrong_type_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "conf.py"
    config.write_text("timeout = 'soon'\n")
    result = run_cli("tests.apps:app", "-c", str(config))
    assert result.returncode == 2
    assert "invalid value for timeout" in result.stderr


def test_bad_prefork_cmd_args_exit_2() -> None:
    result = run_cli("tests.apps:app", env={"PREFORK_CMD_ARGS": "--bogus"})
    assert result.returncode == 2
    assert "PREFORK_CMD_ARGS: unrecognized option --bogus" in result.stderr


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("tests.apps:app", "--bind", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(  # + what to do: tests/test_newcomer_errors.py
        f"prefork: error: bind(127.0.0.1:{port}): address already in use;")


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    """defaults < config file < PREFORK_CMD_ARGS < command line, seen in a live server."""
    config = tmp_path / "conf.py"
    config.write_text("workers = 4\ntimeout = 11\nmax_requests = 7\n")
    server = Server(tmp_path, "tests.apps:app", "-c", str(config), "--timeout", "13",
                    workers=None, env={"PREFORK_CMD_ARGS": "--workers 3 --timeout 12"})
    try:
        server.wait_ready()
        assert len(server.worker_pids()) == 3  # env beats the file
        assert "worker timeout" not in server.log()
    finally:
        server.close()
    check = run_cli("tests.apps:app", "-c", str(config), "--timeout", "13", "--check-config",
                    env={"PREFORK_CMD_ARGS": "--workers 3 --timeout 12"})
    assert check.returncode == 0, check.stderr
    lines = dict(line.split(" = ", 1) for line in check.stdout.splitlines() if " = " in line)
    assert (lines["workers"], lines["timeout"], lines["max_requests"]) == ("3", "13.0", "7")


def test_web_concurrency_and_port(tmp_path: Path) -> None:
    check = run_cli("tests.apps:app", "--check-config",
                    env={"WEB_CONCURRENCY": "5", "PORT": "9123"})
    lines = dict(line.split(" = ", 1) for line in check.stdout.splitlines() if " = " in line)
    assert lines["workers"] == "5"
    assert lines["bind"] == "['0.0.0.0:9123']"


def test_pidfile_lifecycle(tmp_path: Path) -> None:
    pidfile = tmp_path / "prefork.pid"
    server = Server(tmp_path, "tests.apps:app", "--pid", str(pidfile), workers=1)
    try:
        server.wait_ready()
        assert pidfile.read_text().strip() == str(server.pid)
        # A second server must refuse the pidfile of a live master.
        result = run_cli("tests.apps:app", "--pid", str(pidfile), "--bind", "127.0.0.1:0")
        assert result.returncode == 1
        assert f"already names a running process (pid {server.pid})" in result.stderr
        server.kill(signal.SIGTERM)
        assert server.wait_exit() == 0
        assert not pidfile.exists()
    finally:
        server.close()


def test_stale_pidfile_is_replaced(tmp_path: Path) -> None:
    pidfile = tmp_path / "prefork.pid"
    pidfile.write_text("999999999\n")
    server = Server(tmp_path, "tests.apps:app", "--pid", str(pidfile), workers=1)
    try:
        server.wait_ready()
        assert pidfile.read_text().strip() == str(server.pid)
    finally:
        server.close()


def test_unix_socket_bind_umask_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.touch()
    os.unlink(path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file nobody listens on any more
    stale.close()
    server = Server(tmp_path, "tests.apps:app", "--bind", f"unix:{path}", "--umask", "0o077",
                    workers=1, listen=False)
    try:
        server.wait_ready()
        assert path.stat().st_mode & 0o777 == 0o700
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(20)
            client.connect(str(path))
            client.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := client.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK")
        server.kill(signal.SIGTERM)
        assert server.wait_exit() == 0
        wait_for(lambda: not path.exists(), what="the socket file to be removed")
    finally:
        server.close()


def test_unix_socket_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        result = run_cli("tests.apps:app", "--bind", f"unix:{path}")
    assert result.returncode == 1
    assert f"bind(unix:{path}): address already in use" in result.stderr


def test_ipv6_bind(tmp_path: Path) -> None:
    port = ipv6_loopback_port()
    server = Server(tmp_path, "tests.apps:app", "--bind", f"[::1]:{port}", workers=1,
                    listen=False)
    try:
        server.wait_ready()
        with socket.create_connection(("::1", port), 20) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 200 OK")
    finally:
        server.close()
