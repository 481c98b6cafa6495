"""/metrics from a live master, read with Prometheus' own parser; the hung-worker report."""

from __future__ import annotations

import http.client
import os
import signal
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import DEADLINE, Server, wait_for
from tests.test_master import hold, read_response


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def scrape_until(port: int, name: str, expected: float, **labels: str) -> str:
    """Scrape until `name{labels}` reaches `expected`: a worker counts a request just after
    its response went out, so a client can read the response before it is counted."""
    def reached() -> str | None:
        text = scrape(port)[2]
        return text if value(text, name, **labels) == expected else None
    return wait_for(reached, what=f"{name}{labels} == {expected}")  # type: ignore[no-any-return]


def start(servers, *args: str, workers: int = 2, app: str = "tests.obs_apps:app"
          ) -> tuple[Server, int]:
    port = free_port()
    server = servers(app, "--metrics-bind", f"127.0.0.1:{port}", *args, workers=workers)
    server.wait_ready()
    return server, port


def test_metrics_parse_and_count_the_requests_sent(servers) -> None:
    server, port = start(servers)
    for _ in range(5):
        assert server.request("/")[0] == 200
    for _ in range(3):
        assert server.request("/code/404")[0] == 404
    assert server.request("/code/503")[0] == 503
    scrape_until(port, "prefork_request_duration_seconds_count", 9)
    status, content_type, text = scrape(port)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    s = samples(text)
    assert s[("prefork_requests_total", (("status", "2xx"),))] == 5
    assert s[("prefork_requests_total", (("status", "4xx"),))] == 3
    assert s[("prefork_requests_total", (("status", "5xx"),))] == 1
    assert s[("prefork_request_duration_seconds_count", ())] == 9
    assert s[("prefork_request_duration_seconds_bucket", (("le", "+Inf"),))] == 9
    assert 0 < s[("prefork_request_duration_seconds_sum", ())] < 9 * DEADLINE
    buckets = [v for (name, _), v in s.items() if name.endswith("_bucket")]
    assert buckets == sorted(buckets), "histogram buckets are cumulative"
    assert s[("prefork_requests_in_flight", ())] == 0
    assert s[("prefork_workers", (("state", "ready"),))] == 2
    assert s[("prefork_workers_target", ())] == 2
    for reason in ("exit", "signal", "timeout", "memory", "max-requests"):
        assert s[("prefork_worker_restarts_total", (("reason", reason),))] == 0
    pids = server.worker_pids()
    for pid in pids:
        slot_labels = [dict(labels) for name, labels in s
                       if name == "prefork_worker_memory_bytes" and ("pid", str(pid)) in labels]
        assert {d["kind"] for d in slot_labels} == {"pss", "rss"}
    assert s[("prefork_listen_backlog", (("listener", f"127.0.0.1:{server.port}"),))] == 0
    assert s[("prefork_listen_backlog_limit", (("listener", f"127.0.0.1:{server.port}"),))
             ] == 128  # what the harness passed to listen()
    assert scrape(port, "/")[0] == 404
    assert scrape(port, "/metrics/x")[0] == 404


def test_heads_refused_before_the_app_are_counted(servers) -> None:
    server, port = start(servers, "--header-timeout", "1", "--threads", "2", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more: 408 after 1 s
        conn.settimeout(DEADLINE)
        assert conn.recv(100).startswith(b"HTTP/1.1 408 ")
    assert server.request("/")[0] == 200
    text = scrape_until(port, "prefork_requests_total", 1, status="2xx")
    assert value(text, "prefork_requests_total", status="4xx") == 2
    assert value(text, "prefork_request_duration_seconds_count") == 1  # only the app's


def test_busy_worker_in_flight_and_listen_backlog(servers, tmp_path: Path) -> None:
    server, port = start(servers, app="tests.apps:app", workers=1)
    marker = tmp_path / "held"
    conn, _ = hold(server, marker)
    # The only worker is inside the app: these connections wait in the accept queue.
    waiting = [socket.create_connection(("127.0.0.1", server.port), DEADLINE)
               for _ in range(3)]
    try:
        text = scrape_until(port, "prefork_listen_backlog", 3,
                            listener=f"127.0.0.1:{server.port}")
        assert value(text, "prefork_requests_in_flight") == 1
        assert value(text, "prefork_workers", state="busy") == 1
    finally:
        marker.unlink()
        for c in waiting:
            c.close()
    assert read_response(conn).startswith(b"HTTP/1.1 200 OK")
    conn.close()


def test_counters_survive_worker_exits_and_restarts_are_counted(servers) -> None:
    server, port = start(servers, "--max-requests", "4", workers=1)
    (first,) = server.wait_workers(1)
    for _ in range(4):
        assert server.request("/")[0] == 200
    server.wait_log(rf"worker exited slot=1 pid={first} .* reason=max-requests")
    (second,) = server.wait_workers(1, exclude={first})
    text = scrape(port)[2]
    assert value(text, "prefork_requests_total", status="2xx") == 4  # folded, not lost
    assert value(text, "prefork_worker_restarts_total", reason="max-requests") == 1
    os.kill(second, signal.SIGKILL)
    server.wait_workers(1, exclude={first, second})
    assert server.request("/")[0] == 200
    text = scrape_until(port, "prefork_requests_total", 5, status="2xx")
    assert value(text, "prefork_worker_restarts_total", reason="signal") == 1


def test_tcp_connections_are_counted_apart(servers) -> None:
    server, port = start(servers, "--protocol", "tcp", app="tests.apps:echo", workers=1)
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
    scrape_until(port, "prefork_requests_total", 2, status="tcp")


@pytest.mark.parametrize("path, function", [("/spin", "spin_forever"),
                                            ("/c-sleep", "tests/apps.py")])
def test_hung_worker_report_names_its_request_then_its_stacks(servers, path: str,
                                                              function: str) -> None:
    server, port = start(servers, "--timeout", "2", app="tests.apps:app", workers=1)
    (victim,) = server.wait_workers(1)
    with socket.create_connection(("127.0.0.1", server.port), DEADLINE) as conn:
        conn.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        server.wait_log(rf"worker timeout slot=1 pid={victim} silent for [0-9.]+ s, "
                        rf"serving GET {path} for [0-9.]+ s; dumping stacks")
        server.wait_log(rf"stack dump of worker slot=1 pid={victim} \(timeout\):\n"
                        rf"(.|\n)*{function}")
    server.wait_log(rf"worker exited slot=1 pid={victim} .* reason=timeout")
    server.wait_workers(1, exclude={victim})
    log = server.log()
    # In that order: the request, the stacks, the kill, the replacement.
    assert (log.index("worker timeout") < log.index("stack dump")
            < log.index(f"worker exited slot=1 pid={victim}"))
    assert value(scrape(port)[2], "prefork_worker_restarts_total", reason="timeout") == 1
    assert server.request("/")[0] == 200
