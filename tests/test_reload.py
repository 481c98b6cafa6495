"""Reload under load: transactions, never more than 2N workers, nothing dropped."""

from __future__ import annotations

import signal
import threading

import pytest

from tests.harness import DEADLINE, Load, wait_for


@pytest.mark.parametrize("preload", [[], ["--preload"]], ids=["import", "preload"])
def test_ten_reloads_under_load(servers, preload: list[str]) -> None:
    workers = 2
    server = servers("tests.apps:app", "--graceful-timeout", "5", *preload, workers=workers)
    server.wait_ready()
    most = [0]
    stop = threading.Event()

    def watch() -> None:  # the most workers seen alive at once
        while not stop.is_set():
            most[0] = max(most[0], len(server.worker_pids()))
            stop.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with Load(server) as load:
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
            wait_for(lambda: load.served > 50, what="requests flowing")
    finally:
        stop.set()
        watcher.join(DEADLINE)
    assert not load.failures, load.failures[:5]
    assert most[0] <= 2 * workers, most[0]
    assert len({frozenset(g) for g in generations}) == 10  # ten distinct generations
    assert "generation 11" in server.log()
