"""`--metrics-bind ADDR`: GET /metrics in the Prometheus text exposition format 0.0.4,
served by the master itself and aggregated over every worker.

Rules:
- Called in the master only, from its selector loop (endpoint.py): non-blocking, one
  request per connection, always `Connection: close`. The request head is read with the
  sans-I/O parser of the workers (http11.RequestParser). GET or HEAD /metrics is answered;
  anything else is a 404.
- Numbers come from the scoreboards (scoreboard.py), read at scrape time, plus counters
  the master folded in from workers that exited, so a counter never goes backwards
  (no prometheus_client multiprocess directory).
- Listen backlog (connections the kernel completed and no worker has accepted yet): for
  TCP listeners, getsockopt(TCP_INFO) on the listening socket, where Linux reports the
  accept-queue length in tcpi_unacked and the queue limit in tcpi_sacked (tcp_get_info()
  in net/ipv4/tcp.c; `ss -lt` shows the same numbers as Recv-Q/Send-Q). One syscall, and
  no scan of /proc/net/tcp, which grows with every connection on the host. Unix sockets
  have no such option (only the sock_diag netlink interface reports their queue), so no
  series is exported for them.
"""

from __future__ import annotations

import selectors
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .endpoint import Endpoint
from .http11 import NEED_DATA, ProtocolError, Request, RequestParser
from .scoreboard import BOUNDS, CLASSES, Counters

MAX_REQUEST = 16384
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESTART_REASONS = ("exit", "signal", "timeout", "memory", "max-requests")
WORKER_STATES = ("booting", "ready", "busy", "draining")
_TCP_INFO_QUEUE = struct.Struct("=8x4x4x4x4xII")  # u8 x8, rto, ato, snd_mss, rcv_mss,
#                                                    then tcpi_unacked, tcpi_sacked


@dataclass
class WorkerMemory:
    slot: int
    pid: int
    pss: int
    rss: int


@dataclass
class Sample:
    """Everything one scrape exports (collected by monitor.py)."""

    counters: Counters
    in_flight: int
    states: dict[str, int]
    restarts: dict[str, int]
    memory: list[WorkerMemory]
    backlog: list[tuple[str, int, int]]  # listener, queued, limit
    generation: int
    target: int
    uptime: float
    extra: dict[str, float] = field(default_factory=dict)


def listen_backlog(sock: socket.socket) -> tuple[int, int] | None:
    """(queued, limit) of a listening TCP socket, or None where Linux does not tell."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCP_INFO_QUEUE.size:
        return None
    queued, limit = _TCP_INFO_QUEUE.unpack_from(info)
    return int(queued), int(limit)


def _label(value: object) -> str:
    return str(value).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(sample: Sample) -> str:
    """The exposition text (format 0.0.4)."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str,
               rows: list[tuple[str, dict[str, object], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in rows:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{suffix}{{{text}}} {_number(value)}" if text
                       else f"{name}{suffix} {_number(value)}")

    c = sample.counters
    family("prefork_requests_total", "counter",
           "Requests by status class, including heads refused before the app (400, 408, "
           "...); tcp: TCP connections; none: the client left before a status was sent.",
           [("", {"status": name}, n) for name, n in zip(CLASSES, c.classes, strict=True)])
    rows: list[tuple[str, dict[str, object], float]] = []
    running = 0
    for bound, n in zip((*map(repr, BOUNDS), "+Inf"), c.buckets, strict=True):
        running += n
        rows.append(("_bucket", {"le": bound}, running))
    rows += [("_sum", {}, float(c.duration_sum)), ("_count", {}, running)]
    family("prefork_request_duration_seconds", "histogram",
           "Time from a complete request head to the end of the response.", rows)
    family("prefork_requests_in_flight", "gauge", "Requests being served now.",
           [("", {}, sample.in_flight)])
    family("prefork_workers", "gauge", "Worker processes by state.",
           [("", {"state": s}, sample.states.get(s, 0)) for s in WORKER_STATES])
    family("prefork_workers_target", "gauge", "Workers the master keeps running.",
           [("", {}, sample.target)])
    family("prefork_generation", "gauge", "Current worker generation (one more per reload).",
           [("", {}, sample.generation)])
    family("prefork_worker_restarts_total", "counter",
           "Workers replaced, by reason (reloads, scaling and stops are not restarts).",
           [("", {"reason": r}, sample.restarts.get(r, 0)) for r in RESTART_REASONS])
    family("prefork_worker_memory_bytes", "gauge",
           "Memory of each worker: pss (proportional set size: shared pages divided "
           "among their sharers) and rss.",
           [("", {"slot": m.slot, "pid": m.pid, "kind": kind}, value)
            for m in sample.memory for kind, value in (("pss", m.pss), ("rss", m.rss))])
    family("prefork_listen_backlog", "gauge",
           "Connections waiting in a TCP listener's accept queue (not exported for unix "
           "sockets: Linux does not report it through a socket option).",
           [("", {"listener": name}, queued) for name, queued, _ in sample.backlog])
    family("prefork_listen_backlog_limit", "gauge", "The accept queue's limit.",
           [("", {"listener": name}, limit) for name, _, limit in sample.backlog])
    family("prefork_master_uptime_seconds", "gauge", "Seconds since the master started.",
           [("", {}, float(sample.uptime))])
    return "\n".join(out) + "\n"


def _response(status: str, body: bytes, head_only: bool = False,
              content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


def _answer(collect: Callable[[], Sample]) -> Callable[[bytes, bool], bytes | None]:
    def answer(data: bytes, eof: bool) -> bytes | None:
        parser = RequestParser()
        parser.feed(data)
        if eof:
            parser.feed(b"")
        try:
            event = parser.next_event()
        except ProtocolError as exc:
            return _response(f"{exc.status} Bad Request", f"{exc.reason}\n".encode())
        if event is NEED_DATA:
            return None
        if not isinstance(event, Request):
            return _response("400 Bad Request", b"no request\n")
        if event.path != "/metrics" or event.method not in ("GET", "HEAD"):
            return _response("404 Not Found", b"only GET /metrics is served here\n")
        body = render(collect()).encode()
        return _response("200 OK", body, event.method == "HEAD", CONTENT_TYPE)

    return answer


def open_endpoint(address: str, umask: int, sel: selectors.BaseSelector,
                  collect: Callable[[], Sample]) -> Endpoint:
    """Bind --metrics-bind (a unix socket gets the server's umask). Raises BindError."""
    return Endpoint(address, 0o666 & ~umask, sel, _answer(collect), MAX_REQUEST, "metrics")
