"""Reload under load: transactions, never more than 2N workers, nothing dropped."""

from __future__ import annotations

import signal
import threading

from tests.harness import DEADLINE, wait_for


def test_ten_reloads_under_load(servers) -> None:
    workers = 2
    server = servers("tests.apps:app", "--graceful-timeout", "5", workers=workers)
    server.wait_ready()
    failures: list[str] = []
    served = [0]
    most = [0]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _ = server.request("/pid", headers={"Connection": "close"})
                if status != 200:
                    failures.append(f"status {status}")
                served[0] += 1
            except OSError as exc:
                failures.append(repr(exc))

    def watch() -> None:  # the most workers seen alive at once
        while not stop.is_set():
            most[0] = max(most[0], len(server.worker_pids()))
            stop.wait(0.01)

    threads = [threading.Thread(target=client) for _ in range(4)] + [
        threading.Thread(target=watch)]
    for t in threads:
        t.start()
    try:
        generations = []
        for _ in range(10):
            old = server.worker_pids()
            mark = len(server.notify.messages)
            server.kill(signal.SIGHUP)
            server.wait_ready(after=mark)
            # Every old worker is gone well within --graceful-timeout.
            wait_for(lambda old=old: not old & server.worker_pids(), timeout=5 + 5,
                     what="the old generation to exit")
            generations.append(server.worker_pids())
        wait_for(lambda: served[0] > 50, what="requests flowing")
    finally:
        stop.set()
        for t in threads:
            t.join(DEADLINE)
    assert not failures, failures[:5]
    assert most[0] <= 2 * workers, most[0]
    assert len({frozenset(g) for g in generations}) == 10  # ten distinct generations
    assert "generation 11" in server.log()
