"""Drop-in for gunicorn: its flags, its config-file names, -k, -D, --reload, hooks.

A Procfile, Dockerfile or systemd unit that runs gunicorn must run prefork with the same
meaning, or fail at once with one line that names what is not supported and why.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import psutil
import pytest

from tests.harness import DEADLINE, Server, run_cli, wait_for, wait_for_none


def effective(result: object) -> dict[str, str]:
    stdout = getattr(result, "stdout")  # noqa: B009 - CompletedProcess[str]
    return dict(line.split(" = ", 1) for line in stdout.splitlines() if " = " in line)


# -- flags --------------------------------------------------------------------------------


def test_the_common_gunicorn_flags_mean_the_same() -> None:
    result = run_cli(
        "tests.apps:app", "-b", "127.0.0.1:9001", "-b", "unix:/tmp/x.sock", "-w", "3",
        "-k", "gthread", "--threads", "4", "-t", "40", "--graceful-timeout", "20",
        "--keep-alive", "2", "--max-requests", "1000", "--max-requests-jitter", "50",
        "--preload", "-p", "/tmp/p.pid", "-u", "nobody", "-g", "nogroup", "-m", "0o27",
        "-n", "shop", "-e", "A=1", "-e", "B=2", "--chdir", "/tmp",
        "--access-logfile", "-", "--access-logformat", "%(h)s %(r)s",
        "--error-logfile", "-", "--log-level", "debug", "--forwarded-allow-ips", "10.0.0.1,*",
        "--limit-request-line", "4094", "--limit-request-fields", "50",
        "--limit-request-field_size", "4000", "--check-config")
    assert result.returncode == 0, result.stderr
    got = effective(result)
    assert got == got | {
        "app": "tests.apps:app", "bind": "['127.0.0.1:9001', 'unix:/tmp/x.sock']",
        "workers": "3", "worker_class": "gthread", "threads": "4", "timeout": "40.0",
        "graceful_timeout": "20.0", "keepalive": "2.0", "max_requests": "1000",
        "max_requests_jitter": "50", "preload_app": "True", "pidfile": "/tmp/p.pid",
        "user": "nobody", "group": "nogroup", "umask": str(0o27), "proc_name": "shop",
        "raw_env": "['A=1', 'B=2']", "chdir": "/tmp", "accesslog": "-",
        "access_log_format": "%(h)s %(r)s", "errorlog": "-", "loglevel": "debug",
        "forwarded_allow_ips": "['10.0.0.1', '*']", "limit_request_line": "4094",
        "limit_request_fields": "50", "limit_request_field_size": "4000",
        "daemon": "False", "reload": "False"}


@pytest.mark.parametrize(("given", "meant"), [
    ("sync", "sync"), ("gthread", "gthread"),
    ("gunicorn.workers.sync.SyncWorker", "sync"),
    ("gunicorn.workers.gthread.ThreadWorker", "gthread"),
])
def test_worker_class_names(given: str, meant: str) -> None:
    result = run_cli("tests.apps:app", "-k", given, "--check-config")
    assert result.returncode == 0, result.stderr
    assert effective(result)["worker_class"] == meant


@pytest.mark.parametrize("klass", ["gevent", "eventlet", "uvicorn.workers.UvicornWorker"])
def test_async_worker_classes_are_refused_by_name(klass: str) -> None:
    result = run_cli("tests.apps:app", "--worker-class", klass)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"worker class {klass!r} is not supported" in result.stderr
    assert "--threads" in result.stderr  # says what to use instead


def test_gthread_runs_threads_and_sync_runs_one(tmp_path: Path) -> None:
    threaded = Server(tmp_path, "tests.apps:app", "-k", "gthread", "--threads", "3", workers=1)
    single = Server(tmp_path, "tests.apps:app", "-k", "sync", workers=1)
    try:
        threaded.wait_ready()
        single.wait_ready()
        assert threaded.request("/multithread") == (200, b"True")
        assert single.request("/multithread") == (200, b"False")
    finally:
        threaded.close()
        single.close()


def test_reload_and_preload_do_not_mix() -> None:
    result = run_cli("tests.apps:app", "--reload", "--preload")
    assert result.returncode == 2
    assert "--reload does not work with --preload" in result.stderr


# -- gunicorn.conf.py ---------------------------------------------------------------------

GUNICORN_CONF = """\
import multiprocessing
import os
from multiprocessing import cpu_count
from os import environ

wsgi_app = "tests.apps:app"
bind = ["127.0.0.1:9002"]
workers = 2
worker_class = "gthread"
threads = 2
timeout = 60
graceful_timeout = 15
keepalive = 3
max_requests = 500
max_requests_jitter = 25
preload_app = False
pidfile = None
user = 1000
group = 1000
umask = 0o22
proc_name = "gunicorn-conf"
errorlog = "-"
loglevel = "warning"
accesslog = None
access_log_format = '%(h)s "%(r)s" %(s)s'
forwarded_allow_ips = "127.0.0.1"
limit_request_line = 2048
limit_request_fields = 40
limit_request_field_size = 2048
chdir = os.getcwd()
raw_env = ["DJANGO_SETTINGS_MODULE=site.settings"]
daemon = False
reload = False
_helper = cpu_count()
"""


def test_a_gunicorn_conf_py_is_accepted(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    result = run_cli("-c", str(conf), "--check-config")
    assert result.returncode == 0, result.stderr
    got = effective(result)
    assert got["app"] == "tests.apps:app"  # from wsgi_app
    assert (got["workers"], got["worker_class"], got["threads"]) == ("2", "gthread", "2")
    assert (got["user"], got["group"], got["keepalive"]) == ("1000", "1000", "3.0")
    assert got["raw_env"] == "['DJANGO_SETTINGS_MODULE=site.settings']"
    # The command line still wins over the file, the app spec included.
    override = run_cli("examples.hello:app", "-c", str(conf), "-w", "5", "--check-config")
    assert effective(override)["app"] == "examples.hello:app"
    assert effective(override)["workers"] == "5"


def test_wsgi_app_from_the_config_file_serves(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('wsgi_app = "tests.apps:app"\nthreads = 2\n')
    server = Server(tmp_path, f"--config={conf}", workers=1)
    try:
        server.wait_ready()
        status, body = server.request("/")
        assert status == 200 and body.startswith(b"hello from")
    finally:
        server.close()


@pytest.mark.parametrize("hook", ["post_fork", "when_ready", "on_starting", "pre_request"])
def test_server_hooks_are_refused_by_name(tmp_path: Path, hook: str) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"workers = 2\n\ndef {hook}(server, worker):\n    pass\n")
    result = run_cli("tests.apps:app", "-c", str(conf))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"gunicorn server hook {hook!r} is not supported" in result.stderr
    assert "os.register_at_fork" in result.stderr


def test_gunicorn_only_settings_are_refused_with_the_reason(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('worker_tmp_dir = "/dev/shm"\n')
    result = run_cli("tests.apps:app", "-c", str(conf))
    assert result.returncode == 2
    assert "gunicorn setting 'worker_tmp_dir' is not supported: heartbeats travel over a " \
           "pipe" in result.stderr


def test_a_function_defined_in_the_config_file_is_still_a_typo(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("def workrs():\n    return 2\n")
    result = run_cli("tests.apps:app", "-c", str(conf))
    assert result.returncode == 2
    assert "unknown setting 'workrs' (did you mean workers?)" in result.stderr


# -- -D / --daemon ------------------------------------------------------------------------


def _unix_get(path: Path, target: str = "/pid") -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(DEADLINE)
        client.connect(str(path))
        client.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    return data


def _named(name: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(name in part for part in p.info["cmdline"] or []) and \
                    p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def test_daemon_detaches_once_ready_and_writes_the_pidfile(tmp_path: Path) -> None:
    sock, pidfile, log = tmp_path / "d.sock", tmp_path / "d.pid", tmp_path / "d.log"
    name = f"daemon-{os.getpid()}-{tmp_path.name}"
    result = run_cli("tests.apps:app", "-D", "-b", f"unix:{sock}", "-p", str(pidfile),
                     "-n", name, "-w", "2", "--error-logfile", str(log))
    try:
        assert result.returncode == 0, result.stderr
        assert (result.stdout, result.stderr) == ("", "")
        pid = int(pidfile.read_text())
        master = psutil.Process(pid)
        assert os.getsid(pid) != os.getsid(0)  # its own session, no terminal
        assert os.getsid(pid) != pid  # not a session leader: can never get a terminal back
        assert master.terminal() is None
        assert all(os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null" for fd in (0, 1, 2))
        # Ready means ready: the workers answer at once.
        assert _unix_get(sock).startswith(b"HTTP/1.1 200 OK")
        os.kill(pid, signal.SIGTERM)
        psutil.wait_procs([master], timeout=DEADLINE)
        wait_for(lambda: not pidfile.exists(), what="the pidfile to be removed")
    finally:
        left = wait_for_none(lambda: _named(name))
        for p in left:
            p.kill()
        assert not left, f"orphans: {left}"


def test_daemon_start_up_errors_reach_the_terminal_with_their_code(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("tests.apps:app", "-D", "-b", f"127.0.0.1:{port}")
    assert busy.returncode == 1
    assert busy.stderr.count("\n") == 1
    assert busy.stderr.startswith(f"prefork: error: bind(127.0.0.1:{port}): address already "
                                  "in use; another process is listening there")
    broken = run_cli("tests.broken_app:app", "-D", "-b", f"unix:{tmp_path / 'b.sock'}",
                     "--error-logfile", str(tmp_path / "b.log"))
    assert broken.returncode == 4
    assert broken.stderr == ("prefork: error: app 'tests.broken_app:app' failed to load: "
                             "RuntimeError: this app is broken on purpose (the traceback is "
                             f"in {tmp_path / 'b.log'}) (exit 4)\n")


def test_daemon_under_systemd_is_refused(tmp_path: Path) -> None:
    result = run_cli("tests.apps:app", "-D", env={"NOTIFY_SOCKET": str(tmp_path / "n")})
    assert result.returncode == 2
    assert "--daemon under systemd" in result.stderr


# -- --reload -----------------------------------------------------------------------------

V1 = 'def app(environ, start_response):\n    start_response("200 OK", [])\n    return [b"v1"]\n'


def test_reload_restarts_the_worker_on_a_code_change(tmp_path: Path) -> None:
    module = tmp_path / "reload_app.py"
    module.write_text(V1)
    server = Server(tmp_path, "reload_app:app", "--reload", workers=1, cwd=tmp_path)
    try:
        server.wait_ready()
        assert server.request("/") == (200, b"v1")
        module.write_text(V1.replace("v1", "v2"))
        wait_for(lambda: server.request("/") == (200, b"v2"), what="the new code")
        server.wait_log(r"reload: .*reload_app\.py changed; restarting this worker")
        # A syntax error: the worker stays up and shows it, then the fix is picked up.
        module.write_text("def app(environ, start_response) oops\n")
        status, body = wait_for(lambda: (r := server.request("/"))[0] == 500 and r,
                                what="the 500 page")
        assert b"SyntaxError" in body and b"reload_app.py" in body
        module.write_text(V1.replace("v1", "v3"))
        wait_for(lambda: server.request("/") == (200, b"v3"), what="the fixed code")
        assert "crashed young" not in server.log()  # planned restarts, not a crash loop
        assert server.proc.poll() is None
    finally:
        server.close()


def test_the_annotated_example_config_is_valid() -> None:
    result = run_cli("-c", "examples/config.py", "--check-config", env={"PORT": "8123"})
    assert result.returncode == 0, result.stderr
    got = effective(result)
    assert (got["app"], got["bind"], got["umask"]) == (
        "examples.hello:app", "['127.0.0.1:8123']", str(0o007))
