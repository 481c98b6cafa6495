"""What runs in a worker process, from the moment after fork() to os._exit().

Rules:
- Called in the child only. It never returns: `run()` ends in os._exit(), so the child
  can never fall back into the master's loop.
- First close every descriptor the master owns (other workers' channel ends, the master's
  self-pipe and selector): a sibling holding our master's end open would hide its death.
- One epoll set holds the listeners, the heartbeat channel, the worker's own signal pipe
  and every connection waiting for bytes; the app is called only once a whole request
  head is in hand, so an idle or trickling client never pins the worker.
- The worker beats at least every `beat_interval` while idle and at the start of each
  request; a request that runs past --timeout stops the beats and the master acts.
"""

from __future__ import annotations

import errno
import faulthandler
import itertools
import math
import mmap
import os
import random
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from . import log, process, proctitle
from .app import failure_reason, load
from .config import Config
from .errors import ExitCode
from .heartbeat import WorkerBeat
from .policy import RELOAD_EXIT
from .reloader import Reloader
from .scoreboard import EXIT_MAX_REQUESTS, Writer, board_size, records_for
from .signals import DUMP_SIGNAL, reset_in_child
from .sockets import Listener

if TYPE_CHECKING:
    from .threads import RequestThreads  # imported at run time only with --threads > 1

logger = log.logger


class Conn(Protocol):
    """One client connection parked in the worker's poller (see connection.py)."""

    sock: socket.socket
    fd: int  # sock.fileno() while open (the poller's key)
    deadline: float
    busy: bool  # handed to a request thread; set and cleared by the worker's main thread
    closed: bool

    def readable(self, now: float) -> bool: ...  # False: it is closed, forget it
    def expire(self) -> None: ...  # its deadline passed: answer (408) if due, close
    def idle(self) -> bool: ...  # between requests, nothing buffered
    def close(self) -> None: ...


# Called once per accepted socket; returns the connection to watch, or None when done.
Handler = Callable[[socket.socket, Any, float], "Conn | None"]
# Given to handlers in a threaded worker: run the job (which serves conn) in the pool.
Dispatch = Callable[["Conn", Callable[[], None]], None]


@dataclass
class Context:
    """Everything the master hands a new worker at fork time."""

    config: Config
    slot: int
    generation: int
    listeners: list[Listener]
    channel: socket.socket
    dump_fd: int
    master_pid: int
    close_fds: list[int]  # fds the master owns and this worker must not keep
    app: Any = None  # set when preloaded
    unblock: set[int] = field(default_factory=set)  # mask to restore after set-up
    board: mmap.mmap | None = None  # our scoreboard (scoreboard.py), shared with the master
    unmap: list[mmap.mmap] = field(default_factory=list)  # the siblings' boards


_MASTER, _SIGNAL = "master", "signal"
# Connections accepted per wake-up of a listener: enough to save most epoll_wait calls
# under a burst of short connections, few enough that one worker does not take a whole
# burst while its siblings sleep (each new connection also wakes an idle sibling).
ACCEPT_BATCH = 8
_EPOLLEXCLUSIVE: int = getattr(select, "EPOLLEXCLUSIVE", 0)
# A listener as the loop accepts on it: socket.accept() without its per-call cost (the
# family and type properties convert to enums each time): the C accept (accept4(2) with
# SOCK_CLOEXEC, as socket.accept uses) and what the new socket object is built with.
_Listening = tuple[Callable[[], tuple[int, Any]], int, int, int]


def preimport(protocol: str) -> None:
    """Import the code a worker of `protocol` runs (called in the master before forking)."""
    if protocol == "tcp":
        from . import tcp  # noqa: F401
    else:
        from . import connection  # noqa: F401


def run(ctx: Context) -> NoReturn:
    """The whole life of a worker. Called in the child right after fork()."""
    code: int = ExitCode.ERROR
    try:
        code = Worker(ctx).main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitCode.ERROR
    except BaseException:
        logger.critical("worker crashed:\n%s", traceback.format_exc().rstrip())
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Worker:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.stopping = False  # graceful: stop accepting, finish what is in flight
        self.reopen_logs = False
        self.stop_alarm = False
        self.requests = 0
        self.counter = itertools.count(1)  # next() is atomic under the GIL: threads count too
        jitter = self.config.max_requests_jitter
        self.max_requests = (self.config.max_requests + random.randint(0, jitter)
                             if self.config.max_requests else 0)
        timeout = self.config.timeout
        self.beat = WorkerBeat(ctx.channel, min(timeout / 4, 1.0) if timeout else 1.0)
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}  # fd -> connection waiting for bytes
        self.tags: dict[int, Any] = {}  # fd -> _MASTER, _SIGNAL, or a listener (_Listening)
        # The earliest deadline among self.conns, or later: a scan of the connections
        # runs only when it passes, so a request costs one comparison, not a heap push.
        self.next_check = math.inf
        self.accept_paused_until = 0.0
        self.listening = False
        self.max_conns = self.config.worker_connections
        self.threads: RequestThreads | None = None
        self.stuck_logged = False
        self.reloader = Reloader() if self.config.reload else None  # --reload (development)
        slots = records_for(self.config.threads)
        board = ctx.board if ctx.board is not None else mmap.mmap(-1, board_size(slots))
        self.board = Writer(board, slots)
        self.start_request = self.board.start
        # The hooks a connection calls (connection.WorkerState), bound once. on_request:
        # as each request starts, with its method and path (a TCP handler gives "TCP" and
        # the peer) for the scoreboard, where `prefork status` and a hung-worker report
        # read them. on_request_end: as it ends, from the thread that served it, with the
        # status sent (0 if none; scoreboard.TCP for a TCP handler). on_rejected: a
        # request head refused before any app saw it (400, 408, 413, 414, 431...),
        # counted by status class, with no duration.
        # on_progress: a request waited for the client's socket and can move on (a slow
        # but steady client is progress, not a hang: --timeout is for the app).
        threaded = self.config.threads > 1
        self.on_request: Callable[[str, str], None] = (
            self._on_request_threaded if threaded else self._on_request)
        self.on_request_end: Callable[[int], None] = (
            self._on_request_end_threaded if threaded else self.board.end)
        self.on_rejected: Callable[[int], None] = self.board.rejected
        self.on_progress: Callable[[], None] = (
            self._on_progress_threaded if threaded else self._on_progress)

    # -- set-up, in the order the issue lists it ------------------------------------------

    def _detach_from_master(self) -> None:
        for fd in self.ctx.close_fds:
            try:
                os.close(fd)
            except OSError:
                pass  # already closed by the selector's close
        for sibling in self.ctx.unmap:  # not descriptors, but not ours to write either
            sibling.close()
        process.set_parent_death_signal(signal.SIGTERM)  # the heartbeat EOF tells us too
        if os.getppid() != self.ctx.master_pid:
            # The master died between fork() and prctl(): nobody will tell us later.
            raise SystemExit(ExitCode.OK)

    def _install_signals(self) -> None:
        reset_in_child()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

        graceful_timeout = self.config.graceful_timeout

        def graceful(signum: int, frame: object) -> None:
            self.stopping = True  # the wakeup fd wakes the loop
            if graceful_timeout and not self.stop_alarm:
                # If the master is dead (PDEATHSIG sent this TERM) nobody will SIGKILL a
                # request that never ends: the default SIGALRM action ends us instead.
                self.stop_alarm = True
                signal.alarm(int(graceful_timeout) + 2)

        def reopen(signum: int, frame: object) -> None:
            self.reopen_logs = True

        def quick(signum: int, frame: object) -> None:
            # A quick stop must work even while the app is stuck in a request, where no
            # loop would see a flag: exit right here, on purpose.
            os._exit(0)

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGUSR1, reopen)
        signal.signal(signal.SIGQUIT, quick)
        signal.signal(signal.SIGINT, quick)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # HUP is for the master
        faulthandler.register(DUMP_SIGNAL, file=self.ctx.dump_fd, all_threads=True)

    def main(self) -> int:
        ctx, config = self.ctx, self.config
        self._install_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, ctx.unblock)  # blocked by the master
        self._detach_from_master()
        log.set_role(f"worker {ctx.slot}")
        proctitle.set_title(f"worker {ctx.slot}", config.title_name)
        for item in config.raw_env:
            key, _, value = item.partition("=")
            os.environ[key] = value
        # Import the protocol code (and the stdlib it needs) while we can still read it:
        # after the switch the new user may not see the interpreter's own directories.
        make_handler = self._handler_factory()
        if config.user or config.group:
            process.drop_privileges(config.user, config.group)
        app = ctx.app
        if app is None:
            try:
                app = load(str(config.app), config.chdir)
            except BaseException as exc:
                logger.error("app %s failed to load:\n%s", config.app,
                             traceback.format_exc().rstrip())
                if self.reloader is None:
                    self.beat.error(failure_reason(exc))
                    return ExitCode.APP_LOAD_ERROR
                app = self.reloader.broken_app(exc, config.protocol)  # 500 + traceback
        handler = make_handler(app)
        self.beat.ready()
        logger.debug("ready pid=%d generation=%d", os.getpid(), ctx.generation)
        self._serve(handler)
        return RELOAD_EXIT if self.reloader and self.reloader.restart else ExitCode.OK

    def _handler_factory(self) -> Callable[[Any], Handler]:
        dispatch = self._dispatch if self.config.threads > 1 else None
        if self.config.protocol == "tcp":
            from .tcp import make_handler

            return lambda app: make_handler(app, self.on_request, dispatch,
                                            self.on_request_end)
        from .connection import make_handler as make_http_handler

        return lambda app: make_http_handler(app, self.config, self, dispatch)

    # -- the loop -------------------------------------------------------------------------

    def _on_request_threaded(self, method: str = "", path: str = "") -> None:
        """on_request with request threads: count (atomically) and maybe retire. Threaded
        workers beat from the main loop only, and only while no request is stuck
        (threads.py); a beat from here would hide a stuck sibling thread."""
        self.board.start(method, path)
        assert self.threads is not None
        self.threads.touch()
        self.requests = requests = next(self.counter)
        if requests == self.max_requests:
            self._retire()

    def _on_request_end_threaded(self, status: int) -> None:
        self.board.end(status)
        assert self.threads is not None
        self.threads.idle()

    def _on_progress_threaded(self) -> None:
        assert self.threads is not None
        self.threads.touch()

    def _on_progress(self) -> None:
        """Beat (rate-limited) while a request moves on with its client's socket."""
        self.beat.beat(time.monotonic(), self.requests)

    def _on_request(self, method: str = "", path: str = "") -> None:
        """on_request without threads: count, beat (rate-limited: a request costs a
        comparison, not a send) and maybe retire."""
        now = self.start_request(method, path)  # its CLOCK_MONOTONIC start
        self.requests = requests = self.requests + 1
        beat = self.beat
        # (Rate-limited here too: a request costs a comparison, not a call.)
        if now - beat.last >= beat.interval:
            beat.beat(now, requests)
        if requests == self.max_requests:
            self._retire()

    def _retire(self) -> None:
        if not self.stopping:
            logger.info("max requests reached requests=%d, exiting gracefully", self.requests)
            self.board.exit_reason(EXIT_MAX_REQUESTS)
            self.stopping = True

    def _dispatch(self, conn: Conn, job: Callable[[], None]) -> None:
        """Main thread: take `conn` out of the poller and serve its request in the pool."""
        assert self.threads is not None
        self._unwatch(conn)
        conn.busy = True
        self.threads.dispatch(conn, job)

    def _watch(self, conn: Conn) -> None:
        if conn.busy:
            return  # a request thread owns it until it comes back through collect()
        if conn.fd not in self.conns:
            self.conns[conn.fd] = conn
            self.ep.register(conn.fd, select.EPOLLIN)
        if conn.deadline < self.next_check:
            self.next_check = conn.deadline

    def _unwatch(self, conn: Conn) -> None:
        """Stop polling `conn` (it may be closed already: then the kernel dropped it)."""
        if self.conns.get(conn.fd) is conn:
            del self.conns[conn.fd]
            try:
                self.ep.unregister(conn.fd)
            except OSError:
                pass  # EBADF: it closed itself, which removed it from the epoll set

    def _forget(self, conn: Conn) -> None:
        self._unwatch(conn)
        conn.close()

    def _returned(self) -> None:
        """Connections whose request thread finished: watch them again, or let them go."""
        assert self.threads is not None
        for conn in self.threads.collect():
            conn.busy = False
            if conn.closed:
                continue
            if self.stopping and conn.idle():
                conn.close()
            else:
                self._watch(conn)

    def _accept(self, listening: _Listening, handler: Handler) -> None:
        """Accept what waits, up to ACCEPT_BATCH connections per wake-up. Each new
        connection is read at once (its request usually came with the handshake) and,
        in a sync worker, served before the next accept."""
        accept, family, kind, proto = listening
        for _ in range(ACCEPT_BATCH):
            try:
                fd, addr = accept()
            except BlockingIOError:
                return  # the queue is empty, or a sibling won the race
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop watching the listeners for a moment instead
                    # of spinning on a socket that stays readable (no 100% CPU on EMFILE).
                    logger.error("accept(): %s; pausing accepts for 0.5 s", exc.strerror)
                    self._pause_accepts(time.monotonic() + 0.5)
                return  # ECONNABORTED and friends: the client is already gone
            sock = socket.socket(family, kind, proto, fileno=fd)
            conn = handler(sock, addr, time.monotonic())
            if conn is not None:
                self._watch(conn)
            if self.stopping or self._full():
                return  # the loop stops watching the listeners (_update_listening)

    def _full(self) -> bool:
        """At --worker-connections, or (threaded) with every request thread busy."""
        threads = self.threads
        if threads is None:
            return len(self.conns) >= self.max_conns
        return threads.full or len(self.conns) + len(threads.busy) >= self.max_conns

    def _pause_accepts(self, until: float) -> None:
        self.accept_paused_until = until
        self._update_listening(time.monotonic())

    def _update_listening(self, now: float) -> None:
        """Watch the listeners only while this worker can take a connection: not stopping,
        not out of descriptors, below --worker-connections and (threaded) not with every
        request thread busy, so that a loaded worker leaves new connections to its
        siblings."""
        want = not self.stopping and now >= self.accept_paused_until and not self._full()
        if want == self.listening:
            return
        self.listening = want
        for listener in self.ctx.listeners:
            fd = listener.sock.fileno()
            if want:
                sock = listener.sock
                self.tags[fd] = (sock._accept,  # type: ignore[attr-defined]
                                 int(sock.family), int(sock.type), sock.proto)
                self._register_listener(fd)
            else:
                del self.tags[fd]
                self.ep.unregister(fd)

    def _register_listener(self, fd: int) -> None:
        """EPOLLEXCLUSIVE (Linux >= 4.5, epoll_ctl(2)): a new connection wakes one idle
        worker, not all of them (the thundering herd). A busy worker's epoll has no waiter
        and does not count, so the wake-up goes to a sibling that can take it."""
        try:
            self.ep.register(fd, select.EPOLLIN | _EPOLLEXCLUSIVE)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not _EPOLLEXCLUSIVE:
                raise
            self.ep.register(fd, select.EPOLLIN)  # an older kernel: every worker wakes

    def _stop_accepting(self, handler: Handler) -> None:
        """Graceful stop: serve what already waits in the kernel's accept queue (those
        clients connected before the stop; gunicorn drops them, its #3397), close our copies
        of the listeners, drop idle connections."""
        self._update_listening(time.monotonic())
        for listener in self.ctx.listeners:
            # At most a backlog's worth: under constant load the queue may never be empty.
            for _ in range(self.config.backlog):
                try:
                    sock, addr = listener.sock.accept()
                except OSError:  # BlockingIOError: the queue is empty (or a sibling has it)
                    break
                conn = handler(sock, addr, time.monotonic())
                if conn is not None:
                    self._watch(conn)
            listener.sock.close()  # never shutdown(): the master and siblings share it
        self.ctx.listeners = []
        for conn in [c for c in self.conns.values() if c.idle()]:
            self._forget(conn)

    def _next_timeout(self, now: float) -> float:
        timeout = min(self.beat.interval, self.next_check - now)
        if self.accept_paused_until > now:
            timeout = min(timeout, self.accept_paused_until - now)
        return max(timeout, 0.0)

    def _expire(self, now: float) -> None:
        """Close the connections whose deadline passed; find the next deadline."""
        next_check = math.inf
        for conn in list(self.conns.values()):
            if conn.deadline <= now:
                self._unwatch(conn)
                conn.expire()
            elif conn.deadline < next_check:
                next_check = conn.deadline
        self.next_check = next_check

    def _beat(self, now: float) -> None:
        """Beat, unless a request thread is stuck: then silence fetches the master."""
        if self.threads is not None:
            age = self.threads.stuck(now, self.config.timeout)
            if age:
                if not self.stuck_logged:
                    self.stuck_logged = True
                    logger.error("a request has made no progress for %.1f s (> --timeout); "
                                 "stopping heartbeats so the master replaces this worker", age)
                return
        self.beat.beat(now, self.requests)

    def _serve(self, handler: Handler) -> None:
        """The worker's loop: one epoll(7) over the listeners, the master's channel, our
        signal pipe and the connections waiting for bytes; looked up by fd in two dicts
        (connections first: they are most events)."""
        ep, conns, tags = self.ep, self.conns, self.tags
        if self.config.threads > 1:
            from .threads import RequestThreads

            self.threads = RequestThreads(self.config.threads, self.wake_w)
        self._update_listening(time.monotonic())
        channel = self.ctx.channel.fileno()
        tags[channel] = _MASTER
        ep.register(channel, select.EPOLLIN)
        tags[self.wake_r] = _SIGNAL
        ep.register(self.wake_r, select.EPOLLIN)
        monotonic = time.monotonic
        publish = self.board.publish  # the counters of the requests served this turn
        beat = self.beat
        accepting = True
        while True:
            if accepting and self.stopping:
                accepting = False
                self._stop_accepting(handler)
            if not (accepting or conns or (self.threads is not None and self.threads.busy)):
                return  # stopping, and nothing left in flight
            for fd, _ in ep.poll(self._next_timeout(monotonic())):
                conn = conns.get(fd)
                if conn is not None:
                    if not conn.readable(monotonic()):
                        self._unwatch(conn)  # it closed itself
                    elif conn.busy:
                        pass  # _dispatch took it out of the poller
                    elif self.stopping and conn.idle():
                        self._forget(conn)
                    elif conn.deadline < self.next_check:
                        self.next_check = conn.deadline
                    continue
                tag = tags.get(fd)
                if tag is _MASTER:
                    if self.beat.master_gone():
                        logger.warning("master pid=%d is gone, exiting", self.ctx.master_pid)
                        for conn in list(conns.values()):
                            self._forget(conn)
                        return
                elif tag is _SIGNAL:
                    while True:
                        try:
                            if not os.read(self.wake_r, 64):
                                break
                        except BlockingIOError:
                            break
                elif tag is not None and self.listening:
                    self._accept(tag, handler)
            # The rest of a turn, each part called only when it may have work (a turn
            # under load serves several requests; these checks are its fixed cost).
            now = monotonic()
            threaded = self.threads is not None
            if threaded:
                self._returned()
            if now >= self.next_check:
                self._expire(now)
            if not self.stopping and (threaded or not self.listening
                                      or len(conns) >= self.max_conns):
                self._update_listening(now)  # (a pause, a full pool, the connection cap)
            if self.reopen_logs:
                self.reopen_logs = False
                log.reopen()
                faulthandler.register(DUMP_SIGNAL, file=self.ctx.dump_fd, all_threads=True)
            if threaded or now - beat.last >= beat.interval:
                self._beat(now)
            publish()
            if self.reloader is not None and not self.stopping and self.reloader.changed(now):
                self.stopping = True  # finish in-flight requests, then exit RELOAD_EXIT
                try:
                    os.write(self.wake_w, b"r")  # wake the loop now, not at the next beat
                except BlockingIOError:
                    pass  # the pipe is full, so the loop wakes anyway
