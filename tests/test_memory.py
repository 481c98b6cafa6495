"""--max-worker-memory: a leaking worker is replaced with no failed request; PSS, not RSS."""

from __future__ import annotations

import psutil

from tests.harness import Load, wait_for
from tests.test_metrics import free_port, scrape, value


def test_leaking_worker_is_recycled_under_load_with_no_failed_request(servers) -> None:
    port = free_port()
    server = servers("tests.obs_apps:app", "--max-worker-memory", "40",
                     "--memory-check-interval", "0.2", "--metrics-bind", f"127.0.0.1:{port}",
                     workers=2)
    server.wait_ready()
    first = server.wait_workers(2)
    with Load(server, "/leak") as load:
        line = server.wait_log(r"worker slot=\d pid=(\d+) PSS [0-9.]+ MiB above "
                               r"--max-worker-memory 40 MiB for 3 samples")[0]
        leaker = int(line)
        assert leaker in first
        server.wait_log(rf"worker exited slot=\d pid={leaker} generation=1 exit code 0 "
                        r"reason=memory")
        # Its replacement served requests (zero failures checked below).
        wait_for(lambda: load.pids() - first, what="a request served by a replacement")
    assert not load.failures, load.failures[:5]
    log = server.log()
    # The replacement was ready before the leaker was told to go.
    assert log.index("worker ready slot=", log.index(f"pid={leaker} PSS")) < log.index(
        f"pid={leaker} replaced (memory)")
    assert value(scrape(port)[2], "prefork_worker_restarts_total", reason="memory") >= 1
    assert "worker timeout" not in log


def test_preloaded_shared_pages_do_not_count_against_the_limit(servers) -> None:
    # 96 MiB imported by the master and shared by 2 workers: each worker's RSS is above
    # the 60 MiB limit, its PSS (a third of the shared pages, plus its own) is not.
    server = servers("tests.obs_apps:app", "--preload", "--max-worker-memory", "60",
                     "--memory-check-interval", "0.1", "--log-level", "debug",
                     workers=2, env={"OBS_SHARED_MIB": "96"})
    server.wait_ready()
    pids = server.wait_workers(2)
    for pid in pids:
        assert psutil.Process(pid).memory_info().rss > 60 * 1024 * 1024
    for pid in pids:  # five samples each, all under the limit
        server.wait_log(rf"memory sample slot=\d pid={pid} pss=[0-9.]+MiB over_limit=0",
                        count=5)
    assert "above --max-worker-memory" not in server.log()
    assert server.worker_pids() == pids
    assert server.request("/")[0] == 200
