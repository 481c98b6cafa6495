"""Forking one worker: its heartbeat channel, dump pipe and scoreboard, then fork().

Rules:
- Runs in the master; the master keeps the returned ends and registers them.
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

from . import heartbeat, worker
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
        master_end.close()
        worker_end.close()
        os.close(dump_r)
        os.close(dump_w)
        board.close()
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
