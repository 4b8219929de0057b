"""The claim protocol: one writer per blob, by construction, whatever the interleaving.

The claim and the ends of a claim (publish, release) are generators that yield after each
filesystem step. ``explore`` runs *every* interleaving of two or three of them, from a fresh
directory each time, and checks the invariants after every single step: no sleeps, no timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from hfpull.engine.owner import LeaseWatch, Owner, _start_ticks, kernel_view, this_process
from hfpull.engine.partial import (
    BUSY,
    JOURNAL_BYTES,
    BlobNames,
    Busy,
    LostPartial,
    Partial,
    claim,
    claim_steps,
    held_bytes,
)
from hfpull.models import RemoteFile

FILE = RemoteFile("w.bin", 1000, "a" * 40, "b" * 64)
Step = Generator[str, None, Any]


def _watch() -> LeaseWatch:
    return LeaseWatch(120.0)


def _owner_record(owner: Owner) -> str:
    return json.dumps({"format": 2, "etag": FILE.etag, "owner": owner.to_json()})


def _plant(
    directory: Path,
    owner: Owner,
    *,
    done: list[list[int]],
    locked: bool = True,
    state: str = "active",
    nbytes: int = 600,
) -> BlobNames:
    """What a holder leaves on disk: owner record, lock, data and journal (format 2)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = BlobNames(directory, FILE.etag)
    names.owner(owner.token).write_text(_owner_record(owner))
    if locked:
        os.link(names.owner(owner.token), names.lock)
    names.data(owner.token).write_bytes(b"x" * nbytes)
    names.journal(owner.token).write_text(json.dumps({
        "format": 2, "etag": FILE.etag, "size": FILE.size, "done": done, "state": state,
        "owner": owner.to_json(), "beat": 7,
    }))  # fmt: skip
    return names


def _dead_owner(token: str = "hfpull-dead") -> Owner:
    """This very process, under a token it does not hold: certainly not writing."""
    return this_process(token)


def _foreign_owner(token: str = "hfpull-far") -> Owner:
    """An owner in another pid namespace (a container on the same volume): unknowable."""
    mine = this_process(token)
    return Owner(token, mine.host, mine.boot, "pid:[4026531999]", 1, 1)


def _partial_inodes(directory: Path) -> dict[str, tuple[int, int]]:
    inodes = {}
    for path in directory.glob("*.incomplete"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        inodes[path.name] = (stat.st_dev, stat.st_ino)
    return inodes


def _no_shared_inodes(directory: Path, results: object = None) -> None:
    inodes = _partial_inodes(directory)
    assert len(set(inodes.values())) == len(inodes), f"two partials share an inode: {inodes}"


def explore(
    root: Path,
    make: Callable[[Path], list[Step]],
    after_step: Callable[[Path, dict[int, Any]], None],
    at_end: Callable[[Path, dict[int, Any]], None],
    switches: int | None = None,
) -> int:
    """Run every interleaving of the steps of ``make(directory)``; returns how many ran.

    ``switches`` bounds how often a schedule may leave a party that could still go on (a
    preemption, as in CHESS): all bugs found in practice need very few, and it keeps the
    number of schedules polynomial. None explores them all."""
    todo: list[tuple[list[int], int]] = [([], 0)]
    runs = 0
    while todo:
        prefix, used = todo.pop()
        directory = root / f"run{runs}"
        runs += 1
        steps = make(directory)
        live = list(range(len(steps)))
        chosen: list[int] = []
        results: dict[int, Any] = {}
        while live:
            if len(chosen) < len(prefix):
                pick = prefix[len(chosen)]
            else:
                previous = chosen[-1] if chosen else None
                pick = previous if previous in live else live[0]
                for other in live:
                    if other == pick:
                        continue
                    cost = used + (1 if previous in live else 0)
                    if switches is None or cost <= switches:
                        todo.append(([*chosen, other], cost))
            chosen.append(pick)
            try:
                next(steps[pick])
            except StopIteration as stop:
                results[pick] = stop.value
                live.remove(pick)
            after_step(directory, results)
        at_end(directory, results)
        for result in results.values():
            if isinstance(result, Partial) and not result.lost:
                result.discard()
    return runs


def _settle(results: dict[int, Any]) -> list[Partial]:
    partials = [r for r in results.values() if isinstance(r, Partial)]
    assert all(isinstance(r, (Partial, Busy)) or r is None for r in results.values())
    return partials


def _owning(partials: list[Partial]) -> list[Partial]:
    return [p for p in partials if p.owns()]


def _cleanup(partials: list[Partial]) -> None:
    for partial in partials:
        partial.discard()


# -- every interleaving ----------------------------------------------------------------------


def test_two_fresh_claimants_in_every_interleaving_one_wins(tmp_path: Path) -> None:
    def at_end(directory: Path, results: dict[int, Any]) -> None:
        partials = _settle(results)
        assert len(partials) == 1 and list(results.values()).count(BUSY) == 1
        assert _owning(partials) == partials
        _cleanup(partials)
        assert not list(directory.iterdir()), "a claim left files behind"

    runs = explore(
        tmp_path,
        lambda d: [claim_steps(d, FILE, _watch()), claim_steps(d, FILE, _watch())],
        _no_shared_inodes,
        at_end,
    )
    assert runs > 20


@pytest.mark.parametrize(
    ("claimants", "switches"),
    [
        (2, 3),
        (3, 1),
        pytest.param(2, 5, marks=pytest.mark.slow),
        pytest.param(3, 2, marks=pytest.mark.slow),
    ],
)
def test_claimants_taking_over_a_dead_owner_in_every_interleaving(
    tmp_path: Path, claimants: int, switches: int
) -> None:
    """The adopted-partial window: between the rename and the new owner's journal nobody may
    take the file again, and a lock is never broken twice (the ABA case with three)."""
    dead = _dead_owner()

    def make(directory: Path) -> list[Step]:
        _plant(directory, dead, done=[[0, 600]])
        return [claim_steps(directory, FILE, _watch()) for _ in range(claimants)]

    def at_end(directory: Path, results: dict[int, Any]) -> None:
        partials = _settle(results)
        assert len(_owning(partials)) == 1, results
        winner = _owning(partials)[0]
        assert winner.done.ranges == [(0, 600)], "the dead owner's bytes were not resumed"
        names = BlobNames(directory, FILE.etag)
        assert not names.owner(dead.token).exists() and not names.data(dead.token).exists()
        _cleanup(partials)
        assert not list(directory.iterdir()), sorted(p.name for p in directory.iterdir())

    runs = explore(tmp_path, make, _no_shared_inodes, at_end, switches)
    assert runs > 100


def test_a_claimant_racing_a_publishing_owner(tmp_path: Path) -> None:
    """Every step of the owner's publish between any two steps of a claimant: never two
    owners, and the claimant never takes the bytes being published."""
    holders: dict[Path, Partial] = {}

    def make(directory: Path) -> list[Step]:
        holder = claim(directory, FILE, _watch())
        assert isinstance(holder, Partial)
        holder.write(0, b"y" * FILE.size)
        holder.mark_done(0, FILE.size)
        holders[directory] = holder
        target = directory.parent / f"{directory.name}.blob"
        return [
            holder.publish_steps(lambda p: os.rename(p, target)),
            claim_steps(directory, FILE, _watch()),
        ]

    def after_step(directory: Path, results: dict[int, Any]) -> None:
        _no_shared_inodes(directory)
        claimant = results.get(1)
        if isinstance(claimant, Partial):
            assert not (holders[directory].owns() and claimant.owns()), "two owners"

    def at_end(directory: Path, results: dict[int, Any]) -> None:
        assert (directory.parent / f"{directory.name}.blob").read_bytes() == b"y" * FILE.size
        partials = _settle({1: results[1]})
        for partial in partials:
            assert partial.owns() and partial.done.total() == 0
        _cleanup(partials)
        assert not list(directory.iterdir()), sorted(p.name for p in directory.iterdir())

    assert explore(tmp_path, make, after_step, at_end) > 10


def test_a_claimant_racing_a_releasing_owner(tmp_path: Path) -> None:
    """A released partial is resumed by rename at once, or the claimant is told BUSY."""

    def make(directory: Path) -> list[Step]:
        holder = claim(directory, FILE, _watch())
        assert isinstance(holder, Partial)
        holder.write(0, b"z" * 500)
        holder.mark_done(0, 500)
        return [holder.release_steps(), claim_steps(directory, FILE, _watch())]

    def at_end(directory: Path, results: dict[int, Any]) -> None:
        partials = _settle({1: results[1]})
        if partials:
            assert partials[0].done.ranges == [(0, 500)]
            assert partials[0].data_path.read_bytes() == b"z" * 500
            assert len(list(directory.glob("*.incomplete"))) == 1
            _cleanup(partials)
        else:
            assert held_bytes(directory, FILE) == 500  # kept for the next run

    assert explore(tmp_path, make, _no_shared_inodes, at_end) > 5


# -- an owner we cannot ask the kernel about ---------------------------------------------------


def _fake_clock() -> tuple[list[float], LeaseWatch]:
    now = [0.0]
    return now, LeaseWatch(10.0, clock=lambda: now[0])


def test_a_foreign_owner_is_busy_while_it_beats_and_taken_over_after_a_silent_lease(
    tmp_path: Path,
) -> None:
    names = _plant(tmp_path, _foreign_owner(), done=[[0, 600]])
    now, watch = _fake_clock()
    assert claim(tmp_path, FILE, watch) is BUSY
    now[0] += 9
    names.journal("hfpull-far").write_text(names.journal("hfpull-far").read_text() + " ")
    now[0] += 9  # 18 s since first seen, but it beat 9 s ago
    assert claim(tmp_path, FILE, watch) is BUSY
    now[0] += 10
    partial = claim(tmp_path, FILE, watch)
    assert isinstance(partial, Partial) and partial.done.ranges == [(0, 600)]
    assert partial.data_path.read_bytes()[:600] == b"x" * 600
    assert not names.data("hfpull-far").exists() and not names.owner("hfpull-far").exists()
    partial.discard()


def test_clock_skew_cannot_make_a_beating_owner_look_dead(tmp_path: Path) -> None:
    """Journal timestamps and mtimes from a host whose clock is a day behind are ignored."""
    names = _plant(tmp_path, _foreign_owner(), done=[[0, 600]])
    day_ago = os.stat(names.journal("hfpull-far")).st_mtime - 86400
    os.utime(names.journal("hfpull-far"), (day_ago, day_ago))
    os.utime(names.data("hfpull-far"), (day_ago, day_ago))
    assert claim(tmp_path, FILE, _watch()) is BUSY


def test_an_owner_judged_gone_that_still_runs_never_shares_bytes_and_learns_it_lost(
    tmp_path: Path,
) -> None:
    """A paused owner (SIGSTOP, a frozen VM) outlives its lease. The claimant copies its bytes
    into a fresh inode instead of renaming, and the owner sees its loss before publishing."""
    victim = claim(tmp_path, FILE, _watch())
    assert isinstance(victim, Partial)
    victim.write(0, b"v" * 400)
    victim.mark_done(0, 400)
    victim.flush_journal()
    # Make it look like an owner in another container: judged by heartbeat only.
    names = victim.names
    foreign = _foreign_owner(victim.token)
    names.owner(victim.token).write_text(_owner_record(foreign))  # same inode as the lock
    journal = json.loads(victim.journal_path.read_text())
    victim.journal_path.write_text(json.dumps({**journal, "owner": foreign.to_json()}))
    now, watch = _fake_clock()
    assert claim(tmp_path, FILE, watch) is BUSY
    now[0] += 11
    thief = claim(tmp_path, FILE, watch)
    assert isinstance(thief, Partial)
    assert thief.done.ranges == [(0, 400)]
    assert os.fstat(thief.fd).st_ino != os.fstat(victim.fd).st_ino
    assert thief.owns() and not victim.owns()
    victim.write(400, b"w" * 100)  # the paused writer wakes up: its bytes go to its own inode
    assert thief.data_path.read_bytes() == b"v" * 400
    published: list[Path] = []
    with pytest.raises(LostPartial):
        victim.publish(published.append)
    assert published == [], "a writer that lost its partial published it"
    with pytest.raises(LostPartial):
        victim.write(500, b"w")
    victim.close()
    assert thief.owns()
    assert [p.name for p in tmp_path.glob("*.incomplete")] == [thief.data_path.name]
    thief.discard()
    assert not list(tmp_path.iterdir())


def test_a_writer_that_lost_its_lock_stops_at_its_next_journal_write(tmp_path: Path) -> None:
    victim = claim(tmp_path, FILE, _watch())
    assert isinstance(victim, Partial)
    victim.names.lock.unlink()  # as a breaker does
    victim.mark_done(0, 10)
    with pytest.raises(LostPartial):
        victim.flush_journal()
    assert not victim.data_path.exists() and not victim.journal_path.exists()
    victim.close()


# -- owners on this machine ----------------------------------------------------------------------


def test_partial_of_a_live_local_process_is_left_alone_until_it_dies(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        boot, pidns = kernel_view()
        start = _start_ticks(child.pid)
        owner = Owner("hfpull-child", "h", boot, pidns, child.pid, start)
        _plant(tmp_path, owner, done=[[0, 600]])
        assert claim(tmp_path, FILE, _watch()) is BUSY
    finally:
        child.kill()
        child.wait()
    partial = claim(tmp_path, FILE, _watch())  # dead: taken over at once, no lease to wait
    assert isinstance(partial, Partial) and partial.done.ranges == [(0, 600)]
    partial.discard()


def test_a_pid_reused_after_a_reboot_is_not_mistaken_for_the_owner(tmp_path: Path) -> None:
    """The journal names our own live pid, but from another boot: judged by heartbeat."""
    me = this_process("hfpull-before-reboot")
    rebooted = Owner(me.token, me.host, "an-earlier-boot", me.pidns, os.getpid(), me.start)
    _plant(tmp_path, rebooted, done=[[0, 600]])
    now, watch = _fake_clock()
    assert claim(tmp_path, FILE, watch) is BUSY
    now[0] += 10
    partial = claim(tmp_path, FILE, watch)
    assert isinstance(partial, Partial) and partial.done.ranges == [(0, 600)]
    partial.discard()


def test_racing_threads_one_owner_no_shared_inode(tmp_path: Path) -> None:
    """Threads race for an abandoned partial: exactly one holds the blob, by its own inode."""
    for round_ in range(20):
        directory = tmp_path / str(round_)
        _plant(directory, _dead_owner(f"hfpull-dead{round_}"), done=[[0, 600]])
        results: list[object] = []
        barrier = threading.Barrier(6)

        def race(directory: Path = directory) -> None:
            barrier.wait()
            results.append(claim(directory, FILE, _watch()))

        threads = [threading.Thread(target=race) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 6, "a claimant crashed"
        partials = [r for r in results if isinstance(r, Partial)]
        owning = [p for p in partials if p.owns()]
        assert len(owning) == 1 and owning[0].done.ranges == [(0, 600)]
        _no_shared_inodes(directory)
        for loser in set(partials) - set(owning):  # broke the same dead lock a moment earlier
            with pytest.raises(LostPartial):
                loser.heartbeat()
            loser.close()
        owning[0].discard()


# -- what is on disk -----------------------------------------------------------------------------


def test_journal_for_another_blob_is_not_trusted(tmp_path: Path) -> None:
    names = _plant(tmp_path, _dead_owner(), done=[[0, 600]])
    record = json.loads(names.journal("hfpull-dead").read_text())
    names.journal("hfpull-dead").write_text(json.dumps({**record, "size": 999}))
    partial = claim(tmp_path, FILE, _watch())
    assert isinstance(partial, Partial) and partial.done.total() == 0
    assert [p.name for p in tmp_path.glob("*.incomplete")] == [partial.data_path.name]
    partial.discard()


def test_a_partial_of_an_older_hfpull_is_resumed_by_copy(tmp_path: Path) -> None:
    old = tmp_path / f"{FILE.etag}.hfpull-old.incomplete"
    old.write_bytes(b"o" * 600)
    (tmp_path / (old.name + ".journal")).write_text(json.dumps({
        "format": 1, "etag": FILE.etag, "size": FILE.size, "done": [[0, 600]],
        "host": "h", "pid": 1, "token": "hfpull-old", "updated": 0,
    }))  # fmt: skip
    partial = claim(tmp_path, FILE, _watch())
    assert isinstance(partial, Partial) and partial.done.ranges == [(0, 600)]
    assert partial.data_path.read_bytes() == b"o" * 600
    assert not old.exists()
    partial.discard()
    assert not list(tmp_path.iterdir())


def test_leftovers_of_dead_claims_are_removed_by_the_next_holder(tmp_path: Path) -> None:
    _plant(tmp_path, _dead_owner("hfpull-a"), done=[[0, 100]], locked=False)
    _plant(tmp_path, _dead_owner("hfpull-b"), done=[[0, 300]], locked=False)
    names = BlobNames(tmp_path, FILE.etag)
    names.data("hfpull-nojournal").write_bytes(b"n" * 900)  # never adopted: ranges unknown
    names.journal("hfpull-nodata").write_text("{}")
    partial = claim(tmp_path, FILE, _watch())
    assert isinstance(partial, Partial) and partial.done.ranges == [(0, 300)]
    partial.release()
    assert held_bytes(tmp_path, FILE) == 300
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.iterdir()) == [
        f"{partial.token}.incomplete",
        f"{partial.token}.incomplete.journal",
    ]
    again = claim(tmp_path, FILE, _watch())
    assert isinstance(again, Partial) and again.done.ranges == [(0, 300)]
    again.discard()


def test_prefix_hash_matches_whatever_order_ranges_land(tmp_path: Path) -> None:
    import hashlib
    import random

    from hfpull.engine.prefix_hash import PrefixHasher

    data = os.urandom(300_000)
    file = RemoteFile("w.bin", len(data), "a" * 40, hashlib.sha256(data).hexdigest())
    for seed in range(5):
        partial = claim(tmp_path / str(seed), file, _watch())
        assert isinstance(partial, Partial)
        hasher = PrefixHasher(file, partial)
        chunks = [(o, data[o : o + 7000]) for o in range(0, len(data), 7000)]
        random.Random(seed).shuffle(chunks)
        for offset, chunk in chunks:
            partial.write(offset, chunk)
            partial.mark_done(offset, offset + len(chunk))
            hasher.landed(offset, chunk)
        assert hasher.finish() == file.sha256
        partial.discard()


def test_the_journal_is_written_once_enough_bytes_landed_whatever_the_time(
    tmp_path: Path,
) -> None:
    """A kill loses at most JOURNAL_BYTES of work, even at rates where the time bound alone
    would leave tens of MB unrecorded."""
    big = RemoteFile("big.bin", 4 * JOURNAL_BYTES, "c" * 40, "d" * 64)
    partial = claim(tmp_path, big, _watch())
    assert isinstance(partial, Partial)
    try:
        chunk = 64 << 10
        for offset in range(0, JOURNAL_BYTES + JOURNAL_BYTES // 2, chunk):
            partial.write(offset, b"x" * chunk)
            partial.mark_done(offset, offset + chunk)
            partial.flush_if_due(interval=3600)  # the time bound never fires here
        assert held_bytes(tmp_path, big) == JOURNAL_BYTES  # recorded then, not only at the end
    finally:
        partial.discard()
