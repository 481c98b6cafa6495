"""The worker table and the master's policy over it, as plain data and functions of `now`.

Rules:
- Nothing here forks, signals or sleeps: master.py acts, this module decides, so the
  decisions can be unit-tested without processes.
- Slot numbers are labels (the lowest free one is reused) so that `ps` shows worker 1..N;
  how many workers run is decided by counting, never by which slots are taken.
"""

from __future__ import annotations

import enum
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .scoreboard import Board

BACKOFF_FIRST = 0.1  # seconds before respawning a slot whose worker died young twice
BACKOFF_CAP = 30.0
YOUNG = 5.0  # a worker that dies sooner than this after boot counts as a crash loop
DUMP_GRACE = 0.5  # seconds between the stack-dump request and SIGKILL
# A worker closes its heartbeat only by exiting; one still running this long after the
# EOF (an app closed the fd by mistake, or exit hangs in atexit) is killed.
GONE_GRACE = 5.0
# A worker's exit code for "my code changed, start me again" (--reload, reloader.py): a
# planned restart, never counted as a crash. 75 is EX_TEMPFAIL in sysexits.h.
RELOAD_EXIT = 75


@dataclass(eq=False)
class WorkerRecord:
    pid: int
    slot: int
    generation: int
    channel: socket.socket  # master end of the heartbeat socketpair
    dump_fd: int  # read end of the faulthandler pipe
    born: float
    last_beat: float
    ready: bool = False
    ready_at: float = 0.0
    retiring: bool = False  # asked to finish and exit (TERM sent)
    kill_at: float | None = None  # SIGKILL is due then
    killed: bool = False
    kill_reason: str = ""
    gone: bool = False  # EOF seen on the channel
    requests: int = 0
    error: str = ""  # what the worker said before exiting (e.g. its app import error)
    dump: bytearray = field(default_factory=bytearray)
    board: Board | None = None  # its scoreboard (scoreboard.py), closed once it is reaped
    # Above --max-worker-memory (monitor.py): still serving, but no longer counted, so a
    # replacement is spawned; it is retired once that replacement is ready (superseded).
    replacing: bool = False
    over_limit: int = 0  # consecutive memory samples above the limit


@dataclass
class SlotBackoff:
    failures: int = 0
    not_before: float = 0.0


def describe_status(status: int) -> str:
    """'exit code 3' or 'signal SIGKILL', from a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def serving(records: list[WorkerRecord], generation: int) -> list[WorkerRecord]:
    """Workers of `generation` that count towards the target: alive, not retiring and not
    being replaced."""
    return [r for r in records if r.generation == generation and not r.gone
            and not r.retiring and not r.replacing]


def superseded(records: list[WorkerRecord]) -> list[WorkerRecord]:
    """Workers being replaced whose replacement (same slot and generation, born later)
    has reported ready: they may retire now without lowering capacity."""
    return [old for old in records
            if old.replacing and not old.retiring and not old.gone
            and any(new.ready and new.slot == old.slot and new.generation == old.generation
                    and new.born > old.born and not new.gone and not new.replacing
                    for new in records)]


def restart_reason(record: WorkerRecord, status: int, stopping: bool) -> str | None:
    """Why a worker that exited was replaced, as counted in metrics: timeout, memory,
    max-requests, signal or exit; None when its end was planned (reload, scaling down,
    stop, a --reload code change)."""
    if record.kill_reason in ("timeout", "memory", "max-requests"):
        return record.kill_reason
    if record.retiring or stopping or planned_restart(status):
        return None
    return "signal" if os.WIFSIGNALED(status) else "exit"


def free_slots(records: list[WorkerRecord], generation: int, target: int) -> list[int]:
    """The slot numbers to spawn into now so that `generation` has `target` workers.

    A worker whose heartbeat hit EOF (`gone`) keeps its slot until it is reaped: its exit
    status decides what comes next (backoff for a crash loop, exit 3/4 for a first
    generation that cannot boot), so it must not be replaced before that is known.
    """
    taken = {r.slot for r in records if r.generation == generation
             and not r.retiring and not r.replacing}
    missing = target - len(taken)
    slots: list[int] = []
    number = 1
    while len(slots) < missing:
        if number not in taken:
            slots.append(number)
        number += 1
    return slots


def oldest(records: list[WorkerRecord], generation: int) -> WorkerRecord | None:
    candidates = serving(records, generation)
    return min(candidates, key=lambda r: r.born) if candidates else None


def timed_out(records: list[WorkerRecord], now: float, timeout: float) -> list[WorkerRecord]:
    """Workers silent for longer than `timeout` that are not already being killed."""
    if not timeout:
        return []
    return [r for r in records
            if not r.gone and r.kill_at is None and now - r.last_beat > timeout]


def kill_due(records: list[WorkerRecord], now: float) -> list[WorkerRecord]:
    return [r for r in records
            if not r.killed and r.kill_at is not None and now >= r.kill_at]


def next_backoff(backoff: SlotBackoff, now: float) -> float:
    """Record one more young death; return the delay before the slot may respawn.

    The first death is answered at once (one crash is not a loop); from the second in a
    row the delay doubles from BACKOFF_FIRST up to BACKOFF_CAP.
    """
    backoff.failures += 1
    if backoff.failures == 1:
        delay = 0.0
    else:
        delay = min(BACKOFF_FIRST * 2 ** (backoff.failures - 2), BACKOFF_CAP)
    backoff.not_before = now + delay
    return delay


def planned_restart(status: int) -> bool:
    """The worker exited with RELOAD_EXIT: respawn at once, log it as expected."""
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == RELOAD_EXIT


def died_young(record: WorkerRecord, now: float) -> bool:
    return not record.ready or now - record.ready_at < YOUNG


def nearest_deadline(records: list[WorkerRecord], now: float, timeout: float,
                     backoffs: dict[int, SlotBackoff]) -> float:
    """When the master next has something to check, absent any event."""
    deadlines = [now + 3600.0]
    for r in records:
        if r.kill_at is not None and not r.killed:
            deadlines.append(r.kill_at)
        elif timeout and r.kill_at is None and not r.gone:
            deadlines.append(r.last_beat + timeout)
    deadlines.extend(b.not_before for b in backoffs.values() if b.not_before > now)
    return min(deadlines)


class Verdict(enum.Enum):
    """What a worker's exit means, decided by `exit_verdict`."""

    EXPECTED = "expected"  # asked to go (stop, retire, reload, --reload, max-requests)
    BOOT_FAILED = "boot failed"  # first generation, never ready: stop the server (exit 3/4)
    RELOAD_FAILED = "reload failed"  # new generation, never ready: keep the old one
    CRASHED_YOUNG = "crashed young"  # died soon after boot: respawn with backoff
    REPLACE = "replace"  # anything else: respawn at once


def exit_verdict(record: WorkerRecord, status: int, now: float, *, stopping: bool,
                 booting: bool, reloading: int | None) -> Verdict:
    """Classify a reaped worker. `reloading` is the generation being started, if any."""
    if (record.retiring or stopping or planned_restart(status)
            or record.kill_reason == "max-requests"):
        return Verdict.EXPECTED
    if not record.ready and record.generation == 1 and booting:
        return Verdict.BOOT_FAILED
    if not record.ready and reloading == record.generation:
        return Verdict.RELOAD_FAILED
    if died_young(record, now) and not record.killed:
        return Verdict.CRASHED_YOUNG
    return Verdict.REPLACE
