"""The one signal table, and the self-pipe that turns signals into loop wake-ups.

Rules:
- `TABLE` maps each signal the master handles to an `Action`; dispatch in master.py,
  the signal table in `--help` and the README are all read from it.
- A handler does nothing: `signal.set_wakeup_fd` writes the signal number into a
  non-blocking pipe, and the master loop reads the numbers and acts (principle 1 of the
  guide: no logging, locking or forking inside a handler).
- In a child, `reset_in_child()` puts every disposition back to default before the
  worker installs its own.
"""

from __future__ import annotations

import enum
import os
import signal
from dataclasses import dataclass


class Action(enum.Enum):
    RELOAD = "reload"
    GRACEFUL_STOP = "graceful_stop"
    QUICK_STOP = "quick_stop"
    INCREMENT = "increment"
    DECREMENT = "decrement"
    REOPEN_LOGS = "reopen_logs"
    REAP = "reap"
    UPGRADE = "upgrade"


@dataclass(frozen=True)
class Entry:
    action: Action
    help: str


TABLE: dict[signal.Signals, Entry] = {
    signal.SIGHUP: Entry(Action.RELOAD,
                         "reload: re-read config, start a new generation of workers, stop the "
                         "old one once the new one is ready (a failed reload keeps the old)"),
    signal.SIGTERM: Entry(Action.GRACEFUL_STOP,
                          "graceful stop: finish in-flight requests within --graceful-timeout, "
                          "then exit 0"),
    signal.SIGINT: Entry(Action.QUICK_STOP, "quick stop: workers exit at once, master exits 0"),
    signal.SIGQUIT: Entry(Action.QUICK_STOP, "quick stop (same as INT)"),
    signal.SIGTTIN: Entry(Action.INCREMENT, "one worker more"),
    signal.SIGTTOU: Entry(Action.DECREMENT, "one worker fewer (never below 1; the oldest retires)"),
    signal.SIGUSR1: Entry(Action.REOPEN_LOGS, "reopen log files (master and workers)"),
    signal.SIGUSR2: Entry(Action.UPGRADE,
                          "binary upgrade: start a new master from the code on disk with the "
                          "same listeners; once its workers are ready this one drains and exits"),
    signal.SIGCHLD: Entry(Action.REAP, "a child exited: reap it (internal)"),
}

# Signals aimed at a worker directly, for the docs (worker.py installs the handlers).
WORKER_SIGNALS: dict[signal.Signals, str] = {
    signal.SIGTERM: "graceful exit: finish the current request, then exit",
    signal.SIGQUIT: "quick exit",
    signal.SIGINT: "quick exit",
    signal.SIGUSR1: "reopen log files",
    signal.SIGUSR2: "dump every thread's stack to the master (faulthandler)",
}

# The worker's stack-dump signal: faulthandler cannot register SIGABRT (it owns it for
# fatal errors), so the master asks with USR2.
DUMP_SIGNAL = signal.SIGUSR2


def _wake(signum: int, frame: object) -> None:
    """Deliberately empty: set_wakeup_fd already wrote `signum` into the pipe."""


class Wakeup:
    """A non-blocking pipe that receives signal numbers (the master's self-pipe)."""

    def __init__(self, signals: list[signal.Signals]) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        # warn_on_full_buffer=False: a full pipe already guarantees a wake-up.
        signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, _wake)

    def read(self) -> list[signal.Signals]:
        """Every signal number queued since the last read, in arrival order."""
        out: list[signal.Signals] = []
        while True:
            try:
                data = os.read(self.rfd, 256)
            except BlockingIOError:
                return out
            if not data:
                return out
            out.extend(signal.Signals(b) for b in data)

    def fds(self) -> tuple[int, int]:
        return self.rfd, self.wfd

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.rfd)
        os.close(self.wfd)


def reset_in_child() -> None:
    """Called in the worker right after fork: default dispositions, no wakeup fd."""
    signal.set_wakeup_fd(-1)
    for sig in TABLE:
        signal.signal(sig, signal.SIG_DFL)
