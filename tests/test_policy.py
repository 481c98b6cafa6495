"""The master's decisions, driven in memory with a fake clock (no processes)."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from prefork import policy
from prefork.policy import SlotBackoff, WorkerRecord


@pytest.fixture
def channel():
    a, b = socket.socketpair()
    yield a
    a.close()
    b.close()


def record(channel, slot: int, generation: int = 1, born: float = 0.0, **kw) -> WorkerRecord:
    return WorkerRecord(pid=1000 + slot, slot=slot, generation=generation, channel=channel,
                        dump_fd=-1, born=born, last_beat=kw.pop("last_beat", born), **kw)


def test_free_slots_fill_the_lowest_numbers(channel) -> None:
    records = [record(channel, 2), record(channel, 4)]
    assert policy.free_slots(records, 1, 4) == [1, 3]
    assert policy.free_slots(records, 1, 2) == []
    assert policy.free_slots(records, 2, 2) == [1, 2]  # another generation counts apart


def test_retiring_workers_do_not_count(channel) -> None:
    records = [record(channel, 1, retiring=True), record(channel, 3)]
    assert policy.free_slots(records, 1, 3) == [1, 2]


def test_a_gone_worker_keeps_its_slot_until_reaped(channel) -> None:
    # EOF came before the exit status: what replaces it depends on that status.
    records = [record(channel, 1, gone=True), record(channel, 3)]
    assert policy.free_slots(records, 1, 3) == [2]
    exiting = record(channel, 2, gone=True, kill_at=15.0)
    assert policy.timed_out([exiting], now=100.0, timeout=5.0) == []  # no dump asked
    assert policy.kill_due([exiting], now=15.0) == [exiting]  # but it must go
    assert policy.nearest_deadline([exiting], 11.0, 30.0, {}) == 15.0


def test_counting_not_slot_numbers_decides_after_ttou(channel) -> None:
    # TTOU retired slot 1 and lowered the target to 2: slots 2 and 3 serve, none is missing.
    records = [record(channel, 1, retiring=True), record(channel, 2), record(channel, 3)]
    assert policy.free_slots(records, 1, 2) == []


def test_oldest_is_the_first_born(channel) -> None:
    records = [record(channel, 1, born=5.0), record(channel, 2, born=1.0),
               record(channel, 3, born=0.5, retiring=True)]
    assert policy.oldest(records, 1).slot == 2


def test_timeouts(channel) -> None:
    quiet = record(channel, 1, last_beat=0.0)
    fresh = record(channel, 2, last_beat=9.5)
    dying = record(channel, 3, last_beat=0.0, kill_at=11.0)
    records = [quiet, fresh, dying]
    assert policy.timed_out(records, now=10.0, timeout=5.0) == [quiet]
    assert policy.timed_out(records, now=10.0, timeout=0) == []  # 0 disables
    assert policy.kill_due(records, now=11.0) == [dying]


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = SlotBackoff()
    delays = [policy.next_backoff(backoff, now=100.0) for _ in range(12)]
    assert delays[:5] == [0.0, 0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == policy.BACKOFF_CAP
    assert backoff.not_before == 100.0 + policy.BACKOFF_CAP


def test_died_young(channel) -> None:
    assert policy.died_young(record(channel, 1), now=100.0)  # never ready
    assert policy.died_young(record(channel, 1, ready=True, ready_at=98.0), now=100.0)
    assert not policy.died_young(record(channel, 1, ready=True, ready_at=10.0), now=100.0)


def test_nearest_deadline(channel) -> None:
    records = [record(channel, 1, last_beat=10.0), record(channel, 2, last_beat=0.0,
                                                          kill_at=12.0)]
    assert policy.nearest_deadline(records, 11.0, 30.0, {}) == 12.0
    assert policy.nearest_deadline(records[:1], 11.0, 30.0, {}) == 40.0
    backoffs = {3: SlotBackoff(1, 11.5)}
    assert policy.nearest_deadline(records[:1], 11.0, 30.0, backoffs) == 11.5
    assert policy.nearest_deadline([], 11.0, 0, {}) == 11.0 + 3600.0


def test_describe_status() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(4)
    assert policy.describe_status(os.waitpid(pid, 0)[1]) == "exit code 4"
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    assert policy.describe_status(os.waitpid(pid, 0)[1]) == "signal SIGKILL"


def test_a_worker_being_replaced_frees_its_slot_until_the_replacement_is_ready(channel) -> None:
    old = record(channel, 1, born=0.0, ready=True, replacing=True)
    other = record(channel, 2, born=0.0, ready=True)
    records = [old, other]
    assert policy.free_slots(records, 1, 2) == [1]  # its replacement goes into slot 1
    assert policy.superseded(records) == []
    new = record(channel, 1, born=5.0)
    records.append(new)
    assert policy.superseded(records) == []  # not ready yet: the old one keeps serving
    new.ready = True
    assert policy.superseded(records) == [old]
    old.retiring = True
    assert policy.superseded(records) == []


def test_restart_reasons(channel) -> None:
    killed = 9  # a wait status for "killed by SIGKILL"
    exited_1 = 1 << 8
    assert policy.restart_reason(record(channel, 1), killed, False) == "signal"
    assert policy.restart_reason(record(channel, 1), exited_1, False) == "exit"
    assert policy.restart_reason(record(channel, 1, kill_reason="timeout"), killed,
                                 False) == "timeout"
    assert policy.restart_reason(record(channel, 1, retiring=True, kill_reason="memory"),
                                 0, False) == "memory"
    assert policy.restart_reason(record(channel, 1, kill_reason="max-requests"), 0,
                                 False) == "max-requests"
    # Planned ends are not restarts: retired (reload, TTOU), stopping, --reload's exit.
    assert policy.restart_reason(record(channel, 1, retiring=True), 0, False) is None
    assert policy.restart_reason(record(channel, 1), killed, True) is None
    assert policy.restart_reason(record(channel, 1), policy.RELOAD_EXIT << 8, False) is None


@pytest.mark.parametrize(("kw", "state", "verdict"), [
    ({"retiring": True}, {}, policy.Verdict.EXPECTED),
    ({"ready": True}, {"stopping": True}, policy.Verdict.EXPECTED),
    ({"kill_reason": "max-requests", "ready": True}, {}, policy.Verdict.EXPECTED),
    ({}, {"booting": True}, policy.Verdict.BOOT_FAILED),
    ({"generation": 2}, {"reloading": 2}, policy.Verdict.RELOAD_FAILED),
    ({"generation": 1}, {"reloading": 2}, policy.Verdict.CRASHED_YOUNG),  # an old worker
    ({"ready": True, "ready_at": 99.0}, {}, policy.Verdict.CRASHED_YOUNG),
    ({"ready": True, "ready_at": 99.0, "killed": True}, {}, policy.Verdict.REPLACE),
    ({"ready": True, "ready_at": 1.0}, {}, policy.Verdict.REPLACE),
])
def test_exit_verdict(channel, kw: dict, state: dict, verdict: policy.Verdict) -> None:
    generation = kw.pop("generation", 1)
    rec = record(channel, 1, generation=generation, **kw)
    flags = {"stopping": False, "booting": False, "reloading": None, **state}
    assert policy.exit_verdict(rec, 0, 100.0, **flags) == verdict
