"""Owner identity: a pid means nothing without its boot, its pid namespace and its start time."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

from hfpull.engine.owner import (
    LeaseWatch,
    Owner,
    Verdict,
    _start_ticks,
    judge,
    kernel_view,
    this_process,
)


def _never_owned(token: str) -> bool:
    return False


def _child() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _record_of(proc: subprocess.Popen[bytes]) -> Owner:
    boot, pidns = kernel_view()
    start = _start_ticks(proc.pid)
    assert start is not None
    return Owner("hfpull-child", "somehost", boot, pidns, proc.pid, start)


def test_this_machine_gives_a_certain_view() -> None:
    boot, pidns = kernel_view()
    assert boot and pidns, "this test machine has /proc; the stress tests depend on it"


def test_a_running_process_is_alive_and_dead_once_it_exits() -> None:
    proc = _child()
    try:
        owner = _record_of(proc)
        assert judge(owner, _never_owned) is Verdict.ALIVE
    finally:
        proc.kill()
        proc.wait()
    assert judge(owner, _never_owned) is Verdict.DEAD


def test_a_killed_child_not_yet_reaped_is_dead() -> None:
    proc = _child()
    owner = _record_of(proc)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while judge(owner, _never_owned) is not Verdict.DEAD:  # a zombie until we wait() for it
        assert time.monotonic() < deadline, "a killed (zombie) owner was never judged dead"
        time.sleep(0.01)
    assert proc.poll() is not None
    proc.wait()


def test_a_reused_pid_is_a_different_owner() -> None:
    proc = _child()
    try:
        owner = dataclasses.replace(_record_of(proc), start=_record_of(proc).start - 1)  # type: ignore[operator]
        assert judge(owner, _never_owned) is Verdict.DEAD
    finally:
        proc.kill()
        proc.wait()


def test_another_boot_or_pid_namespace_cannot_be_judged_from_here() -> None:
    proc = _child()
    try:
        alive = _record_of(proc)
        for other in (
            dataclasses.replace(alive, boot="another-boot"),  # rebooted: the pid may be anyone
            dataclasses.replace(alive, pidns="pid:[1]"),  # a container sharing the volume
            dataclasses.replace(alive, boot=None),
        ):
            assert judge(other, _never_owned) is Verdict.UNKNOWN
    finally:
        proc.kill()
        proc.wait()


def test_this_process_is_alive_only_for_claims_it_still_holds() -> None:
    me = this_process("hfpull-mine")
    assert judge(me, lambda token: token == "hfpull-mine") is Verdict.ALIVE
    assert judge(me, _never_owned) is Verdict.DEAD


def test_owner_records_round_trip_and_reject_junk() -> None:
    me = this_process("hfpull-x")
    assert Owner.from_json(me.to_json()) == me
    for junk in (None, [], {"token": "x"}, {**me.to_json(), "pid": "12"}):
        assert Owner.from_json(junk) is None


def test_lease_runs_on_our_clock_and_restarts_on_every_beat() -> None:
    now = [1000.0]
    watch = LeaseWatch(10.0, clock=lambda: now[0])
    assert not watch.expired("k", b"beat 1")  # first sight starts the lease
    now[0] += 9.9
    assert not watch.expired("k", b"beat 1")
    now[0] += 0.2
    assert watch.expired("k", b"beat 1")  # silent for a whole lease
    assert not watch.expired("k", b"beat 2")  # it beat: alive again, lease restarts
    now[0] += 9.0
    assert not watch.expired("k", b"beat 2")
    assert not watch.expired("other", b"beat 2")  # each owner has its own lease
