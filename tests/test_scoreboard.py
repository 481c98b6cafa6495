"""The scoreboard in memory: the worker's writes as the master reads them (no processes)."""

from __future__ import annotations

import os
import threading

from prefork import scoreboard
from prefork.scoreboard import BOUNDS, CLASSES, TCP, Board, Writer


def test_a_request_in_progress_then_counted() -> None:
    board = Board(1)
    writer = Writer(board.mm, 1)
    assert board.read().current == [] and board.read().counters.requests == 0
    writer.start("POST", "/upload/" + "x" * 500)
    snap = board.read()
    (current,) = snap.current
    assert current.method == "POST"
    assert current.path == ("/upload/" + "x" * 500)[:scoreboard.PATH_MAX]
    assert current.started > 0
    writer.end(201)
    snap = board.read()
    assert snap.current == []  # idle at once ...
    assert snap.counters.requests == 0  # ... counted when the worker's loop publishes
    writer.publish()
    snap = board.read()
    assert snap.counters.classes[CLASSES.index("2xx")] == 1
    assert snap.counters.requests == 1 and sum(snap.counters.buckets) == 1
    assert snap.counters.buckets[0] == 1  # well under 5 ms
    writer.close()
    board.close()


def test_a_repeated_request_rewrites_only_its_start() -> None:
    board = Board(1)
    writer = Writer(board.mm, 1)
    writer.start("GET", "/same")
    first = board.read().current[0].started
    writer.end(200)
    assert board.read().current == []
    writer.start("GET", "/same")
    (current,) = board.read().current
    assert (current.method, current.path) == ("GET", "/same") and current.started >= first
    writer.end(200)
    writer.start("HEAD", "/same")
    assert board.read().current[0].method == "HEAD"
    writer.end(200)
    writer.publish()
    assert board.read().counters.requests == 3
    writer.close()
    board.close()


def test_status_classes_and_duration_buckets() -> None:
    board = Board(1)
    writer = Writer(board.mm, 1)
    for status in (100, 200, 204, 301, 404, 500, 0, TCP):
        writer.start("GET", "/")
        writer.end(status)
    writer.publish()
    counters = board.read().counters
    assert dict(zip(CLASSES, counters.classes, strict=True)) == {
        "none": 1, "1xx": 1, "2xx": 2, "3xx": 1, "4xx": 1, "5xx": 1, "tcp": 1}
    record = writer.records[0]
    record.start("GET", "/slow")
    record.started -= 0.3  # as if it began 300 ms ago
    record.end(200)
    record.publish()
    counters = board.read().counters
    assert counters.buckets[BOUNDS.index(0.5)] == 1
    assert 0.3 <= counters.duration_sum < 1.0
    writer.close()
    board.close()


def test_rejected_heads_count_without_a_duration() -> None:
    board = Board(scoreboard.records_for(2))  # 2 request threads + the main thread
    writer = Writer(board.mm, scoreboard.records_for(2))
    writer.rejected(431)
    counters = board.read().counters
    assert counters.classes[CLASSES.index("4xx")] == 1 and sum(counters.buckets) == 0
    writer.close()
    board.close()


def test_non_ascii_path_is_kept_readable() -> None:
    board = Board(1)
    writer = Writer(board.mm, 1)
    writer.start("GET", "/caf\xe9/\udcff")  # a lone surrogate must not raise
    assert board.read().current[0].path.startswith("/caf\xe9/")
    writer.close()
    board.close()


def test_each_thread_writes_its_own_record() -> None:
    board = Board(4)
    writer = Writer(board.mm, 4)
    started = threading.Barrier(5, timeout=20)  # four threads and this one
    release = threading.Event()

    def serve(i: int) -> None:
        writer.start("GET", f"/thread/{i}")
        started.wait()
        assert release.wait(20)
        for _ in range(100):
            writer.end(200)
            writer.start("GET", f"/thread/{i}")
        writer.end(200)

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    paths = sorted(c.path for c in board.read().current)
    release.set()
    for t in threads:
        t.join(20)
    assert paths == [f"/thread/{i}" for i in range(4)]
    snap = board.read()
    assert snap.current == [] and snap.counters.requests == 4 * 101
    writer.close()
    board.close()


def test_a_torn_record_is_never_returned() -> None:
    board = Board(1)
    writer = Writer(board.mm, 1)
    writer.start("GET", "/a")
    writer.end(200)
    writer.publish()
    good = board.read()
    # A writer stopped halfway (sequence odd, fields half-written) ...
    record = writer.records[0]
    record.seq += 1
    record.q[record.i_seq] = record.seq
    record.q[record.i_classes + CLASSES.index("5xx")] += 7
    # ... is read as its last consistent state, and the master is not stuck.
    assert board.read().counters == good.counters
    assert board.torn == 1
    record.seq += 1
    record.q[record.i_seq] = record.seq
    assert board.read().counters.classes[CLASSES.index("5xx")] == 7
    writer.close()
    board.close()


def test_the_board_is_shared_with_a_forked_child() -> None:
    board = Board(1)
    pid = os.fork()
    if pid == 0:  # the child writes, as a worker does
        try:
            writer = Writer(board.mm, 1)
            writer.start("GET", "/from-child")
            writer.end(404)
            writer.publish()
            writer.exit_reason(scoreboard.EXIT_MAX_REQUESTS)
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    snap = board.read()
    assert snap.counters.classes[CLASSES.index("4xx")] == 1
    assert snap.exit_reason == scoreboard.EXIT_MAX_REQUESTS
    board.close()


def test_counters_fold() -> None:
    a, b = scoreboard.Counters(), scoreboard.Counters()
    b.classes[2], b.buckets[0], b.duration_sum = 3, 3, 0.01
    a.add(b)
    a.add(b)
    assert a.requests == 6 and a.buckets[0] == 6 and abs(a.duration_sum - 0.02) < 1e-9
