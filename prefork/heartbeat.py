"""The per-worker channel between master and worker: beats one way, EOF both ways.

Rules:
- One AF_UNIX SOCK_SEQPACKET socketpair per worker: message boundaries for free, and
  the kernel tells each side when the other is gone (EOF), with no files on disk (gunicorn's
  temp-file heartbeat stalls on slow disks).
- Worker -> master: READY once after the app is loaded, then BEAT messages that carry the
  worker's CLOCK_MONOTONIC time (system-wide on Linux, clock_gettime(2)), so a master that
  was stalled reads beats with the time they were sent, not the time it woke up.
- The worker's end is non-blocking: a stalled master must never stall a worker; a lost
  beat is harmless because the next one carries a newer time.
- Master -> worker: nothing is sent; EOF on the worker's end means the master is gone.
- A second, plain pipe per worker carries faulthandler's stack dump (C-level writes that
  work even when the GIL is held), which the master logs with the worker's pid and slot.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

READY = b"R"
BEAT = b"B"
ERROR = b"E"  # followed by UTF-8 text: why the worker is about to exit (e.g. the import error)
_BEAT = struct.Struct("=cdQ")  # kind, monotonic time of the beat, requests served
MAX_ERROR = 2048  # bytes of error text sent; SEQPACKET messages stay small


@dataclass
class Beat:
    kind: bytes
    sent: float
    requests: int
    text: str = ""


def pair() -> tuple[socket.socket, socket.socket]:
    """(master end, worker end), both close-on-exec."""
    master, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    master.setblocking(False)
    worker.setblocking(False)
    return master, worker


def read_messages(sock: socket.socket) -> tuple[list[Beat], bool]:
    """Master side: every queued message, and whether EOF was seen (the worker is gone)."""
    out: list[Beat] = []
    while True:
        try:
            data = sock.recv(1 + MAX_ERROR)
        except BlockingIOError:
            return out, False
        except ConnectionResetError:
            return out, True
        if not data:
            return out, True
        if data[:1] == ERROR:
            out.append(Beat(ERROR, 0.0, 0, data[1:].decode("utf-8", "replace")))
        elif len(data) == _BEAT.size:
            kind, sent, requests = _BEAT.unpack(data)
            out.append(Beat(kind, sent, requests))


class WorkerBeat:
    """Worker side of the channel. Called in the worker only."""

    def __init__(self, sock: socket.socket, interval: float) -> None:
        self.sock = sock
        self.interval = interval
        self.last = 0.0
        self.requests = 0

    def _send(self, kind: bytes, now: float) -> None:
        try:
            self.sock.send(_BEAT.pack(kind, now, self.requests))
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass  # a full buffer means a stalled master; a gone one is seen as EOF
        self.last = now

    def ready(self) -> None:
        self._send(READY, time.monotonic())

    def error(self, text: str) -> None:
        """Tell the master why we are about to exit (it shows in its log and STATUS=)."""
        try:
            self.sock.send(ERROR + text.encode("utf-8", "replace")[:MAX_ERROR])
        except OSError:
            pass  # the master is gone or stalled: our exit code still tells the story

    def beat(self, now: float, requests: int) -> None:
        """Send a beat (with the requests served so far) unless one went out less than
        `interval` ago."""
        self.requests = requests
        if now - self.last >= self.interval:
            self._send(BEAT, now)

    def master_gone(self) -> bool:
        """Call when the channel is readable: True at EOF (the master died)."""
        try:
            return self.sock.recv(64) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True


def dump_pipe() -> tuple[int, int]:
    """(master read end, worker write end) for faulthandler output."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, w


def drain(fd: int) -> bytes:
    """Read whatever is buffered on a non-blocking pipe, without waiting."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)
