"""The master: bind, fork workers, and supervise them from one loop.

Rules:
- One process, no threads (fork() stays safe), one wait: `selectors` over the signal
  self-pipe, every worker's heartbeat channel and dump pipe, with a timeout that ends at the
  nearest deadline (policy.nearest_deadline). Nothing polls on a fixed tick.
- Each turn of the loop reads the top to bottom: read events (beats, EOFs, signals), reap,
  act on signals, then deadlines (stack dump, SIGKILL, backoff), then top up the workers.
- A generation's boot and the HUP transaction (and --preload's templates) are in
  generations.py; the loop calls in at each state change.
- systemd hears from this loop only (systemd.py): READY/RELOADING/STOPPING at the state
  changes, STATUS whenever its text changes, WATCHDOG=1 from `_tend_systemd()` at the end
  of a turn and only under the health rule of `systemd.Watchdog`.
- Observability lives in monitor.py: each worker's scoreboard (created here before its
  fork), memory sampling, the control socket and /metrics, whose sockets sit in the same
  selector (endpoint.py). A control verb runs the same `_dispatch` as its signal.
"""

from __future__ import annotations

import gc
import os
import selectors
import signal
import time
from collections.abc import Sequence
from typing import Any

from . import control, heartbeat, log, pidfile, policy, preload, proctitle, spawn, upgrade, worker
from .app import failure_line
from .config import Config
from .endpoint import Client, Endpoint
from .errors import BootError, ExitCode
from .generations import Generations, State
from .monitor import Monitor
from .policy import SlotBackoff, WorkerRecord
from .signals import DUMP_SIGNAL, TABLE, Action, Wakeup
from .sockets import BindError, Listener, bind, local_name
from .systemd import Notifier, TimeoutExtender, Watchdog, listen_fds, status_line

logger = log.logger

QUICK_STOP_GRACE = 2.0  # seconds a quick stop waits before SIGKILL


class Master:
    def __init__(self, config: Config, argv: Sequence[str], app: object = None) -> None:
        self.config = config
        self.argv = list(argv)  # re-parsed on HUP (None of it when run through the API)
        self.given_app = app
        self.state = State.BOOTING
        self.records: list[WorkerRecord] = []
        self.backoffs: dict[int, SlotBackoff] = {}
        self.target = config.workers
        self.generation = 1
        self.reload_from = 0  # generation being replaced while RELOADING
        self.reload_deadline = 0.0
        self.reload_queued = False
        self.exit_code = ExitCode.OK
        self.drain_until = 0.0  # --drain-delay: when the lame-duck period ends
        self.upgrading: upgrade.Upgrade | None = None  # USR2 in progress
        self.announce_fd = upgrade.take_ready_fd()  # we are the new master of an upgrade
        self.boot_message = ""
        self.load_error = ""  # the first worker's reason when the app would not load
        self.listeners: list[Listener] = []
        self.app: object = None  # only what serve() was given: --preload imports in a template
        self.sel = selectors.DefaultSelector()
        self.templates = preload.Templates(self.sel)  # --preload: one per live generation
        self.generations = Generations(self)  # boot, reload and templates (generations.py)
        self.last_turn = time.monotonic()
        # Taken out of the environment before any fork: workers never speak sd_notify.
        self.notifier = Notifier(os.environ.pop("NOTIFY_SOCKET", None))
        watchdog = Watchdog.from_environ(os.environ, os.getpid(), self.last_turn)
        self.watchdog = watchdog if self.notifier.enabled else None
        self.extender = TimeoutExtender(self.notifier)
        self.last_error = ""  # shown in STATUS= until the next successful reload
        self.monitor = Monitor(config, self.last_turn)

    # -- start and stop -------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the exit code. Raises BindError / BootError."""
        config = self.config
        log.setup(config.errorlog, config.loglevel, config.accesslog)
        self.listeners = (listen_fds() or upgrade.inherited()
                          or [bind(a, config.backlog, config.umask) for a in config.bind])
        proctitle.set_title("master", config.title_name)
        if config.pidfile:
            try:
                pidfile.create(config.pidfile)
            except pidfile.PidfileError as exc:
                self._close_listeners()
                raise BindError(str(exc)) from None
        try:
            return self._run()
        finally:
            self._close_listeners()
            if config.pidfile:
                pidfile.remove(config.pidfile)  # each only if it still holds our pid
                pidfile.remove(config.pidfile + ".oldbin")

    def _run(self) -> int:
        config = self.config
        for listener in self.listeners:
            logger.info("listening at %s (%s)", local_name(listener.sock), listener.label)
        if self.given_app is not None:
            self.app = self.given_app  # handed over through serve(): already imported
        # The protocol code every worker runs, imported once here: workers start faster
        # and share these pages copy-on-write instead of each holding its own copy.
        worker.preimport(config.protocol)
        gc.freeze()  # keep the collector from touching (and so copying) those pages
        self.wakeup = Wakeup(list(TABLE))
        self.sel.register(self.wakeup.rfd, selectors.EVENT_READ, None)
        logger.info("master booted pid=%d workers=%d app=%s", os.getpid(), self.target,
                    config.app)
        try:
            self.monitor.open(self, self._control)
            self._loop()
        finally:
            self.monitor.close()
            self.wakeup.close()
            self.sel.close()
        logger.info("master exiting code=%d", self.exit_code)
        if self.exit_code == ExitCode.APP_LOAD_ERROR and self.load_error:
            raise BootError(failure_line(str(self.config.app), self.load_error,
                                         self.config.errorlog), self.exit_code)
        if self.exit_code in (ExitCode.WORKER_BOOT_ERROR, ExitCode.APP_LOAD_ERROR):
            raise BootError(self.boot_message, self.exit_code)
        return self.exit_code

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners = []

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            if self.state is State.STOPPING:
                if not self.records and not self.templates.all:
                    return
            else:
                self._spawn_missing(now)
            deadline = policy.nearest_deadline(self.records, now, self.config.timeout,
                                               self.backoffs)
            if self.state is State.RELOADING:
                deadline = min(deadline, self.reload_deadline)
            if self.drain_until and self.state is not State.STOPPING:
                deadline = min(deadline, self.drain_until)
            if self.watchdog and self.state in (State.RUNNING, State.RELOADING):
                deadline = min(deadline, self.watchdog.next_deadline())
            deadline = min(deadline, self.monitor.next_deadline(), self.templates.deadline(now))
            events = self.sel.select(max(deadline - now, 0.0))
            now = time.monotonic()
            self._check_stall(now, deadline)
            signals: list[signal.Signals] = []
            for key, _ in events:
                if key.data is None:
                    signals.extend(self.wakeup.read())
                elif isinstance(key.data, WorkerRecord):
                    self._read_channel(key.data, now)
                elif isinstance(key.data, (Endpoint, Client)):  # control socket, /metrics
                    key.data.ready(now)
                elif isinstance(key.data, upgrade.Upgrade):
                    self._check_upgrade(key.data, now)
                elif isinstance(key.data, preload.Template):
                    self.templates.read(key.data, now)
                else:
                    record = key.data[1]
                    record.dump += heartbeat.drain(record.dump_fd)
            self._reap(now)
            for sig in signals:
                self._dispatch(TABLE[sig].action, now)
            if self.drain_until and now >= self.drain_until:
                self.stop(graceful=True, now=now)
            self.generations.check_boot(now)
            self.generations.check_reload(now)
            self._check_timeouts(now)
            self.templates.check(now, self.config.timeout)
            self._check_memory(now)
            self.monitor.expire(now)
            self._tend_systemd(now)

    def _check_stall(self, now: float, deadline: float) -> None:
        """A master that was stopped or paused must not blame its workers for it."""
        overslept = now - max(deadline, self.last_turn)
        if self.config.timeout and overslept > 1.0:
            logger.warning("master loop stalled for %.1f s; resetting worker deadlines",
                           overslept)
            for r in self.records:
                r.last_beat = max(r.last_beat, now)
        self.last_turn = now

    def _read_channel(self, record: WorkerRecord, now: float) -> None:
        messages, eof = heartbeat.read_messages(record.channel)
        for msg in messages:
            if msg.kind == heartbeat.ERROR:
                record.error = msg.text
                continue
            record.last_beat = max(record.last_beat, min(msg.sent, now))
            record.requests = msg.requests
            if msg.kind == heartbeat.READY and not record.ready:
                record.ready, record.ready_at = True, now
                logger.info("worker ready slot=%d pid=%d generation=%d", record.slot,
                            record.pid, record.generation)
        if eof:
            record.gone = True
            self.sel.unregister(record.channel)
            record.channel.close()
            if record.kill_at is None or record.kill_at > now + policy.GONE_GRACE:
                record.kill_at = now + policy.GONE_GRACE

    def _reap(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return  # no children at all
            if pid == 0:
                return
            record = next((r for r in self.records if r.pid == pid), None)
            if record is not None:
                self._on_exit(record, status, now)
                continue
            tpl = self.templates.find(pid)
            if tpl is not None:
                self.generations.template_exited(tpl, status, now)
            else:
                logger.debug("reaped a child we did not fork pid=%d", pid)

    def _on_exit(self, record: WorkerRecord, status: int, now: float) -> None:
        self.records.remove(record)
        if not record.gone:  # read what it said last (its error, say) up to the EOF
            self._read_channel(record, now)
        if not record.gone:  # no EOF: a child of the worker holds its end; stop listening
            record.gone = True
            self.sel.unregister(record.channel)
            record.channel.close()
        record.dump += heartbeat.drain(record.dump_fd)
        self.sel.unregister(record.dump_fd)
        os.close(record.dump_fd)
        how = policy.describe_status(status)
        self.monitor.worker_exited(record, status, self.state is State.STOPPING)
        if record.dump:
            logger.error("stack dump of worker slot=%d pid=%d (%s):\n%s", record.slot,
                         record.pid, record.kill_reason or "requested",
                         record.dump.decode("utf-8", "replace").rstrip())
        verdict = policy.exit_verdict(
            record, status, now, stopping=self.state is State.STOPPING,
            booting=self.state is State.BOOTING,
            reloading=self.generation if self.state is State.RELOADING else None)
        expected = verdict is policy.Verdict.EXPECTED
        level = logger.info if expected and not record.killed else logger.warning
        level("worker exited slot=%d pid=%d generation=%d %s%s", record.slot, record.pid,
              record.generation, how,
              f" reason={record.kill_reason}" if record.kill_reason else "")
        if verdict is policy.Verdict.BOOT_FAILED:
            said = f": {record.error}" if record.error else ""
            self.generations.boot_failed(
                status, record.error, now,
                f"worker slot={record.slot} died before it was ready ({how}){said}")
        elif verdict is policy.Verdict.RELOAD_FAILED:
            self.generations.reload_failed(
                record.error or f"new worker died before it was ready ({how})", now)
        elif verdict is policy.Verdict.CRASHED_YOUNG:
            backoff = self.backoffs.setdefault(record.slot, SlotBackoff())
            delay = policy.next_backoff(backoff, now)
            logger.warning("slot=%d crashed young %d time(s) in a row; respawn in %.1f s",
                           record.slot, backoff.failures, delay)
        elif verdict is policy.Verdict.REPLACE:
            self.backoffs.pop(record.slot, None)

    # -- signals --------------------------------------------------------------------------

    def _dispatch(self, action: Action, now: float) -> None:
        if action is Action.REAP:
            return  # _reap() already ran this turn
        if action is Action.REOPEN_LOGS:
            logger.info("reopening logs")
            log.reopen()
            self._signal_all(signal.SIGUSR1)
        elif action is Action.GRACEFUL_STOP:
            self.stop(graceful=True, now=now)
        elif action is Action.QUICK_STOP:
            self.stop(graceful=False, now=now)
        elif self.state is State.STOPPING:
            return
        elif action is Action.INCREMENT:
            self._scale(self.target + 1, now, "TTIN")
        elif action is Action.DECREMENT:
            self._scale(self.target - 1, now, "TTOU")
        elif action is Action.UPGRADE:
            self._upgrade(now)
        elif action is Action.RELOAD:
            if self.state is State.RUNNING:
                self.generations.reload(now)
            else:
                self.reload_queued = True  # coalesced, run when this one settles

    def _scale(self, target: int, now: float, why: str) -> None:
        """Run `target` workers (never fewer than 1); the oldest retire first."""
        target = max(target, 1)
        if target != self.target or why == "TTOU":
            logger.info("%s: workers=%d", why, target)
        while self.target > target:
            self.target -= 1
            victim = policy.oldest(self.records, self.generation)
            if victim is not None:
                self.retire(victim, now)
        self.target = target

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control-socket request, validated by control.py: what its signal does."""
        now, verb = time.monotonic(), request["verb"]
        if verb == "status":
            return self.monitor.status(self, now)
        if verb != "scale":
            self._dispatch(control.ACTIONS[verb], now)
        elif self.state is not State.STOPPING:
            self._scale(request["workers"], now, "scale")
        return {"ok": True, "state": self.state.value, "generation": self.generation,
                "target": self.target}

    def _signal_all(self, sig: int) -> None:
        for r in self.records:
            self._kill(r, sig)

    def _kill(self, record: WorkerRecord, sig: int) -> None:
        try:
            os.kill(record.pid, sig)
        except ProcessLookupError:
            pass  # already gone; the reap will tell

    def retire(self, record: WorkerRecord, now: float) -> None:
        """Ask one worker to finish its requests and exit, with a deadline."""
        record.retiring = True
        record.kill_at = now + self.config.graceful_timeout
        self._kill(record, signal.SIGTERM)

    def stop(self, graceful: bool, now: float) -> None:
        if self.state is State.STOPPING and graceful:
            return
        if graceful and self.config.drain_delay and not self.drain_until:
            # Lame duck: keep serving while load balancers notice we are going away.
            self.drain_until = now + self.config.drain_delay
            logger.info("graceful stop in %.1f s (--drain-delay)", self.config.drain_delay)
            self.status("STOPPING=1")
            self.extender.cover(self.drain_until + self.config.graceful_timeout, now,
                                new_phase=True)
            return
        logger.info("%s stop", "graceful" if graceful else "quick")
        self.state = State.STOPPING
        self.status("STOPPING=1")
        for listener in self.listeners:
            # Our copy no longer serves anyone. Once the workers have drained the accept
            # queue and closed theirs, new clients are refused at once instead of queueing
            # behind a socket nobody accepts on (systemd's own copy of an activated socket
            # keeps queueing them for the next start).
            listener.sock.close()
        if graceful:  # workers get --graceful-timeout; systemd's TimeoutStopSec may be less
            self.extender.cover(now + self.config.graceful_timeout, now, new_phase=True)
        self.templates.retire(now)  # no more forks; and its copies of the listeners go now
        for r in self.records:
            if graceful:
                self.retire(r, now)
            else:
                r.retiring = True
                r.kill_at = min(r.kill_at or now + QUICK_STOP_GRACE, now + QUICK_STOP_GRACE)
                self._kill(r, signal.SIGQUIT)

    # -- binary upgrade (upgrade.py) -------------------------------------------------------

    def _upgrade(self, now: float) -> None:
        if self.state is not State.RUNNING or self.upgrading is not None:
            logger.warning("USR2 ignored: the master is %s", "upgrading" if self.upgrading
                           else self.state.value)
            return
        env = {}
        if self.notifier.address:
            address = self.notifier.address
            env["NOTIFY_SOCKET"] = "@" + address[1:] if address.startswith("\0") else address
        if self.watchdog:
            env["WATCHDOG_USEC"] = str(int(self.watchdog.interval * 2_000_000))
        try:
            self.upgrading = upgrade.start(self.listeners, self.config.pidfile, env)
        except OSError as exc:
            logger.error("upgrade: fork(): %s; still serving", exc.strerror)
            return
        self.sel.register(self.upgrading.ready_fd, selectors.EVENT_READ, self.upgrading)
        logger.info("upgrade: started a new master pid=%d", self.upgrading.pid)

    def _check_upgrade(self, upgrading: upgrade.Upgrade, now: float) -> None:
        ready = upgrade.read(upgrading)
        if ready is None:
            return
        self.sel.unregister(upgrading.ready_fd)
        upgrade.finish(upgrading, ready)
        self.upgrading = None
        if not ready:
            logger.error("upgrade failed: the new master pid=%d exited before it was ready "
                         "(its log says why); still serving", upgrading.pid)
            self.last_error = "upgrade failed: the new master did not boot"
            self.status()
            return
        logger.info("upgrade: new master pid=%d is ready; this one drains and exits",
                    upgrading.pid)
        # systemd: only the current main process may name its successor (NotifyAccess=main).
        self.notifier.main_pid(upgrading.pid)
        for listener in self.listeners:
            listener.unix_path = None  # the new master owns the socket files now
        self.stop(graceful=True, now=now)

    # -- systemd --------------------------------------------------------------------------

    def status(self, *assignments: str) -> None:
        """STATUS= (if changed, or with `assignments` such as READY=1 in the same datagram)."""
        ready = sum(r.ready for r in policy.serving(self.records, self.generation))
        problems = [self.last_error]
        if self.watchdog and self.state is not State.STOPPING:
            problems.append(self.watchdog.problem)
        self.notifier.status(status_line(self.state.value, ready, self.target, self.generation,
                                         self.reload_from, len(self.records), problems),
                             *assignments)

    def _tend_systemd(self, now: float) -> None:
        """End of every turn: the watchdog ping (if healthy) and STATUS (if changed)."""
        if (self.watchdog and self.state in (State.RUNNING, State.RELOADING)
                and self.watchdog.tick(self.records, now)):
            self.notifier.notify("WATCHDOG=1")
        self.status()

    # -- deadlines and spawning -----------------------------------------------------------

    def _check_timeouts(self, now: float) -> None:
        for r in policy.timed_out(self.records, now, self.config.timeout):
            # What it was doing, from its scoreboard (readable however stuck it is); the
            # stacks follow when it is reaped (_on_exit), then its replacement.
            logger.error("worker timeout slot=%d pid=%d silent for %.1f s, %s; dumping stacks",
                         r.slot, r.pid, now - r.last_beat, self.monitor.current(r, now))
            r.kill_at, r.kill_reason = now + policy.DUMP_GRACE, "timeout"
            self._kill(r, DUMP_SIGNAL)
            self._kill(r, signal.SIGCONT)  # a stopped worker must run to dump its stacks
        for r in policy.kill_due(self.records, now):
            r.kill_reason = r.kill_reason or ("still running after closing its heartbeat"
                                              if r.gone else "stop deadline passed")
            logger.warning("killing worker slot=%d pid=%d reason=%s", r.slot, r.pid,
                           r.kill_reason)
            r.killed = True
            self._kill(r, signal.SIGKILL)

    def _check_memory(self, now: float) -> None:
        """--max-worker-memory (monitor.py): retire the workers whose replacement is ready."""
        for r in self.monitor.check_memory(self, now, self.state is State.RUNNING):
            self.retire(r, now)
            r.kill_reason = "memory"

    def _spawn_missing(self, now: float) -> None:
        tpl = None
        if self.config.preload_app and self.given_app is None:
            tpl = self.templates.current(self.generation)
            if tpl is None:
                if self.templates.may_start(now):
                    self.generations.start_template(now)
                return
            if not tpl.ready:
                return
        for slot in policy.free_slots(self.records, self.generation, self.target):
            backoff = self.backoffs.get(slot)
            if backoff is not None and now < backoff.not_before:
                continue
            self._spawn(slot, now, tpl)

    def _spawn(self, slot: int, now: float, tpl: preload.Template | None) -> None:
        try:
            if tpl is not None:
                spawned = spawn.template_worker(self.config, tpl, slot)
            else:
                spawned = spawn.fork_worker(
                    self.config, slot, self.generation, self.listeners, self.app,
                    self.owned_fds, [r.board.mm for r in self.records if r.board is not None])
        except OSError as exc:
            if isinstance(exc, TimeoutError) and tpl is not None:
                self.templates.kill(tpl, "did not fork a worker in time")
            backoff = self.backoffs.setdefault(slot, SlotBackoff())
            # Unlike a crash, a failed fork is never retried at once: the limit that
            # refused it (EAGAIN, ENOMEM) rarely lifts within the same turn.
            delay = max(policy.next_backoff(backoff, now), policy.BACKOFF_FIRST)
            backoff.not_before = now + delay
            logger.error("%s%s; retrying slot=%d in %.1f s", "" if tpl else "fork(): ",
                         exc.strerror or exc, slot, delay)
            return
        record = WorkerRecord(pid=spawned.pid, slot=slot, generation=self.generation,
                              channel=spawned.channel, dump_fd=spawned.dump_fd, born=now,
                              last_beat=now, board=spawned.board)
        self.records.append(record)
        self.sel.register(record.channel, selectors.EVENT_READ, record)
        self.sel.register(record.dump_fd, selectors.EVENT_READ, ("dump", record))
        logger.info("booting worker slot=%d pid=%d generation=%d", slot, record.pid,
                    self.generation)
        if self.state is State.BOOTING and self.config.timeout:
            # A first-generation worker is ready, or killed, --timeout after its birth.
            self.extender.cover(now + self.config.timeout + policy.DUMP_GRACE, now)

    def owned_fds(self) -> list[int]:
        """Every fd the master holds for itself, which a new worker must close."""
        fds = [self.sel.fileno(), *self.wakeup.fds(), *self.monitor.fds()]
        if self.announce_fd is not None:
            fds.append(self.announce_fd)
        if self.upgrading is not None:
            fds.append(self.upgrading.ready_fd)
        fds.extend(self.templates.fds())
        for r in self.records:
            if not r.gone:
                fds.append(r.channel.fileno())
            fds.append(r.dump_fd)
        return fds
