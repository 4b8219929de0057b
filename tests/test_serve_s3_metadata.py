"""Metadata records shared on an object store: two caches (two replicas) on one in-memory
store, a fake upstream whose branch moves, and a clock the test turns."""

from __future__ import annotations

import types

import pytest

from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.serve import metadata
from hfpull.serve.metadata import MetadataCache
from hfpull.serve.records import ObjectRecords
from tests.memory_objects import MemoryObjectStore

REPO = RepoRef("org/m")
OLD, NEW = "a" * 40, "b" * 40
TTL = 600.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class _Upstream:
    def __init__(self) -> None:
        self.commit = OLD
        self.asked = 0

    def resolve(self, repo: RepoRef, revision: str) -> Snapshot:
        self.asked += 1
        return Snapshot(repo, revision, self.commit, (RemoteFile("x", 1, "c" * 40),))

    def api(self, path_qs: str, form: bytes | None) -> tuple[int, bytes, dict[str, str]]:
        self.asked += 1
        return 200, self.commit.encode(), {"Content-Type": "application/json"}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    fake_time = types.SimpleNamespace(time=clock.time, monotonic=clock.monotonic)
    monkeypatch.setattr(metadata, "time", fake_time)
    return clock


def _replica(objects: MemoryObjectStore, upstream: _Upstream) -> MetadataCache:
    records = ObjectRecords(objects, "meta/")
    return MetadataCache(records, TTL, False, upstream.resolve, upstream.api)


def test_replicas_share_a_branch_answer_and_agree_once_it_moved(clock: _Clock) -> None:
    objects, upstream = MemoryObjectStore(), _Upstream()
    a, b = _replica(objects, upstream), _replica(objects, upstream)
    assert a.snapshot(REPO, "main")[0].commit == OLD
    assert b.snapshot(REPO, "main") == (a.snapshot(REPO, "main")[0], "HIT")
    assert upstream.asked == 1  # b read a's record: nobody asked twice
    upstream.commit = NEW
    clock.now += TTL / 2
    assert b.snapshot(REPO, "main")[0].commit == OLD  # within the TTL: as agreed
    clock.now += TTL / 2 + 1  # both copies expired
    assert a.snapshot(REPO, "main")[0].commit == NEW and upstream.asked == 2
    clock.now += 1
    snapshot, cache = b.snapshot(REPO, "main")  # expired in b's memory: re-read, not upstream
    assert (snapshot.commit, cache, upstream.asked) == (NEW, "HIT", 2)
    clock.now += TTL  # expired everywhere: b is the one to ask now
    assert b.snapshot(REPO, "main")[1] == "MISS" and upstream.asked == 3


def test_raw_api_answers_are_shared_the_same_way(clock: _Clock) -> None:
    objects, upstream = MemoryObjectStore(), _Upstream()
    a, b = _replica(objects, upstream), _replica(objects, upstream)
    path = "/api/models/org/m/revision/main"
    assert a.api(path, "main").body == OLD.encode()
    assert (b.api(path, "main").cache, upstream.asked) == ("HIT", 1)
    upstream.commit = NEW
    clock.now += TTL + 1
    assert a.api(path, "main").cache == "MISS"
    assert b.api(path, "main").body == NEW.encode() and upstream.asked == 2


def test_with_the_store_down_memory_and_upstream_still_answer(clock: _Clock) -> None:
    objects, upstream = MemoryObjectStore(), _Upstream()
    a = _replica(objects, upstream)
    assert a.snapshot(REPO, "main")[1] == "MISS"
    objects.down = True
    assert a.snapshot(REPO, "main")[1] == "HIT"  # fresh in memory
    clock.now += TTL + 1
    upstream.commit = NEW
    snapshot, cache = a.snapshot(REPO, "main")  # cannot re-read or save: asks upstream
    assert (snapshot.commit, cache) == (NEW, "MISS")
    assert a.snapshot(REPO, "v1")[0].commit == NEW  # a new revision too, kept in memory
    objects.down = False
    assert objects.get(ObjectRecords(objects)._name("snap/model/org/m/v1")) is None


def test_known_snapshots_lists_the_shared_snapshots_only(clock: _Clock) -> None:
    objects, upstream = MemoryObjectStore(), _Upstream()
    a, b = _replica(objects, upstream), _replica(objects, upstream)
    a.snapshot(REPO, "main")
    a.api("/api/models/org/m", "main")
    [(snapshot, saved)] = list(b.known_snapshots())
    assert (snapshot.commit, snapshot.revision, saved) == (OLD, "main", clock.now)
