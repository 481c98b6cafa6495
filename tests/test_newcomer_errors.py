"""The errors a newcomer meets first: each is one line on stderr that says what is wrong and
what to do, with the documented exit code (the error log goes to a file here, so stderr holds
only that line).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, Server, run_cli


def one_line(tmp_path: Path, *args: str, code: int, prefix: list[str] | None = None) -> str:
    log = tmp_path / "error.log"
    if "--bind" not in args:  # not the default 127.0.0.1:8000, which anything may hold
        args = (*args, "--bind", "127.0.0.1:0")
    result = run_cli(*args, "--error-logfile", str(log)) if prefix is None else \
        _run_as(prefix, *args, "--error-logfile", str(log))
    assert result.returncode == code, (result.stderr, log.read_text() if log.exists() else "")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("prefork: error: ")
    return result.stderr.strip()


def _run_as(prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("prefork")
    command = [exe] if exe else [sys.executable, "-m", "prefork"]
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PREFORK_CMD_ARGS")}
    return subprocess.run([*prefix, *command, *args], capture_output=True, text=True,
                          timeout=20, cwd=REPO, env=env)


def _without_capabilities(*caps: str) -> list[str]:
    """Run a command without some root powers (as root), or plainly (as anyone else)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing to drop privileges")
    drop = ",".join(f"-{c}" for c in caps)
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"]


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(tmp_path, "tests.apps:app", "--bind", f"127.0.0.1:{port}", code=1)
    assert line == (f"prefork: error: bind(127.0.0.1:{port}): address already in use; another "
                    "process is listening there: stop it, or choose another port with --bind")


def test_unix_socket_in_use(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        line = one_line(tmp_path, "tests.apps:app", "--bind", f"unix:{path}", code=1)
    assert line.endswith("stop it, or choose another path with --bind")


def test_permission_denied_on_a_unix_socket(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    prefix = _without_capabilities("dac_override", "dac_read_search", "fowner")
    line = one_line(tmp_path, "tests.apps:app", "--bind", f"unix:{locked}/app.sock", code=1,
                    prefix=prefix)
    assert line == (f"prefork: error: bind(unix:{locked}/app.sock): permission denied; this "
                    "user cannot create the socket file there: choose a directory it can "
                    "write (systemd: RuntimeDirectory=)")


def test_privileged_port_without_privileges(tmp_path: Path) -> None:
    prefix = _without_capabilities("net_bind_service")
    line = one_line(tmp_path, "tests.apps:app", "--bind", "127.0.0.1:1", code=1, prefix=prefix)
    assert "permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE" in line


def test_app_module_not_found(tmp_path: Path) -> None:
    line = one_line(tmp_path, "no_such_app:app", code=4)
    assert line.startswith("prefork: error: app 'no_such_app:app': no module named "
                           "'no_such_app'; run prefork from the directory that contains it, "
                           "or pass --chdir DIR (cwd is ")


@pytest.mark.parametrize(("spec", "hint"), [
    ("exampels.hello:app", "no module named 'exampels' (did you mean examples?)"),
    ("examples.helo:app", "no module named 'examples.helo' (did you mean examples.hello?)"),
])
def test_typo_in_the_module_path(tmp_path: Path, spec: str, hint: str) -> None:
    assert hint in one_line(tmp_path, spec, code=4)


@pytest.mark.parametrize(("spec", "hint"), [
    ("examples.hello:ap", "has no attribute 'ap' (did you mean app?); name the WSGI "
                          "callable after the colon"),
    ("examples.hello", "has no attribute 'application' (it defines app)"),
])
def test_wrong_callable_name(tmp_path: Path, spec: str, hint: str) -> None:
    assert hint in one_line(tmp_path, spec, code=4)


def test_a_file_path_instead_of_a_module(tmp_path: Path) -> None:
    line = one_line(tmp_path, "examples/hello.py:app", code=4)
    assert line.endswith("a dotted module path, not a file: try examples.hello:app (exit 4)")


@pytest.mark.parametrize("preload", [[], ["--preload"]])
def test_the_app_raises_while_importing(tmp_path: Path, preload: list[str]) -> None:
    line = one_line(tmp_path, "tests.broken_app:app", *preload, code=4)
    assert line == (f"prefork: error: app 'tests.broken_app:app' failed to load: RuntimeError: "
                    f"this app is broken on purpose (the traceback is in {tmp_path}/error.log) "
                    "(exit 4)")
    assert "Traceback" in (tmp_path / "error.log").read_text()


def test_app_factory_call_as_in_gunicorn(tmp_path: Path) -> None:
    (tmp_path / "factory.py").write_text(
        "def create_app(greeting='hi', times=1):\n"
        "    def app(environ, start_response):\n"
        "        start_response('200 OK', [])\n"
        "        return [(greeting * times).encode()]\n"
        "    return app\n")
    server = Server(tmp_path, "factory:create_app('ho', times=3)", workers=1, cwd=tmp_path)
    try:
        server.wait_ready()
        assert server.request("/") == (200, b"hohoho")
    finally:
        server.close()
    line = one_line(tmp_path, "--chdir", str(tmp_path), "factory:create_app(open('x'))",
                    code=4)
    assert "factory arguments must be literals" in line


def test_an_app_that_starts_a_thread_then_fails_does_not_hang_the_cli(tmp_path: Path) -> None:
    (tmp_path / "threaded_fail.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon thread\n"
        "raise ImportError('the database driver is missing')\n")
    line = one_line(tmp_path, "--chdir", str(tmp_path), "threaded_fail:app", code=4)
    assert "failed to load: ImportError: the database driver is missing" in line
