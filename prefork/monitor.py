"""What the master knows about its workers beyond life and death: their scoreboards,
memory and CPU, restarts by reason; and the two services that show it (the control socket
and /metrics).

Rules:
- Called in the master only, from its loop: `next_deadline()` joins the master's one wait,
  `check_memory()` runs when it is due, `worker_exited()` as a worker is reaped. Nothing
  here sleeps, forks or starts a thread.
- Memory is sampled as PSS (psutil `memory_full_info()`, one read of
  /proc/PID/smaps_rollup): preloaded copy-on-write pages count once, divided among their
  sharers, where RSS would count them in every worker. A worker above --max-worker-memory
  for OVER_LIMIT_SAMPLES samples in a row is marked `replacing`: it stops counting towards
  the target, so the master spawns its replacement into the same slot, and retires it
  (gracefully) only once that replacement reported ready (policy.superseded).
- Counters of a worker that exited are folded into `totals` from its board's last state,
  so exported counters never go backwards.
"""

from __future__ import annotations

import math
import os
import selectors
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psutil  # imported where used: a master without status/metrics never needs it

    from .preload import Templates

from . import control, metrics
from .config import Config
from .endpoint import Endpoint
from .log import logger
from .policy import WorkerRecord, restart_reason, superseded
from .scoreboard import CLASSES, EXIT_MAX_REQUESTS, Counters, Snapshot
from .sockets import BindError, Listener, local_name

MIB = 1024 * 1024
OVER_LIMIT_SAMPLES = 3  # consecutive samples above the limit before a worker is replaced


class MasterView(Protocol):
    """What the monitor reads from the master (master.Master)."""

    config: Config
    records: list[WorkerRecord]
    generation: int
    target: int
    listeners: list[Listener]
    state: Any  # generations.State
    templates: Templates
    last_error: str

    @property
    def sel(self) -> selectors.BaseSelector: ...


def worker_state(record: WorkerRecord, snapshot: Snapshot) -> str:
    if not record.ready:
        return "booting"
    if record.retiring:
        return "draining"
    return "busy" if snapshot.current else "ready"


class Monitor:
    def __init__(self, config: Config, now: float) -> None:
        self.started = now
        self.started_wall = time.time()
        self.totals = Counters()  # folded in from workers that exited
        self.restarts = dict.fromkeys(metrics.RESTART_REASONS, 0)
        self.slot_restarts: dict[int, tuple[int, str]] = {}  # slot -> (count, last reason)
        self.procs: dict[int, psutil.Process] = {}
        self.cpu_seen: dict[int, tuple[float, float]] = {}  # pid -> (monotonic, cpu seconds)
        self.endpoints: list[Endpoint] = []
        self.control_path: str | None = None
        self.master: MasterView | None = None  # set by open()
        self.next_sample = now + config.memory_check_interval if config.max_worker_memory \
            else math.inf

    # -- the services ---------------------------------------------------------------------

    def open(self, master: MasterView, control_handler: control.Handler) -> None:
        """Bind the control socket and the metrics listener. Raises BindError when one
        that was asked for explicitly cannot be bound; a default control socket that
        cannot be bound is only logged."""
        config = master.config
        sel = master.sel
        self.master = master
        path = control.default_path(config.control_socket, config.pidfile, os.getpid())
        if not config.control_socket and not config.pidfile:
            control.sweep_stale()  # the runtime dir is shared: leave it tidy
        if path is not None:
            try:
                endpoint = control.open_endpoint(path, sel, control_handler)
                self.endpoints.append(endpoint)
                self.control_path = path
                logger.info("control socket at %s%s", path,
                            " (held by a running master: taken over once we run)"
                            if endpoint.tmp_path else "")
            except BindError as exc:
                if config.control_socket:
                    raise
                logger.warning("%s; no control socket (prefork status will not work)", exc)
        if config.metrics_bind:
            try:
                endpoint = metrics.open_endpoint(config.metrics_bind, config.umask, sel,
                                                 lambda: self.sample(master))
            except BindError as exc:
                raise BindError(f"--metrics-bind: {exc}") from None
            self.endpoints.append(endpoint)
            logger.info("metrics at http://%s/metrics", local_name(endpoint.listener.sock))

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()
        self.endpoints = []

    def fds(self) -> list[int]:
        return [fd for endpoint in self.endpoints for fd in endpoint.fds()]

    def next_deadline(self) -> float:
        return min([self.next_sample, *(e.next_deadline() for e in self.endpoints)])

    def expire(self, now: float) -> None:
        """Every turn: drop clients past their deadline; once the master runs, take over
        the socket paths a previous master (USR2) still held when we booted."""
        running = self.master is not None and self.master.state.value == "running"
        for endpoint in self.endpoints:
            endpoint.expire(now)
            if running:
                endpoint.settle()

    # -- workers --------------------------------------------------------------------------

    def _proc(self, pid: int) -> psutil.Process:
        import psutil

        proc = self.procs.get(pid)
        if proc is None:
            proc = self.procs[pid] = psutil.Process(pid)
        return proc

    def worker_exited(self, record: WorkerRecord, status: int, stopping: bool) -> str | None:
        """Fold the worker's counters into the totals, count its restart; the reason."""
        if record.board is not None:
            snapshot = record.board.read()  # its last writes: the mapping outlives it
            self.totals.add(snapshot.counters)
            if snapshot.exit_reason == EXIT_MAX_REQUESTS and not record.kill_reason:
                record.kill_reason = "max-requests"
            record.board.close()
            record.board = None
        self.procs.pop(record.pid, None)
        self.cpu_seen.pop(record.pid, None)
        reason = restart_reason(record, status, stopping)
        if reason is not None:
            self.restarts[reason] += 1
            count, _ = self.slot_restarts.get(record.slot, (0, ""))
            self.slot_restarts[record.slot] = (count + 1, reason)
        return reason

    def check_memory(self, master: MasterView, now: float, active: bool
                     ) -> list[WorkerRecord]:
        """Every turn: the workers being replaced whose replacement is ready, for the
        master to retire. When a sample is due: PSS of every serving worker; mark
        persistent offenders `replacing` (the master spawns their replacement). `active`:
        the master is RUNNING (no sampling while booting, reloading or stopping). The limit
        and interval are read from the current config, so a reload (HUP) can change them."""
        done = superseded(master.records)
        for r in done:
            logger.info("worker slot=%d pid=%d replaced (memory); retiring it", r.slot, r.pid)
        limit = int(master.config.max_worker_memory * MIB)
        interval = master.config.memory_check_interval
        if not limit:
            self.next_sample = math.inf
            return done
        if self.next_sample == math.inf:  # just enabled by a reload
            self.next_sample = now + interval
        if now < self.next_sample:
            return done
        self.next_sample = now + interval
        if active:
            self._sample(master.records, limit)
        return done

    def _sample(self, records: list[WorkerRecord], limit: int) -> None:
        import psutil

        for r in records:
            if not r.ready or r.retiring or r.replacing or r.gone:
                continue
            try:
                pss = self._proc(r.pid).memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # exiting, or not ours to read: the next sample tries again
            r.over_limit = r.over_limit + 1 if pss > limit else 0
            logger.debug("memory sample slot=%d pid=%d pss=%.1fMiB over_limit=%d", r.slot,
                         r.pid, pss / MIB, r.over_limit)
            if r.over_limit >= OVER_LIMIT_SAMPLES:
                r.replacing = True
                logger.warning("worker slot=%d pid=%d PSS %.1f MiB above "
                               "--max-worker-memory %.0f MiB for %d samples; starting its "
                               "replacement", r.slot, r.pid, pss / MIB, limit / MIB,
                               r.over_limit)

    def current(self, record: WorkerRecord, now: float) -> str:
        """What the worker is serving, for the hung-worker report."""
        if record.board is None:
            return "no scoreboard"
        requests = record.board.read().current
        if not requests:
            return "not in a request"
        return ", ".join(f"serving {c.method} {c.path} for {now - c.started:.1f} s"
                         for c in requests)

    # -- reports --------------------------------------------------------------------------

    def _resources(self, pid: int, now: float) -> dict[str, Any]:
        import psutil

        try:
            proc = self._proc(pid)
            with proc.oneshot():
                mem = proc.memory_full_info()
                times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return {"rss": None, "pss": None, "uss": None, "cpu_percent": None}
        cpu = times.user + times.system
        seen = self.cpu_seen.get(pid)
        if seen is not None and now - seen[0] >= 0.05:
            percent = 100.0 * (cpu - seen[1]) / (now - seen[0])
        else:  # first look: the average over the worker's life
            percent = 100.0 * cpu / max(time.time() - proc.create_time(), 0.01)
        self.cpu_seen[pid] = (now, cpu)
        return {"rss": mem.rss, "pss": mem.pss, "uss": mem.uss,
                "cpu_percent": round(percent, 1)}

    def status(self, master: MasterView, now: float) -> dict[str, Any]:
        """The `prefork status` document (JSON-ready)."""
        workers = []
        totals = Counters()
        totals.add(self.totals)
        for r in sorted(master.records, key=lambda r: (r.slot, r.generation, r.born)):
            snap = r.board.read() if r.board is not None else Snapshot(Counters(), [], 0)
            totals.add(snap.counters)
            restarts, reason = self.slot_restarts.get(r.slot, (0, ""))
            workers.append({
                "slot": r.slot, "pid": r.pid, "generation": r.generation,
                "state": worker_state(r, snap), "age": round(now - r.born, 3),
                "requests": snap.counters.requests,
                "current": [{"method": c.method, "path": c.path,
                             "age": round(now - c.started, 3)} for c in snap.current],
                "last_beat": round(now - r.last_beat, 3),
                **self._resources(r.pid, now),
                "restarts": restarts, "last_restart_reason": reason or None,
                "replacing": "memory" if r.replacing else None,
            })
        return {
            "ok": True,
            "master": {
                "pid": os.getpid(), "uptime": round(now - self.started, 3),
                "started": self.started_wall, "state": master.state.value,
                "generation": master.generation, "target": master.target,
                "binds": [local_name(lst.sock) for lst in master.listeners],
                "control_socket": self.control_path,
                "metrics_bind": master.config.metrics_bind,
                "max_worker_memory_mb": master.config.max_worker_memory or None,
                "last_error": master.last_error or None,
            },
            "templates": [{
                "pid": t.pid, "generation": t.generation, "age": round(now - t.born, 3),
                "state": "exiting" if t.retiring else "ready" if t.ready else "booting",
                **self._resources(t.pid, now),
            } for t in master.templates.all],
            "workers": workers,
            "totals": {"requests": totals.requests,
                       "by_status": dict(zip(CLASSES, totals.classes, strict=True)),
                       "restarts": dict(self.restarts)},
        }

    def sample(self, master: MasterView) -> metrics.Sample:
        """What one /metrics scrape exports."""
        import psutil

        now = time.monotonic()
        totals = Counters()
        totals.add(self.totals)
        states = dict.fromkeys(metrics.WORKER_STATES, 0)
        in_flight = 0
        memory = []
        for r in master.records:
            if r.board is None:
                continue
            snap = r.board.read()
            totals.add(snap.counters)
            in_flight += len(snap.current)
            states[worker_state(r, snap)] += 1
            try:
                mem = self._proc(r.pid).memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            memory.append(metrics.WorkerMemory(r.slot, r.pid, mem.pss, mem.rss))
        backlog = []
        for lst in master.listeners:
            queue = metrics.listen_backlog(lst.sock)
            if queue is not None:
                backlog.append((local_name(lst.sock), *queue))
        return metrics.Sample(totals, in_flight, states, dict(self.restarts), memory,
                              backlog, master.generation, master.target, now - self.started)
