"""The scoreboard: one small shared-memory page per worker that the worker writes and the
master reads, with no syscall and no message per request.

Rules:
- The master creates a worker's board (an anonymous MAP_SHARED `mmap`) just before it
  forks that worker; the child inherits the mapping. Only that worker writes it; only the
  master reads it. A worker unmaps the boards of its siblings right after fork.
- A board holds a small header (why the worker exits on its own, e.g. --max-requests)
  and one record per request thread (1 without --threads). Each record has exactly one
  writer thread, so no lock is needed: a thread finds its record through a thread-local
  index taken on first use.
- A record holds the request in progress (method, path truncated to PATH_MAX bytes,
  CLOCK_MONOTONIC start; start 0.0 means idle) and cumulative counters: requests by
  status class, per-bucket duration counts and the duration sum. "Requests served" is
  the sum of the class counters, so it is not stored twice.
- Seqlock: the writer makes the record's sequence word odd, writes, then makes it even.
  The master copies the record and accepts the copy only if the sequence was even and
  unchanged around it; it retries a bounded number of times and otherwise keeps the last
  good copy (a worker SIGKILLed or SIGSTOPped mid-write must not wedge the master).
  Ordering: each store is a separate C call, and x86-64 keeps stores in program order
  (TSO). On weakly ordered CPUs a rare torn read is still caught by the sequence check
  in practice but not guaranteed: the worst case is one wrong row in a status table.
  A request's start time alone (same method and path as the request before) and its
  clearing at the end are single aligned 8-byte stores, outside the sequence: a reader
  sees the old or the new value whole, and either is a consistent record.
- Counters are published in batches in a worker without threads: the loop calls
  `publish()` once per turn, after the requests that turn served, so a count may lag
  its response by one turn of the loop (microseconds; a request still running in the
  app holds back the counts of requests served before it in the same turn). The
  request in progress is never deferred: that is what a hung-worker report needs.
- Why not piggy-back stats on heartbeats (as the issue first proposed): beats are
  rate-limited, and a worker stuck in a request sends none, which is exactly when the
  master needs to know what it is serving. Shared memory is readable at any time.
- A request head the parser refuses (400, 408, 413, 414, 431, ...) never reaches the app:
  `rejected(status)` counts it in its class, with no duration in the histogram (so the
  histogram's count is the requests the app saw, and requests_total may be larger).
- Cost: `Writer.start` + `Writer.end` is two memoryview stores and a few list updates
  for a repeated method and path; `publish` is one `pack_into` per loop turn (measured
  in benchmarks/RESULTS.md, "Scoreboard and memory sampling").
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Request-duration histogram upper bounds in seconds (Prometheus' default buckets); one
# more counter holds what is above the last bound (+Inf).
BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Status classes, by index: no status (the client left before a response head), 1xx..5xx,
# and a plain TCP connection (--protocol tcp), which has no status at all.
CLASSES: tuple[str, ...] = ("none", "1xx", "2xx", "3xx", "4xx", "5xx", "tcp")
TCP = -1  # the status a TCP handler reports: counted in the "tcp" class
METHOD_MAX = 16
PATH_MAX = 200

# Board layout, in 8-byte words. Header: word 0 is the exit reason.
HEADER_WORDS = 8
EXIT_NONE, EXIT_MAX_REQUESTS = 0, 1
# Record: seq | started (double) | lengths | method (2 words) | path (26 words) |
# classes (7) | buckets (12) | duration sum (double) | padding to RECORD_WORDS.
_SEQ, _STARTED = 0, 1
_REQUEST = struct.Struct(f"=dQ{METHOD_MAX}s{(PATH_MAX + 7) // 8 * 8}s")  # from word 1
_CLASSES = 1 + _REQUEST.size // 8
_N_CLASSES = len(CLASSES)
_BUCKETS = _CLASSES + _N_CLASSES
_SUM = _BUCKETS + len(BOUNDS) + 1
RECORD_WORDS = 64
_COUNTERS = struct.Struct(f"={len(CLASSES)}Q{len(BOUNDS) + 1}Qd")  # from word _CLASSES
_RECORD = struct.Struct(f"=Q{_REQUEST.format[1:]}{_COUNTERS.format[1:]}")
assert _SUM + 1 <= RECORD_WORDS and _RECORD.size == (_SUM + 1) * 8
READ_RETRIES = 100


def records_for(threads: int) -> int:
    """Records in a worker's board: one per request thread, plus one for the main thread
    of a threaded worker (which refuses bad request heads itself, Writer.rejected)."""
    return threads + 1 if threads > 1 else 1


def board_size(slots: int) -> int:
    return (HEADER_WORDS + slots * RECORD_WORDS) * 8


def status_class(status: int) -> int:
    """Index into CLASSES for an HTTP status code (0 when no status was sent), or TCP."""
    if 100 <= status < 600:
        return status // 100
    return len(CLASSES) - 1 if status == TCP else 0


_CLASS_OF = {status: status_class(status) for status in (*range(100, 600), TCP)}
_monotonic = time.monotonic


# -- the worker side ------------------------------------------------------------------


def _nothing() -> None:
    pass


class _Record:
    """One request thread's record. Called in the worker, by that one thread only.

    Each store into the shared page is a memoryview item assignment (~0.1 us), so a
    request makes as few as it can. `start` stores only the start time when the method
    and path are those of the request before (one aligned 8-byte store, which a reader
    sees whole, old or new), `end` only clears it: the counters live in a Python list
    and reach the page, under the sequence word, in `publish`, which the owner calls
    when it has a moment (Writer)."""

    __slots__ = ("mm", "q", "d", "seq", "i_seq", "i_started", "offset", "i_classes",
                 "counts_offset", "started", "counts", "total", "method", "path", "dirty")

    def __init__(self, mm: mmap.mmap, q: memoryview, d: Any, index: int) -> None:
        base = HEADER_WORDS + index * RECORD_WORDS
        self.mm, self.q, self.d = mm, q, d
        self.i_seq = base + _SEQ
        self.seq = q[self.i_seq]  # ours alone from now on: keep it in a Python int
        self.i_started = base + _STARTED
        self.offset = (base + _STARTED) * 8
        self.i_classes = base + _CLASSES  # the class counters, then the buckets
        self.counts_offset = self.i_classes * 8
        self.counts: list[int] = q[self.i_classes:base + _SUM].tolist()
        self.total: float = d[base + _SUM]
        self.started = 0.0
        self.method: str | None = None  # what the record's method and path fields hold
        self.path: str | None = None
        self.dirty = False  # counters changed since the last publish()

    def start(self, method: str, path: str) -> float:
        """Record the request; returns its start (CLOCK_MONOTONIC), for the caller's beat."""
        self.started = now = _monotonic()
        if path == self.path and method == self.method:
            self.d[self.i_started] = now
            return now
        q = self.q
        q[self.i_seq] = seq = self.seq + 1  # odd: writing
        m = method.encode("latin-1", "replace")[:METHOD_MAX]
        p = path.encode("utf-8", "backslashreplace")[:PATH_MAX]
        _REQUEST.pack_into(self.mm, self.offset, now, len(m) | len(p) << 8, m, p)
        self.method, self.path = method, path
        q[self.i_seq] = self.seq = seq + 1  # even: consistent
        return now

    def rejected(self, status: int) -> None:
        """A request refused before the app saw it: counted, no duration observed."""
        self.counts[status_class(status)] += 1
        self.dirty = True

    def end(self, status: int) -> None:
        self.d[self.i_started] = 0.0  # idle, visible at once
        started = self.started
        duration = _monotonic() - started if started else 0.0
        self.started = 0.0
        counts = self.counts
        counts[_CLASS_OF.get(status, 0)] += 1
        counts[_N_CLASSES + bisect_left(BOUNDS, duration)] += 1
        self.total += duration
        self.dirty = True

    def publish(self) -> None:
        """Copy the counters to the page, if they changed (one pack_into, under seq)."""
        if self.dirty:
            self.dirty = False
            q = self.q
            q[self.i_seq] = seq = self.seq + 1
            _COUNTERS.pack_into(self.mm, self.counts_offset, *self.counts, self.total)
            q[self.i_seq] = self.seq = seq + 1


class Writer:
    """The worker's view of its board. `start(method, path)` as a request begins and
    `end(status)` when it is over, from whichever thread serves it. With one record (a
    worker without request threads), the counters reach the page when the worker calls
    `publish()`, which it does once per turn of its loop; with threads, at each end()."""

    def __init__(self, mm: mmap.mmap, slots: int) -> None:
        self.mm = mm
        self.q = memoryview(mm).cast("Q")
        self.d = memoryview(mm).cast("d")
        self.records = [_Record(mm, self.q, self.d, i) for i in range(slots)]
        self.publish: Callable[[], None] = _nothing
        self._local = threading.local()
        self._next = itertools.count()  # next() is atomic under the GIL
        self.start: Callable[[str, str], float] = self._start_threaded
        self.end: Callable[[int], None] = self._end_threaded
        self.rejected: Callable[[int], None] = self._rejected_threaded
        if slots == 1:  # the common case pays no thread-local lookup
            record = self.records[0]
            self.start, self.end, self.rejected = record.start, record.end, record.rejected
            self.publish = record.publish

    def _record(self) -> _Record | None:
        record: _Record | None = getattr(self._local, "record", None)
        if record is None:
            index = next(self._next)
            if index >= len(self.records):
                return None  # more threads than records: cannot happen with our pool
            record = self._local.record = self.records[index]
        return record

    def _start_threaded(self, method: str, path: str) -> float:
        record = self._record()
        return record.start(method, path) if record is not None else time.monotonic()

    def _end_threaded(self, status: int) -> None:
        record = self._record()
        if record is not None:
            record.end(status)
            record.publish()

    def _rejected_threaded(self, status: int) -> None:
        record = self._record()
        if record is not None:
            record.rejected(status)
            record.publish()

    def exit_reason(self, reason: int) -> None:
        """Tell the master why this worker is about to exit on its own."""
        self.q[0] = reason

    def close(self) -> None:
        """Release the views, so the mmap can be closed (a worker never needs to)."""
        self.q.release()
        self.d.release()


# -- the master side ------------------------------------------------------------------


@dataclass
class Current:
    """A request in progress."""

    method: str
    path: str
    started: float  # CLOCK_MONOTONIC, comparable with the master's time.monotonic()


@dataclass
class Counters:
    """Cumulative request counters (one worker, or folded totals)."""

    classes: list[int] = field(default_factory=lambda: [0] * len(CLASSES))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    duration_sum: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.classes)

    def add(self, other: Counters) -> None:
        self.classes = [a + b for a, b in zip(self.classes, other.classes, strict=True)]
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.duration_sum += other.duration_sum


@dataclass
class Snapshot:
    counters: Counters
    current: list[Current]
    exit_reason: int


def _decode(record: tuple) -> tuple[Current | None, list[int], list[int], float]:
    started, lengths, method, path = record[1:5]
    n = len(CLASSES)
    classes = list(record[5:5 + n])
    buckets = list(record[5 + n:5 + n + len(BOUNDS) + 1])
    current = None
    if started:
        m_len, p_len = lengths & 0xFF, min(lengths >> 8, PATH_MAX)
        current = Current(method[:m_len].decode("latin-1"),
                          path[:p_len].decode("utf-8", "replace"), started)
    return current, classes, buckets, record[-1]


class Board:
    """The master's handle on one worker's board. Called in the master only."""

    def __init__(self, slots: int, shareable: bool = False) -> None:
        self.slots = slots
        self.fd = -1
        if shareable:  # for a worker that a template forks (template.py): sent as an fd
            self.fd = os.memfd_create("prefork-board", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, board_size(slots))
            self.mm = mmap.mmap(self.fd, board_size(slots))
        else:  # inherited by a worker the master forks itself
            self.mm = mmap.mmap(-1, board_size(slots))  # MAP_SHARED | MAP_ANONYMOUS
        self.last: list[tuple] = [_RECORD.unpack_from(self.mm, self._offset(i))
                                  for i in range(slots)]
        self.torn = 0  # reads that gave up (the last good copy was used)

    @staticmethod
    def _offset(index: int) -> int:
        return (HEADER_WORDS + index * RECORD_WORDS) * 8

    def _read_record(self, index: int) -> tuple:
        mm, offset = self.mm, self._offset(index)
        for _ in range(READ_RETRIES):
            record = _RECORD.unpack_from(mm, offset)
            seq = record[0]
            if not seq & 1 and struct.unpack_from("=Q", mm, offset)[0] == seq:
                self.last[index] = record
                return record
        self.torn += 1
        return self.last[index]

    def read(self) -> Snapshot:
        counters = Counters()
        current: list[Current] = []
        for i in range(self.slots):
            now, classes, buckets, total = _decode(self._read_record(i))
            counters.add(Counters(classes, buckets, total))
            if now is not None:
                current.append(now)
        return Snapshot(counters, current, struct.unpack_from("=Q", self.mm, 0)[0])

    def close_fd(self) -> None:
        """Once the worker has its copy, the mapping is all the master needs."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.close_fd()
        self.mm.close()
