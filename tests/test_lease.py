"""Blob leases on the in-memory object store: one winner, takeover only after expiry, fencing."""

from __future__ import annotations

import threading
import time

import pytest

from hfpull.serve.lease import MAX_SKEW, LeaseLost, Leases, lease_name
from tests.memory_objects import MemoryObjectStore

KEY = "ab" * 32
TTL = 15.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_exactly_one_of_many_contenders_acquires() -> None:
    store = MemoryObjectStore()
    replicas = [Leases(store, TTL, holder=f"replica-{i}") for i in range(16)]
    barrier = threading.Barrier(len(replicas))
    won: list[str] = []

    def contend(leases: Leases) -> None:
        barrier.wait()
        if leases.acquire(KEY) is not None:
            won.append(leases.holder)

    threads = [threading.Thread(target=contend, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 1
    state = replicas[0].read(KEY)
    assert state is not None and state.holder == won[0] and state.ttl == TTL


def test_a_lease_is_taken_over_only_after_it_expired_and_by_one_contender() -> None:
    store = MemoryObjectStore()
    holder = Leases(store, TTL, holder="a").acquire(KEY)
    assert holder is not None
    clock = Clock()
    others = [Leases(store, TTL, holder=f"b{i}", monotonic=clock) for i in range(4)]
    seen = [leases.read(KEY) for leases in others]
    assert all(state is not None and state.gen == holder.gen for state in seen)
    clock.now += TTL - 1
    assert not any(leases.expired(state) for leases, state in zip(others, seen))  # type: ignore[arg-type]
    clock.now += 1
    assert all(leases.expired(state) for leases, state in zip(others, seen))  # type: ignore[arg-type]
    taken = [leases.take_over(state) for leases, state in zip(others, seen)]  # type: ignore[arg-type]
    winners = [lease for lease in taken if lease is not None]
    assert len(winners) == 1 and winners[0].gen != holder.gen
    after = others[0].read(KEY)
    assert after is not None and after.holder == winners[0].holder


def test_a_renewed_lease_is_not_expired_and_cannot_be_taken_with_the_old_etag() -> None:
    store = MemoryObjectStore()
    holder = Leases(store, TTL, holder="a").acquire(KEY)
    assert holder is not None
    clock = Clock()
    watcher = Leases(store, TTL, holder="b", monotonic=clock)
    old = watcher.read(KEY)
    assert old is not None
    clock.now += TTL / 2
    assert holder.renew()
    fresh = watcher.read(KEY)
    assert fresh is not None and fresh.etag != old.etag
    clock.now += TTL / 2 + 1  # the old ETag is a ttl old; the renewed one is not
    assert watcher.expired(old) and not watcher.expired(fresh)
    assert watcher.take_over(old) is None  # the holder renewed meanwhile: its lease stands
    assert not holder.lost.is_set()


def test_a_lease_long_dead_by_the_stores_clock_expires_at_first_sight() -> None:
    store = MemoryObjectStore()
    assert Leases(store, TTL, holder="a").acquire(KEY) is not None
    wall = Clock()
    wall.now = time.time() + TTL + MAX_SKEW + 1
    late = Leases(store, TTL, holder="b", wall=wall)
    state = late.read(KEY)
    assert state is not None and late.expired(state)
    skewed = Leases(store, TTL, holder="c", wall=lambda: time.time() + MAX_SKEW - 1)
    state = skewed.read(KEY)
    assert state is not None and not skewed.expired(state)  # within the skew: keep watching


def test_a_stale_holder_loses_its_renewal_and_leaves_the_new_lease_alone() -> None:
    store = MemoryObjectStore()
    clock = Clock()
    stale = Leases(store, TTL, holder="a").acquire(KEY)
    assert stale is not None
    taker = Leases(store, TTL, holder="b", monotonic=clock)
    state = taker.read(KEY)
    assert state is not None
    clock.now += TTL
    new = taker.take_over(state)
    assert new is not None
    assert not stale.renew()
    assert stale.lost.is_set()
    with pytest.raises(LeaseLost):
        stale.check()
    stale.release()  # must not delete the lease that is no longer its own
    current = taker.read(KEY)
    assert current is not None and current.holder == "b" and current.etag == new.etag


def test_release_deletes_the_lease_so_the_next_acquire_wins() -> None:
    store = MemoryObjectStore()
    first = Leases(store, TTL, holder="a")
    second = Leases(store, TTL, holder="b")
    lease = first.acquire(KEY)
    assert lease is not None and second.acquire(KEY) is None
    lease.release()
    assert store.head(lease_name(KEY)) is None
    with pytest.raises(LeaseLost):
        lease.check()
    assert second.acquire(KEY) is not None


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_the_renewal_thread_keeps_the_lease_alive_and_stops_on_release() -> None:
    store = MemoryObjectStore()
    lease = Leases(store, 0.3, holder="a").acquire(KEY)
    assert lease is not None
    first = lease.etag
    lease.start()
    _wait_for(lambda: store.calls.count("put") >= 4)  # acquire + at least three renewals
    assert lease.etag != first and not lease.lost.is_set()
    lease.check()  # renewed within its ttl, long after the first one passed
    lease.release()
    puts = store.calls.count("put")
    assert store.head(lease_name(KEY)) is None
    time.sleep(0.25)  # a renewal would have come by now (every 0.1 s)
    assert store.calls.count("put") == puts


def test_a_holder_that_cannot_reach_the_store_keeps_trying_then_gives_up_at_expiry() -> None:
    store = MemoryObjectStore()
    lease = Leases(store, 0.3, holder="a").acquire(KEY)
    assert lease is not None
    lease.start()
    store.down = True
    assert lease.lost.wait(5)  # no renewal went through within the ttl
    with pytest.raises(LeaseLost):
        lease.check()
    store.down = False
    lease.release()  # lost: the object is left for a takeover, never deleted blindly
    assert store.head(lease_name(KEY)) is not None


def test_a_short_store_outage_does_not_lose_the_lease() -> None:
    store = MemoryObjectStore()
    lease = Leases(store, 0.6, holder="a").acquire(KEY)
    assert lease is not None
    lease.start()
    tried = store.calls.count("put")
    store.down = True
    _wait_for(lambda: store.calls.count("put") > tried)  # a renewal was tried and failed
    store.down = False
    before = lease.etag
    _wait_for(lambda: lease.etag != before)  # retried and went through before expiry
    assert not lease.lost.is_set()
    lease.release()
