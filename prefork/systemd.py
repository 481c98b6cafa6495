"""systemd's two protocols, without libsystemd: socket activation and sd_notify.

Rules:
- Called in the master only. Notifications come from the master's pid, the one systemd
  accepts under NotifyAccess=main (sd_notify(3)).
- `listen_fds()` honours LISTEN_FDS only when LISTEN_PID is our pid (the variables leak
  into children otherwise), and unsets the three variables in every case so workers and
  apps never see them (sd_listen_fds(3), unset_environment).
- `Watchdog.from_environ()` and the master's `Notifier(os.environ.pop("NOTIFY_SOCKET"))`
  take NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID out of the environment before the first
  fork: a worker never inherits the duty to ping (sd_watchdog_enabled(3)).
- `notify()` never raises: a missing or dead notify socket must not stop the server.
- Nothing here sleeps, forks or runs a thread: the master's loop asks `Watchdog` when its
  next deadline is and calls it back; a wedged loop therefore stops the pings by itself.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable, MutableMapping

from .log import logger
from .policy import WorkerRecord
from .sockets import Listener, adopt_fd

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START

# The health rule's floor: a worker beats at least every min(--timeout/4, 1 s) while idle
# (worker.py), so three seconds of silence is three missed beats, never scheduling noise.
BEAT_WINDOW_FLOOR = 3.0
# What EXTEND_TIMEOUT_USEC asks for beyond prefork's own deadline for a phase: time to
# SIGKILL, reap and report after that deadline.
EXTEND_MARGIN = 5.0


def listen_fds() -> list[Listener]:
    """Adopt the sockets systemd (or a test) passed as fds 3.. with LISTEN_FDS/LISTEN_PID."""
    # Unset whether or not they are ours, as sd_listen_fds(unset_environment=1) does.
    pid = os.environ.pop("LISTEN_PID", "")
    count = os.environ.pop("LISTEN_FDS", "")
    names = os.environ.pop("LISTEN_FDNAMES", "")
    if not (pid.isdigit() and int(pid) == os.getpid() and count.isdigit()):
        return []
    labels = names.split(":") if names else []
    listeners = []
    for i in range(int(count)):
        fd = LISTEN_FDS_START + i
        label = f"systemd:{labels[i]}" if i < len(labels) and labels[i] else f"systemd:fd{fd}"
        sock = adopt_fd(fd, label)
        # systemd passes blocking, inheritable fds; workers want them non-blocking.
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        listeners.append(Listener(sock, label, inherited=True))
    return listeners


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET (path, or @abstract)."""

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address if address and not address.startswith("vsock:") else None
        self.status_sent = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send KEY=VALUE lines as one datagram; False if not sent."""
        if self.address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self.address)
        except OSError:
            return False
        return True

    def status(self, text: str, *assignments: str) -> None:
        """STATUS=text, with `assignments` in the same datagram (READY=1, STOPPING=1).

        Alone, it is sent only when the text changed, so the loop may call it every turn
        to keep `systemctl status` current.
        """
        if assignments or text != self.status_sent:
            self.status_sent = text
            self.notify(*assignments, f"STATUS={text}")

    def main_pid(self, pid: int) -> bool:
        """MAINPID=pid: a new master (binary upgrade) is now the process to supervise.

        Only the current main process may say so under NotifyAccess=main, so the old
        master sends it before it exits.
        """
        return self.notify(f"MAINPID={pid}")


def status_line(state: str, ready: int, target: int, generation: int, serving: int,
                workers_left: int, problems: Iterable[str] = ()) -> str:
    """The STATUS= text: problems first (they matter most), then the worker counts.

    running:   "4/4 workers ready, generation 3"
    booting:   "booting: 1/4 workers ready, generation 1"
    reloading: "reloading: 2/4 workers ready, generation 4; generation 3 serving"
    stopping:  "stopping: 3 workers left"
    a problem: "reload failed: new worker died ... (exit code 4); 4/4 workers ready, ..."
    """
    counts = f"{ready}/{target} workers ready, generation {generation}"
    text = {"booting": f"booting: {counts}",
            "reloading": f"reloading: {counts}; generation {serving} serving",
            "stopping": f"stopping: {workers_left} workers left"}.get(state, counts)
    return "; ".join([*(p for p in problems if p), text])


class Watchdog:
    """WATCHDOG=1 pings, sent from the master loop while the service is healthy.

    The health rule, checked every `interval` (= WATCHDOG_USEC / 2) from the loop itself:
      1. the master loop is turning: only the loop calls `tick()`, so a master that is
         stopped, wedged or stuck in a syscall sends nothing; and
      2. at least one worker that has reported ready and is not retiring has beaten within
         `window` = max(WATCHDOG_USEC / 2, 3 s). Idle workers beat at least every second,
         and every request starts with a beat, so a healthy server always qualifies; when
         every worker is stopped, hung, or busy in one request for longer than the window,
         the pings stop and systemd acts WATCHDOG_USEC after the last one (the service is
         SIGABRTed and, with Restart=on-failure, restarted).
    When the rule fails the next check is one interval later; pings resume from then on.
    Only the RUNNING and RELOADING states ping: systemd arms the watchdog once READY=1
    arrived and disarms it when STOPPING=1 does (systemd.service(5), WatchdogSec=).
    """

    def __init__(self, usec: int, now: float) -> None:
        self.interval = usec / 2_000_000
        self.window = max(self.interval, BEAT_WINDOW_FLOOR)
        self.last_ping = now
        self.next_check = now + self.interval
        self.problem = ""  # why the last check withheld the ping; "" while healthy

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str], pid: int,
                     now: float) -> Watchdog | None:
        """Take WATCHDOG_USEC/WATCHDOG_PID out of `environ`; a Watchdog if they are ours."""
        usec = environ.pop("WATCHDOG_USEC", "")
        owner = environ.pop("WATCHDOG_PID", "")
        if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
            return None
        if owner and not (owner.isascii() and owner.isdigit() and int(owner) == pid):
            return None  # meant for another process (sd_watchdog_enabled(3))
        return cls(int(usec), now)

    def next_deadline(self) -> float:
        return self.next_check

    def due(self, now: float) -> bool:
        return now >= self.next_check

    def healthy(self, records: Iterable[WorkerRecord], now: float) -> bool:
        """Rule 2: some ready, non-retiring worker has beaten within `window`."""
        return any(r.ready and not r.retiring and not r.gone and now - r.last_beat <= self.window
                   for r in records)

    def tick(self, records: Iterable[WorkerRecord], now: float) -> bool:
        """Called from the master loop; True when WATCHDOG=1 is to be sent now."""
        if not self.due(now):
            return False
        self.next_check = now + self.interval
        if self.healthy(records, now):
            if self.problem:
                logger.info("watchdog: a worker beat again; pings resumed")
            self.last_ping, self.problem = now, ""
            return True
        if not self.problem:
            self.problem = f"no worker has beaten within {self.window:g} s, pings withheld"
            logger.warning("watchdog: %s", self.problem)
        return False


class TimeoutExtender:
    """EXTEND_TIMEOUT_USEC for a phase whose end prefork bounds by its own deadlines.

    systemd starts, reloads and stops a service against TimeoutStartSec=/TimeoutStopSec=.
    When prefork knows a phase may legitimately take longer (a boot whose workers each
    get --timeout to import the app, a graceful stop that waits --graceful-timeout), it
    asks for that deadline plus a margin. systemd only ever lengthens a timeout this way
    (sd_notify(3)), and a phase that overruns prefork's own deadline is still ended by
    systemd, because we never ask again for the same phase unless its deadline moved.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.until = 0.0

    def cover(self, until: float, now: float, new_phase: bool = False) -> None:
        """Ask for time until `until` (+ margin), if not asked already in this phase.

        Within a phase, a deadline that moved by less than a second is not worth another
        datagram: the margin covers it.
        """
        if not new_phase and until < self.until + 1.0:
            return
        self.until = until
        usec = math.ceil((until - now + EXTEND_MARGIN) * 1_000_000)
        self.notifier.notify(f"EXTEND_TIMEOUT_USEC={max(usec, 0)}")
