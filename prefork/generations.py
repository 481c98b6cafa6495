"""A generation's life: the first boot, the HUP transaction, and --preload's templates.

Split out of master.py, whose loop calls in here at the state changes. Rules:
- Reload is a transaction: the new generation must report ready before the old one is
  told to stop; if it cannot (bad config, import error, crash, not ready within
  `max(--timeout, 5 s)`), it is stopped and the old one keeps serving. A HUP during a
  reload is queued and runs when it settles (several coalesce into one).
- The first generation must boot; if any of its workers, or its template, dies before
  reporting ready, the master stops everything and exits 3 or 4 (no respawn storm).
- systemd hears RELOADING=1 (with MONOTONIC_USEC, for Type=notify-reload) at the start
  and READY=1 at the end of every reload, failed or not, so `systemctl reload` returns.
"""

from __future__ import annotations

import os
import time
from enum import Enum
from typing import TYPE_CHECKING

from . import log, policy, preload, upgrade
from .config import ConfigError
from .errors import BootError, ExitCode

if TYPE_CHECKING:
    from .config import Config
    from .master import Master

logger = log.logger


class State(Enum):
    BOOTING = "booting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"


class Generations:
    def __init__(self, master: Master) -> None:
        self.master = master
        self.previous_config: Config | None = None  # restored if a reload fails

    def check_boot(self, now: float) -> None:
        m = self.master
        if m.state is State.BOOTING:
            workers = policy.serving(m.records, 1)
            if len(workers) >= m.target and all(r.ready for r in workers):
                m.state = State.RUNNING
                logger.info("all %d workers ready", len(workers))
                m.status("READY=1")
                if m.announce_fd is not None:  # an old master started us (USR2)
                    upgrade.announce_ready(m.announce_fd)
                    m.announce_fd = None
                self.run_queued_reload(now)

    def boot_failed(self, status: int, error: str, now: float, why: str) -> None:
        """A first-generation worker or template died (wait `status`) before it was
        ready: stop, and exit 4 if it could not load the app (`error`, its reason), else 3."""
        m = self.master
        m.load_error = m.load_error or error
        code = (ExitCode.APP_LOAD_ERROR if os.waitstatus_to_exitcode(status)
                == ExitCode.APP_LOAD_ERROR else ExitCode.WORKER_BOOT_ERROR)
        m.boot_message = f"{why}; stopping (exit {code.value})"
        m.last_error = f"boot failed: {why}"
        logger.error("%s", m.boot_message)
        m.exit_code = code
        m.stop(graceful=False, now=now)

    def reload(self, now: float) -> None:
        from .cli import build_config

        m = self.master
        logger.info("reload: re-reading the configuration")
        m.notifier.notify("RELOADING=1",
                          f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC)//1000}")
        try:
            config = build_config(m.argv, os.environ) if m.argv else m.config
        except (ConfigError, SystemExit) as exc:
            self.reload_failed(f"configuration error: {exc}", now)
            return
        if config.workers != m.config.workers:
            m.target = config.workers  # else TTIN/TTOU adjustments survive
        if config.bind != m.config.bind:
            logger.warning("reload: bind changes need a restart; keeping %s",
                           ", ".join(m.config.bind))
        log.setup(config.errorlog, config.loglevel, config.accesslog)
        self.previous_config, m.config = m.config, config
        m.state = State.RELOADING
        m.reload_from = m.generation
        m.generation += 1
        m.reload_deadline = now + max(config.timeout or 30.0, 5.0)
        m.extender.cover(m.reload_deadline, now, new_phase=True)
        logger.info("reload: starting generation %d (%d workers)", m.generation, m.target)

    def check_reload(self, now: float) -> None:
        m = self.master
        if m.state is not State.RELOADING:
            return
        new = policy.serving(m.records, m.generation)
        if len(new) >= m.target and all(r.ready for r in new):
            for r in m.records:
                if r.generation != m.generation and not r.retiring:
                    m.retire(r, now)
            m.templates.retire(now, keep=lambda t: t.generation == m.generation)
            m.state = State.RUNNING
            m.last_error = ""
            logger.info("reload: generation %d ready, old workers stopping", m.generation)
            m.status("READY=1")
            self.run_queued_reload(now)
        elif now >= m.reload_deadline:
            self.reload_failed("new workers not ready in time", now)

    def reload_failed(self, why: str, now: float) -> None:
        m = self.master
        logger.error("reload failed: %s; the old workers keep serving", why)
        if m.state is State.RELOADING:
            for r in m.records:
                if r.generation == m.generation and not r.retiring:
                    m.retire(r, now)
            m.templates.retire(now, keep=lambda t: t.generation != m.generation)
            m.generation = m.reload_from
            assert self.previous_config is not None  # set by reload() with the state
            m.config = self.previous_config
            log.setup(m.config.errorlog, m.config.loglevel, m.config.accesslog)
            m.state = State.RUNNING
        m.last_error = f"reload failed: {why}"
        m.status("READY=1")
        self.run_queued_reload(now)

    def run_queued_reload(self, now: float) -> None:
        m = self.master
        if m.reload_queued and m.state is State.RUNNING:
            m.reload_queued = False
            self.reload(now)

    def start_template(self, now: float) -> None:
        m = self.master
        try:
            tpl = m.templates.start(
                m.config, m.generation, m.listeners, m.owned_fds,
                [r.board.mm for r in m.records if r.board is not None], now)
        except RuntimeError as exc:
            raise BootError(str(exc), ExitCode.ERROR) from None
        if tpl is not None and tpl.kill_at is not None and m.state is State.BOOTING:
            m.extender.cover(tpl.kill_at, now)

    def template_exited(self, tpl: preload.Template, status: int, now: float) -> None:
        m = self.master
        failed = m.templates.exited(tpl, status, now, m.generation,
                                    m.state is State.STOPPING)
        if failed is None:
            return
        if m.state is State.BOOTING and tpl.generation == 1:
            self.boot_failed(status, tpl.error, now, failed)
        elif m.state is State.RELOADING and tpl.generation == m.generation:
            self.reload_failed(tpl.error or failed, now)

