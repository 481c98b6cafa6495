"""--preload through a template process (template.py): one import per generation, new code
on HUP with the master's pid and listeners unchanged, and no process left behind."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil

from tests.harness import DEADLINE, Load, Server, run_cli, wait_for

APP = """\
import os

VERSION = {version!r}
TOKEN = os.urandom(6).hex()  # made once per import: equal in workers forked from one
with open("imports.log", "a") as f:  # relative to --chdir
    f.write(f"{{os.getpid()}} {{VERSION}} {{TOKEN}}\\n")


def app(environ, start_response):
    body = f"{{VERSION}} {{TOKEN}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


def write_app(path: Path, version: str, broken: bool = False) -> None:
    text = APP.format(version=version)
    if broken:
        text += f"\nraise RuntimeError('version {version} is broken')\n"
    (path / "preloaded.py").write_text(text)


def start(servers, tmp_path: Path, *args: str, workers: int = 2) -> Server:
    write_app(tmp_path, "one")
    server: Server = servers("preloaded:app", "--preload", "--chdir", str(tmp_path),
                             "--pid", str(tmp_path / "p.pid"), *args, workers=workers)
    server.wait_ready()
    return server


def status(tmp_path: Path) -> tuple[dict, str]:
    """`prefork status` as JSON and as text."""
    pidfile = str(tmp_path / "p.pid")
    doc = json.loads(run_cli("status", "--pid", pidfile, "--json").stdout)
    return doc, run_cli("status", "--pid", pidfile).stdout


def answers(server: Server, n: int) -> set[tuple[str, str]]:
    """(version, token) of `n` fresh connections."""
    seen = set()
    for _ in range(n):
        status, body = server.request("/", headers={"Connection": "close"})
        assert status == 200
        version, token, _ = body.decode().split()
        seen.add((version, token))
    return seen


def test_workers_come_from_one_import_and_are_the_masters_children(servers,
                                                                   tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    templates = server.templates()
    assert len(templates) == 1  # the template is the master's child too
    workers = server.workers()
    assert len(workers) == 2
    # Double-forked by the template, re-parented to the master (a child subreaper).
    assert {w.ppid() for w in workers} == {server.pid}
    # One import, in the template; what the workers serve comes from it.
    imports = (tmp_path / "imports.log").read_text().splitlines()
    assert imports == [f"{templates[0].pid} one {answers(server, 1).pop()[1]}"]
    assert len(answers(server, 6)) == 1
    assert "booting template" in server.log()
    assert "[template 1] INFO app loaded" in server.log()
    doc, text = status(tmp_path)
    (shown,) = doc["templates"]
    assert (shown["pid"], shown["generation"], shown["state"]) == (templates[0].pid, 1, "ready")
    assert shown["pss"] > 0
    assert f"template pid {templates[0].pid}, generation 1, ready" in text


def test_hup_loads_new_code_under_load(servers, tmp_path: Path) -> None:
    server = start(servers, tmp_path, "--graceful-timeout", "5")
    (before,) = answers(server, 4)
    assert before[0] == "one"
    old_template = server.templates()[0].pid
    with Load(server, "/") as load:
        for version in ("two", "three"):
            write_app(tmp_path, version)
            old = server.worker_pids()
            mark = len(server.notify.messages)
            server.kill(signal.SIGHUP)
            server.wait_ready(after=mark)  # asserts READY=1 came from the same master pid
            # The old workers may still answer what is queued (they drain, then exit).
            wait_for(lambda old=old: not old & server.worker_pids(),
                     what="the old generation to exit")
            seen = answers(server, 6)
            assert {v for v, _ in seen} == {version}, seen
            assert len(seen) == 1  # the new workers share the new template's import
            imports = (tmp_path / "imports.log").read_text().splitlines()
            assert imports[-1].split()[1:] == [version, seen.pop()[1]]
        wait_for(lambda: load.served > 20, what="requests flowing")
    assert not load.failures, load.failures[:5]
    assert server.proc.poll() is None
    # Each replaced template exits; one remains, for the current generation.
    wait_for(lambda: len(server.templates()) == 1, what="one template")
    assert server.templates()[0].pid != old_template
    assert not psutil.pid_exists(old_template) or \
        psutil.Process(old_template).status() == psutil.STATUS_ZOMBIE


def test_hup_with_broken_code_keeps_the_old_generation(servers, tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    (before,) = answers(server, 3)
    workers = server.worker_pids()
    write_app(tmp_path, "two", broken=True)
    mark = len(server.notify.messages)
    server.kill(signal.SIGHUP)
    server.wait_ready(after=mark)  # READY=1 again, with the failure in STATUS=
    server.wait_log("reload failed: RuntimeError: version two is broken")
    doc, text = status(tmp_path)
    assert doc["master"]["last_error"] == "reload failed: RuntimeError: version two is broken"
    assert "last error: reload failed: RuntimeError: version two is broken" in text
    assert answers(server, 4) == {before}
    assert server.worker_pids() == workers
    wait_for(lambda: len(server.templates()) == 1, what="the failed template to be gone")
    # Fixed on disk: the next HUP serves it.
    write_app(tmp_path, "three")
    mark = len(server.notify.messages)
    server.kill(signal.SIGHUP)
    server.wait_ready(after=mark)
    wait_for(lambda: not workers & server.worker_pids(), what="the old generation to exit")
    assert {v for v, _ in answers(server, 4)} == {"three"}


def test_a_killed_template_is_replaced_and_workers_keep_serving(servers,
                                                                tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    (before,) = answers(server, 3)
    (tpl,) = server.templates()
    tpl.kill()
    server.wait_log("the template of generation 1 is gone; a new one in 0.0 s")
    server.wait_log(r"template ready pid=\d+ generation=1", count=2)
    assert answers(server, 3) == {before}  # its workers never noticed
    # A worker that dies now is forked by the new template.
    victim = min(server.worker_pids())
    psutil.Process(victim).kill()
    server.wait_log(rf"worker exited slot=\d pid={victim} ")
    server.wait_workers(2, exclude={victim})
    server.wait_log(r"worker ready slot=\d pid=\d+ generation=1", count=3)


def test_a_template_that_does_not_answer_is_replaced(servers, tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    assert len(answers(server, 3)) == 1
    (tpl,) = server.templates()
    tpl.suspend()  # SIGSTOP: it cannot fork the next worker
    victim = min(server.worker_pids())
    psutil.Process(victim).kill()
    server.wait_log(rf"killing template pid={tpl.pid} generation=1: did not fork a worker "
                    r"in time")
    server.wait_log(r"template ready pid=\d+ generation=1", count=2)
    server.wait_workers(2, exclude={victim})
    answers(server, 3)  # all 200
    assert not psutil.pid_exists(tpl.pid) or tpl.status() == psutil.STATUS_ZOMBIE


def test_a_killed_master_leaves_no_template_or_worker(servers, tmp_path: Path) -> None:
    server = start(servers, tmp_path, workers=2)
    family = server.children()
    assert len(family) == 3
    server.kill(signal.SIGKILL)
    _, alive = psutil.wait_procs(family, timeout=DEADLINE)
    assert not alive, f"outlived the master: {alive}"


def test_an_import_slower_than_timeout_fails_the_boot(servers, tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        "import time\ntime.sleep(60)\ndef app(e, sr):\n    return []\n")
    server = servers("slow:app", "--preload", "--chdir", str(tmp_path), "--timeout", "1",
                     workers=1)
    assert server.wait_exit() == 3
    assert "the app did not load within --timeout (1 s)" in server.log()
    assert "the app did not load within --timeout (1 s)" in server.stderr()
