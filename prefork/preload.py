"""--preload, the master's side: template processes that import the app and fork workers.

Why not preload in the master, like gunicorn: a process cannot un-import modules, so a
master holding the app can only serve new code by restarting itself, listeners and all.
Here the master never imports the app. For each generation it forks a template
(template.py) that does, then `gc.freeze()`s, and forks that generation's workers, which
share its pages copy-on-write. HUP forks a new template, which reads the code on disk
again; the old one exits once its generation has been replaced, or stays if the reload
fails.

Workers must still be the master's own children: it reaps them, signals them, and they
watch it with PDEATHSIG. So the master becomes a child subreaper (prctl(2),
PR_SET_CHILD_SUBREAPER) and the template double-forks: the worker is re-parented to the
master as soon as the intermediate child exits.

One SOCK_SEQPACKET socketpair links the master and a template, one message per datagram:
    template -> master   b"ready" | b"error <reason>" | b"spawned <pid>" | b"failed <why>"
    master -> template   b"spawn <slot>" + SCM_RIGHTS [heartbeat end, dump pipe, board]
The master asks for one worker at a time and waits for the answer (`request_worker`):
two fork()s of the template take milliseconds, like the fork the master does itself
without --preload, and a template that does not answer within SPAWN_WAIT is killed.

`Templates` keeps them for the master: what to start, read, retire and kill, and what a
template's exit means; the master decides what a failed boot or reload does.
"""

from __future__ import annotations

import mmap
import os
import select
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import log, policy, process, template
from .config import Config
from .policy import SlotBackoff
from .signals import TABLE
from .sockets import Listener

logger = log.logger

# Seconds the master waits for a template to fork a worker: two fork()s take milliseconds,
# even of a large app; a template that takes this long is stopped or wedged, and the
# master's loop must not stay blocked on it.
SPAWN_WAIT = 2.0
RETIRE_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for a template told to go


@dataclass(eq=False)
class Template:
    """The master's handle on one template process."""

    pid: int
    sock: socket.socket  # master end
    generation: int
    born: float
    ready: bool = False
    ready_at: float = 0.0
    error: str = ""  # why the app would not load, as the template said (or a timeout)
    retiring: bool = False  # told to go, or given up on: its exit is expected
    kill_at: float | None = None  # boot deadline, then the retire deadline
    gone: bool = False  # EOF seen on sock


def start(config: Config, generation: int, listeners: list[Listener],
          close_fds: Callable[[], list[int]], unmap: list[mmap.mmap], now: float) -> Template:
    """Fork the template of `generation`; raises OSError if fork() fails."""
    master_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(TABLE))
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        master_end.close()
        template_end.close()
        raise
    if pid == 0:
        master_end.close()
        template.run(config, generation, listeners, template_end, close_fds(), unmap,
                     old_mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    template_end.close()
    master_end.setblocking(False)
    return Template(pid, master_end, generation, now)


def request_worker(tpl: Template, slot: int, fds: list[int]) -> int:
    """Ask a ready template for a worker in `slot` and wait for its pid. Raises OSError
    (TimeoutError if it does not answer within SPAWN_WAIT: the caller kills it)."""
    socket.send_fds(tpl.sock, [b"spawn %d" % slot], fds)
    deadline = time.monotonic() + SPAWN_WAIT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"template pid={tpl.pid} did not fork in {SPAWN_WAIT:g} s")
        readable, _, _ = select.select([tpl.sock], [], [], remaining)
        if not readable:
            continue
        try:
            reply = tpl.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            continue
        if not reply:
            raise ConnectionError(f"template pid={tpl.pid} exited")
        kind, _, rest = reply.partition(b" ")
        if kind == b"spawned":
            return int(rest)
        if kind == b"failed":
            raise OSError(rest.decode("utf-8", "replace"))
        raise OSError(f"template pid={tpl.pid} said {reply[:80]!r}")


class Templates:
    """The master's templates: one per live generation (two while a reload runs)."""

    def __init__(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        self.all: list[Template] = []
        self.backoff = SlotBackoff()  # for a template that keeps dying young
        self.subreaper = False

    def current(self, generation: int) -> Template | None:
        return next((t for t in self.all if t.generation == generation
                     and not t.retiring and not t.gone), None)

    def find(self, pid: int) -> Template | None:
        return next((t for t in self.all if t.pid == pid), None)

    def start(self, config: Config, generation: int, listeners: list[Listener],
              close_fds: Callable[[], list[int]], unmap: list[mmap.mmap],
              now: float) -> Template | None:
        """Fork the template of `generation`, with --timeout to import the app. None if
        fork() failed (retried after a backoff). Raises RuntimeError without prctl()."""
        if not self.subreaper:
            if not process.become_subreaper():
                raise RuntimeError("--preload needs prctl(PR_SET_CHILD_SUBREAPER) "
                                   "(Linux 3.4 or later)")
            self.subreaper = True
        try:
            tpl = start(config, generation, listeners, close_fds, unmap, now)
        except OSError as exc:
            delay = max(policy.next_backoff(self.backoff, now), policy.BACKOFF_FIRST)
            self.backoff.not_before = now + delay
            logger.error("fork(): %s; retrying the template in %.1f s", exc.strerror, delay)
            return None
        self.all.append(tpl)
        self.sel.register(tpl.sock, selectors.EVENT_READ, tpl)
        if config.timeout:  # its import gets what a worker's own import gets
            tpl.kill_at = now + config.timeout
        logger.info("booting template pid=%d generation=%d (it imports the app)", tpl.pid,
                    generation)
        return tpl

    def may_start(self, now: float) -> bool:
        return now >= self.backoff.not_before

    def read(self, tpl: Template, now: float) -> None:
        """What a template said: ready, or why it could not import the app."""
        messages, eof = _read_all(tpl.sock)
        for message in messages:
            kind, _, rest = message.partition(b" ")
            if kind == b"ready" and not tpl.ready:
                tpl.ready, tpl.ready_at = True, now
                if not tpl.retiring:
                    tpl.kill_at = None
                logger.info("template ready pid=%d generation=%d", tpl.pid, tpl.generation)
            elif kind == b"error":
                tpl.error = rest.decode("utf-8", "replace")
            else:  # a late answer to a request given up on
                logger.warning("template pid=%d said %r", tpl.pid, message[:80])
        if eof:
            self._forget_socket(tpl)

    def exited(self, tpl: Template, status: int, now: float, generation: int,
               stopping: bool) -> str | None:
        """Forget a reaped template. Returns why it failed if it died before it was
        ready and unasked (the master fails the boot or the reload), else None."""
        self.all.remove(tpl)
        if not tpl.gone:
            self.read(tpl, now)  # its last words (an import error) up to the EOF
            self._forget_socket(tpl)  # no EOF: a child it forked holds its socket
        how = policy.describe_status(status)
        if tpl.retiring or stopping:
            logger.info("template exited pid=%d generation=%d %s", tpl.pid, tpl.generation,
                        how)
            return None
        said = f": {tpl.error}" if tpl.error else ""
        logger.warning("template exited pid=%d generation=%d %s%s", tpl.pid, tpl.generation,
                       how, said)
        if not tpl.ready:
            return f"the template died before it was ready ({how}){said}"
        if tpl.generation == generation:
            # Its workers keep serving; a new template (which imports the code on disk
            # now) forks their replacements. Dying young again and again backs off.
            if now - tpl.ready_at >= policy.YOUNG:
                self.backoff = SlotBackoff()
            delay = policy.next_backoff(self.backoff, now)
            logger.error("the template of generation %d is gone; a new one in %.1f s",
                         tpl.generation, delay)
        return None

    def retire(self, now: float, keep: Callable[[Template], bool] = lambda t: False) -> None:
        """Tell every template but those `keep` accepts to go. A template holds no
        request: SIGTERM's default action ends it at once."""
        for tpl in self.all:
            if not tpl.retiring and not keep(tpl):
                tpl.retiring = True
                tpl.kill_at = now + RETIRE_GRACE
                _kill(tpl.pid, signal.SIGTERM)

    def kill(self, tpl: Template, why: str) -> None:
        """Give up on a template (it did not answer): its exit is then expected."""
        logger.error("killing template pid=%d generation=%d: %s", tpl.pid, tpl.generation, why)
        tpl.retiring, tpl.kill_at = True, None
        _kill(tpl.pid, signal.SIGKILL)

    def check(self, now: float, timeout: float) -> None:
        """SIGKILL the templates past their deadline: an import slower than --timeout
        (its exit then fails the boot or reload), or a retiring one that did not exit."""
        for tpl in self.all:
            if tpl.kill_at is not None and now >= tpl.kill_at:
                tpl.kill_at = None
                if not tpl.retiring:
                    tpl.error = tpl.error or (f"the app did not load within --timeout "
                                              f"({timeout:g} s)")
                logger.error("killing template pid=%d generation=%d: %s", tpl.pid,
                             tpl.generation, "did not exit" if tpl.retiring else tpl.error)
                _kill(tpl.pid, signal.SIGKILL)

    def deadline(self, now: float) -> float:
        deadlines = [t.kill_at for t in self.all if t.kill_at is not None]
        if self.backoff.not_before > now:
            deadlines.append(self.backoff.not_before)
        return min(deadlines, default=now + 3600.0)

    def fds(self) -> list[int]:
        """The master's ends, which any process it forks must close."""
        return [t.sock.fileno() for t in self.all if not t.gone]

    def _forget_socket(self, tpl: Template) -> None:
        if not tpl.gone:
            tpl.gone = True
            self.sel.unregister(tpl.sock)
            tpl.sock.close()


def _read_all(sock: socket.socket) -> tuple[list[bytes], bool]:
    messages: list[bytes] = []
    while True:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return messages, False
        except OSError:
            return messages, True
        if not data:
            return messages, True
        messages.append(data)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone; the reap will tell
