"""Forking one worker: its heartbeat channel, dump pipe and scoreboard, then fork().

Rules:
- Runs in the master; the master keeps the returned ends and registers them.
- With --preload a template process forks the worker instead (`template_worker`); the
  ends are made here all the same and the worker's side is sent to the template.
- Signals are blocked across fork(): until the child has reset its handlers, a signal sent
  to it would be written into the master's wakeup pipe and taken for the master's own.
- In the child, `worker.run()` never returns; `close_fds` is called there, so it lists
  the master's descriptors as they are at the moment of the fork.
- On failure (EAGAIN, ENOMEM) everything made for the worker is closed and OSError raised.
"""

from __future__ import annotations

import mmap
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import heartbeat, preload, worker
from .config import Config
from .scoreboard import Board, records_for
from .signals import TABLE
from .sockets import Listener


@dataclass
class Spawned:
    """The master's ends of a new worker."""

    pid: int
    channel: socket.socket
    dump_fd: int
    board: Board


def fork_worker(config: Config, slot: int, generation: int, listeners: list[Listener],
                app: Any, close_fds: Callable[[], list[int]],
                sibling_boards: list[mmap.mmap]) -> Spawned:
    """Fork a worker for `slot`; raises OSError if fork() fails."""
    master_end, worker_end = heartbeat.pair()
    dump_r, dump_w = heartbeat.dump_pipe()
    board = Board(records_for(config.threads))
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(TABLE))
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        _close(master_end, worker_end, dump_r, dump_w, board)
        raise
    if pid == 0:
        master_end.close()
        os.close(dump_r)
        ctx = worker.Context(
            config=config, slot=slot, generation=generation, listeners=listeners,
            channel=worker_end, dump_fd=dump_w, master_pid=os.getppid(),
            close_fds=close_fds(), app=app, unblock=old_mask, board=board.mm,
            unmap=sibling_boards)
        worker.run(ctx)  # never returns
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    worker_end.close()
    os.close(dump_w)
    return Spawned(pid, master_end, dump_r, board)


def template_worker(config: Config, tpl: preload.Template, slot: int) -> Spawned:
    """Have the template `tpl` fork a worker for `slot` (--preload, preload.py): the
    worker's ends travel to it over the template's socket. Raises OSError on failure."""
    master_end, worker_end = heartbeat.pair()
    dump_r, dump_w = heartbeat.dump_pipe()
    board = Board(records_for(config.threads), shareable=True)
    try:
        pid = preload.request_worker(tpl, slot, [worker_end.fileno(), dump_w, board.fd])
    except OSError:
        _close(master_end, worker_end, dump_r, dump_w, board)
        raise
    worker_end.close()
    os.close(dump_w)
    board.close_fd()
    return Spawned(pid, master_end, dump_r, board)


def _close(master_end: socket.socket, worker_end: socket.socket, dump_r: int, dump_w: int,
           board: Board) -> None:
    master_end.close()
    worker_end.close()
    os.close(dump_r)
    os.close(dump_w)
    board.close()
