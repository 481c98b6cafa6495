"""Control-socket protocol and /metrics rendering, in memory (no server process)."""

from __future__ import annotations

import json
import os
import selectors
import socket
import stat
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prefork import control, metrics
from prefork.scoreboard import Counters


def test_default_socket_path(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert control.default_path("/x/y.ctl", "/run/p.pid", 42) == "/x/y.ctl"
    assert control.default_path("off", "/run/p.pid", 42) is None
    assert control.default_path(None, "/run/p.pid", 42) == "/run/p.pid.ctl"
    assert control.default_path(None, None, 42) == str(tmp_path / "prefork-42.ctl")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert control.default_path(None, None, 42).startswith("/")


def test_control_endpoint_answers_from_a_selector(tmp_path: Path) -> None:
    sel = selectors.DefaultSelector()
    seen = []

    def handle(request: dict) -> dict:
        seen.append(request)
        return {"ok": True, "echo": request}

    path = str(tmp_path / "c.ctl")
    endpoint = control.open_endpoint(path, sel, handle)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.sendall(b'{"verb": "scale", "workers": 3}\n')
    client.settimeout(5)
    deadline = time.monotonic() + 5
    data = b""
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        for key, _ in sel.select(0.1):
            key.data.ready(time.monotonic())
        try:
            client.setblocking(False)
            data += client.recv(4096)
        except BlockingIOError:
            pass
    assert json.loads(data) == {"ok": True, "echo": {"verb": "scale", "workers": 3}}
    assert seen == [{"verb": "scale", "workers": 3}]
    client.close()
    endpoint.close()
    assert not os.path.exists(path)
    sel.close()


def test_call_reports_a_missing_master(tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="no such file"):
        control.call(str(tmp_path / "none.ctl"), {"verb": "status"})
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.ctl"))
    stale.close()  # the file stays, nobody listens
    with pytest.raises(control.ControlError, match="refused"):
        control.call(str(tmp_path / "stale.ctl"), {"verb": "status"})


def test_render_is_valid_exposition_format() -> None:
    counters = Counters()
    counters.classes[2], counters.buckets[3], counters.duration_sum = 7, 7, 0.21
    sample = metrics.Sample(counters, 2, {"ready": 1, "busy": 1}, {"timeout": 1},
                            [metrics.WorkerMemory(1, 100, 10 << 20, 20 << 20)],
                            [('weird "name"\\', 3, 128)], 4, 2, 12.5)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(sample))}
    assert families["prefork_request_duration_seconds"].type == "histogram"
    assert families["prefork_requests"].type == "counter"  # the parser drops _total
    buckets = {s.labels["le"]: s.value for s in families["prefork_request_duration_seconds"]
               .samples if s.name.endswith("_bucket")}
    assert buckets["0.025"] == 0 and buckets["0.05"] == 7 and buckets["+Inf"] == 7
    backlog = families["prefork_listen_backlog"].samples[0]
    assert backlog.labels["listener"] == 'weird "name"\\' and backlog.value == 3
    restarts = {s.labels["reason"]: s.value
                for s in families["prefork_worker_restarts"].samples}
    assert restarts == {"exit": 0, "signal": 0, "timeout": 1, "memory": 0, "max-requests": 0}


def test_backlog_of_unix_sockets_is_not_reported(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "u.sock"))
        sock.listen(5)
        assert metrics.listen_backlog(sock) is None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(7)
        clients = [socket.create_connection(sock.getsockname()) for _ in range(2)]
        assert metrics.listen_backlog(sock) == (2, 7)
        for c in clients:
            c.close()
