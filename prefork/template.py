"""The template process of --preload: imports the app once and forks a generation's workers.

The master's side (starting, asking, retiring templates) and why this design is in
preload.py. What runs here:
- Import the app (within the master's --timeout), `gc.freeze()`, say `ready` (or
  `error <reason>` and exit 4).
- Then wait on the master's socket. For each `spawn <slot>` (with the worker's heartbeat
  end, dump pipe and scoreboard as SCM_RIGHTS), fork an intermediate child that forks the
  worker, sends `spawned <pid>` (or `failed <why>`) and exits, so that the worker is
  re-parented to the master, a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER).
- The worker waits until its parent is the master before going on, because worker.py
  arms PDEATHSIG against its parent and then checks the parent is the master.
- EOF from the master (or PDEATHSIG) ends the template; SIGTERM's default action too: it
  holds no request.
"""

from __future__ import annotations

import gc
import mmap
import os
import selectors
import signal
import socket
import time
import traceback
from typing import NoReturn

from . import log, process, proctitle, worker
from .app import failure_reason, load
from .config import Config
from .errors import ExitCode
from .signals import TABLE, reset_in_child
from .sockets import Listener

logger = log.logger

REPARENT_WAIT = 5.0  # seconds a new worker waits to become the master's child


def run(config: Config, generation: int, listeners: list[Listener], sock: socket.socket,
         close_fds: list[int], unmap: list[mmap.mmap], unblock: set[int]) -> NoReturn:
    """The whole life of a template. Called in the child right after fork()."""
    code: int = ExitCode.ERROR
    try:
        code = _Template(config, generation, listeners, sock, unblock).main(close_fds, unmap)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitCode.ERROR
    except BaseException:
        logger.critical("template crashed:\n%s", traceback.format_exc().rstrip())
    finally:
        os._exit(code)


class _Template:
    def __init__(self, config: Config, generation: int, listeners: list[Listener],
                 sock: socket.socket, unblock: set[int]) -> None:
        self.config = config
        self.generation = generation
        self.listeners = listeners
        self.sock = sock
        self.unblock = unblock
        self.master_pid = os.getppid()
        self.app: object = None
        self.intermediates: set[int] = set()

    def main(self, close_fds: list[int], unmap: list[mmap.mmap]) -> int:
        reset_in_child()
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for board in unmap:  # the master's workers' boards: not ours
            board.close()
        process.set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.master_pid:
            return ExitCode.OK  # the master died before prctl(): nobody needs us
        log.set_role(f"template {self.generation}")
        proctitle.set_title(f"template {self.generation}", self.config.title_name)
        for item in self.config.raw_env:  # what a worker would set before its own import
            key, _, value = item.partition("=")
            os.environ[key] = value
        signal.pthread_sigmask(signal.SIG_SETMASK, self.unblock)
        started = time.monotonic()
        try:
            self.app = load(str(self.config.app), self.config.chdir)
        except BaseException as exc:
            logger.error("app %s failed to load:\n%s", self.config.app,
                         traceback.format_exc().rstrip())
            self._send(b"error " + failure_reason(exc).encode("utf-8", "replace"))
            return ExitCode.APP_LOAD_ERROR
        gc.collect()
        gc.freeze()  # keep the collector from touching (and so copying) the shared pages
        logger.info("app loaded in %.0f ms", (time.monotonic() - started) * 1000)
        self._send(b"ready")
        return self._serve()

    def _send(self, message: bytes) -> None:
        try:
            self.sock.send(message)
        except OSError:
            raise SystemExit(ExitCode.OK) from None  # the master is gone

    def _serve(self) -> int:
        # SIGCHLD only wakes the loop: children the app forked at import are reaped here,
        # like the master reaps its own strays.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.wake = (wake_r, wake_w)
        with selectors.DefaultSelector() as sel:
            self.sel = sel
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self.sock:
                        if not self._request():
                            return ExitCode.OK  # EOF: the master is gone
                    else:
                        while os.read(wake_r, 512) == 512:
                            pass
                self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.intermediates:
                self.intermediates.discard(pid)
            else:
                logger.debug("reaped a child we did not fork pid=%d", pid)

    def _request(self) -> bool:
        try:
            message, fds, _, _ = socket.recv_fds(self.sock, 256, 3)
        except (BlockingIOError, InterruptedError):
            return True
        if not message:
            return False
        kind, _, rest = message.partition(b" ")
        if kind != b"spawn" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self._send(b"failed bad request")
            return True
        self._fork_worker(int(rest), fds)
        return True

    def _fork_worker(self, slot: int, fds: list[int]) -> None:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(TABLE))
        try:
            pid = os.fork()
        except OSError as exc:
            self._send(b"failed fork(): " + (exc.strerror or str(exc)).encode())
            pid = -1
        if pid == 0:
            self._intermediate(slot, fds, old_mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if pid > 0:
            self.intermediates.add(pid)
        for fd in fds:
            os.close(fd)

    def _intermediate(self, slot: int, fds: list[int], mask: set[int]) -> NoReturn:
        """In the first child: fork the worker, say its pid, exit so it is re-parented."""
        try:
            pid = os.fork()
        except OSError as exc:
            self.sock.send(b"failed fork(): " + (exc.strerror or str(exc)).encode())
            os._exit(0)
        if pid == 0:
            self._become_worker(slot, fds, mask)
        try:
            self.sock.send(b"spawned %d" % pid)
        finally:
            os._exit(0)

    def _become_worker(self, slot: int, fds: list[int], mask: set[int]) -> NoReturn:
        channel_fd, dump_fd, board_fd = fds
        self.sel.close()
        self.sock.close()
        for fd in self.wake:
            os.close(fd)
        # Re-parenting happens as the intermediate exits, which it does right after one
        # send(); there is no event to wait on, so poll getppid() briefly.
        intermediate = os.getppid()
        deadline = time.monotonic() + REPARENT_WAIT
        while (parent := os.getppid()) != self.master_pid:  # read once per turn: it moves
            if parent != intermediate or time.monotonic() > deadline:
                os._exit(ExitCode.OK)  # the master is gone: nobody will supervise us
            time.sleep(0.0005)
        board = mmap.mmap(board_fd, os.fstat(board_fd).st_size)
        os.close(board_fd)
        ctx = worker.Context(
            config=self.config, slot=slot, generation=self.generation,
            listeners=self.listeners, channel=socket.socket(fileno=channel_fd),
            dump_fd=dump_fd, master_pid=self.master_pid, close_fds=[], app=self.app,
            unblock=mask, board=board, unmap=[])
        worker.run(ctx)
