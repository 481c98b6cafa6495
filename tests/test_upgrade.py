"""USR2: a new master from the code on disk takes over the listeners; nothing is dropped."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import psutil

from tests.harness import DEADLINE, Load, wait_for


def test_usr2_hands_over_to_a_new_master_under_load(servers, tmp_path: Path) -> None:
    pidfile = tmp_path / "prefork.pid"
    server = servers("tests.apps:app", "--pid", str(pidfile), workers=2)
    server.wait_ready()
    new_master = None
    load = Load(server).__enter__()
    try:
        wait_for(lambda: load.served, what="requests flowing")
        server.kill(signal.SIGUSR2)
        (line,) = server.wait_log(r"upgrade: new master pid=(\d+) is ready")
        new_master = psutil.Process(int(line))
        # The old master names its successor to systemd before it goes (NotifyAccess=main).
        sender, _ = server.notify.wait(f"MAINPID={new_master.pid}")
        assert sender == server.pid
        assert server.wait_exit() == 0
        assert pidfile.read_text().strip() == str(new_master.pid)
        assert not Path(f"{pidfile}.oldbin").exists()
        new_workers = {p.pid for p in new_master.children()}
        wait_for(lambda: load.pids() & new_workers, what="a request served by the new master")
    finally:
        load.__exit__()
        if new_master is not None:
            new_master.send_signal(signal.SIGTERM)
            new_master.wait(DEADLINE)  # not our child: psutil cannot give its exit code
    assert not load.failures, load.failures[:5]


def test_failed_upgrade_keeps_the_old_master(servers, tmp_path: Path) -> None:
    app = tmp_path / "upgradable.py"
    app.write_text("def app(e, sr):\n    sr('200 OK', [])\n    return [b'v1']\n")
    pidfile = tmp_path / "prefork.pid"
    server = servers("upgradable:app", "--chdir", str(tmp_path), "--pid", str(pidfile),
                     workers=1)
    server.wait_ready()
    app.write_text("raise ImportError('not this time')\n")
    server.kill(signal.SIGUSR2)
    server.wait_log(r"upgrade failed: the new master pid=\d+ exited before it was ready")
    assert server.proc.poll() is None
    assert pidfile.read_text().strip() == str(server.pid)
    assert not Path(f"{pidfile}.oldbin").exists()
    assert server.request("/")[1] == b"v1"
    (new,) = re.findall(r"upgrade: started a new master pid=(\d+)", server.log())
    # The new master said why in the shared log before it went.
    assert f"[{new}] [master] ERROR worker slot=1 died before it was ready" in server.log()
    assert "ImportError: not this time" in server.log()
