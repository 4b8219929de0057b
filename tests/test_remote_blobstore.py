"""Blobs on an object store (ObjectBlobStore) and the local disk cache in front of it
(CachedBlobStore), on the in-memory store; shared metadata records' names."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from hfpull.blobstore import remote
from hfpull.blobstore.cached import CachedBlobStore
from hfpull.blobstore.local import LocalBlobStore
from hfpull.blobstore.objects import StoreUnavailable
from hfpull.blobstore.remote import ObjectBlobStore
from hfpull.errors import UnsafeInputError
from hfpull.serve.records import ObjectRecords
from tests.conftest import until
from tests.memory_objects import MemoryObjectStore

MiB = 1 << 20


def _staged(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    key = hashlib.sha256(data).hexdigest()
    staged = tmp_path / f"{key}.staged"
    staged.write_bytes(data)
    return key, staged


def test_a_put_blob_is_one_object_under_blobs_and_reads_back_byte_exact(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = ObjectBlobStore(objects, tmp_path / "partials")
    data = os.urandom(3 * MiB + 7)
    key, staged = _staged(tmp_path, data)
    store.put(key, staged)
    assert not staged.exists()  # moved: the object store holds it now
    assert objects.get(f"blobs/{key[:2]}/{key}") is not None
    assert store.size(key) == len(data)
    assert store.local_path(key) is None
    for start, end in [(0, len(data)), (0, 1), (MiB - 1, MiB + 1), (len(data) - 5, len(data))]:
        assert store.read(key, start, end) == data[start:end]
    assert list(store.keys()) == [(key, len(data))]
    assert store.partial_dir == tmp_path / "partials"


def test_sizes_are_remembered_and_absence_only_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = MemoryObjectStore()
    key, staged = _staged(tmp_path, b"shared blob")
    briefly = ObjectBlobStore(objects, tmp_path)
    assert briefly.size(key) is None
    heads = objects.calls.count("head")
    assert briefly.size(key) is None and objects.calls.count("head") == heads  # reused
    monkeypatch.setattr(remote, "NEGATIVE_TTL", 0.0)
    mine = ObjectBlobStore(objects, tmp_path)
    assert mine.size(key) is None
    ObjectBlobStore(objects, tmp_path).put(key, staged)  # another replica stores it
    assert mine.size(key) == len(b"shared blob")  # asked again: not stuck on "absent"
    heads = objects.calls.count("head")
    assert mine.size(key) == len(b"shared blob") and objects.calls.count("head") == heads


def test_a_down_store_raises_store_unavailable(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = ObjectBlobStore(objects, tmp_path)
    key, staged = _staged(tmp_path, b"x" * 100)
    objects.down = True
    with pytest.raises(StoreUnavailable):
        store.size(key)
    with pytest.raises(StoreUnavailable):
        store.put(key, staged)
    assert staged.exists()  # not uploaded: the verified file stays
    with pytest.raises(StoreUnavailable):
        store.read(key, 0, 10)
    with pytest.raises(StoreUnavailable):
        list(store.keys())


def test_touch_writes_a_use_marker_once_per_interval_and_usage_reads_it(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = ObjectBlobStore(objects, tmp_path)
    key, staged = _staged(tmp_path, b"used blob")
    store.put(key, staged)
    stored_at = objects.head(f"blobs/{key[:2]}/{key}")
    assert stored_at is not None
    for _ in range(20):
        store.touch(key)
    until(lambda: objects.head(f"used/{key}") is not None, "the use marker")
    assert objects.calls.count("put") == 1  # twenty hits, one marker
    marker = objects.head(f"used/{key}")
    assert marker is not None
    [(used_key, size, last_use)] = list(store.usage())
    assert (used_key, size) == (key, len(b"used blob"))
    assert last_use == max(stored_at.modified, marker.modified)


def test_delete_removes_the_blob_and_its_marker(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = ObjectBlobStore(objects, tmp_path)
    key, staged = _staged(tmp_path, b"doomed")
    store.put(key, staged)
    store.touch(key)
    until(lambda: objects.head(f"used/{key}") is not None, "the use marker")
    assert store.delete(key) is True
    assert store.size(key) is None and list(objects.scan("")) == []
    assert store.delete(key) is False


def test_names_that_are_not_blobs_are_neither_listed_nor_accepted(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = ObjectBlobStore(objects, tmp_path)
    objects.put("blobs/zz/" + "a" * 64, b"misfiled")  # wrong folder
    objects.put("blobs/aa/notahash", b"junk")
    objects.put("leases/" + "a" * 64, b"{}")
    assert list(store.keys()) == [] and list(store.usage()) == []
    with pytest.raises(UnsafeInputError):
        store.size("../../leases/x")


def test_record_names_are_hashes_under_meta_whatever_the_key() -> None:
    records = ObjectRecords(MemoryObjectStore(), "meta/")
    for key in ["snap/model/org/m/main", "snap/../../blobs/x", "api//api/models/x?a=../b\n", "?"]:
        name = records._name(key)
        assert re.fullmatch(r"meta/[a-z]{1,16}/[0-9a-f]{64}\.json", name), name
    records.save("snap/model/org/m/main", b'{"k": 1}')
    assert records.load("snap/model/org/m/main") == b'{"k": 1}'
    assert records.load("snap/model/org/m/other") is None
    assert list(records.scan("snap", b"")) == [b'{"k": 1}']


# -- the local cache in front -----------------------------------------------------------


def _cached(tmp_path: Path, objects: MemoryObjectStore, cap: int) -> CachedBlobStore:
    local = LocalBlobStore(tmp_path / "local")
    return CachedBlobStore(ObjectBlobStore(objects, local.partial_dir), local, cap)


def test_a_filled_blob_is_uploaded_and_kept_locally(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = _cached(tmp_path, objects, 10 * MiB)
    data = os.urandom(MiB)
    key, staged = _staged(tmp_path, data)
    store.put(key, staged)
    found = objects.get(f"blobs/{key[:2]}/{key}")
    assert found is not None and found[0] == data
    path = store.local_path(key)
    assert path is not None and path.read_bytes() == data
    assert store.used == len(data) and store.copies == 0


def test_a_blob_read_from_the_store_is_copied_locally_once_then_served_when_it_is_down(
    tmp_path: Path,
) -> None:
    objects = MemoryObjectStore()
    data = os.urandom(2 * MiB + 3)
    key, staged = _staged(tmp_path, data)
    ObjectBlobStore(objects, tmp_path).put(key, staged)  # another replica filled it
    store = _cached(tmp_path, objects, 10 * MiB)
    assert store.size(key) == len(data)
    assert store.local_path(key) is None  # not yet: the copy starts now
    for _ in range(5):
        store.local_path(key)
    until(lambda: store.copies == 1, "the local copy")
    assert store.local.size(key) == len(data)
    objects.down = True
    assert store.size(key) == len(data)
    path = store.local_path(key)
    assert path is not None and path.read_bytes() == data
    assert store.read(key, MiB, MiB + 10) == data[MiB : MiB + 10]
    other, _ = _staged(tmp_path, b"not here")
    with pytest.raises(StoreUnavailable):
        store.size(other)


def test_the_local_cache_evicts_least_recently_used_copies_never_the_shared_blobs(
    tmp_path: Path,
) -> None:
    objects = MemoryObjectStore()
    store = _cached(tmp_path, objects, 3 * MiB)
    keys = []
    for age in (300, 200, 100):  # oldest first
        key, staged = _staged(tmp_path, os.urandom(MiB))
        store.put(key, staged)
        os.utime(store.local.path(key), (time.time() - age,) * 2)
        keys.append(key)
    key, staged = _staged(tmp_path, os.urandom(MiB))
    store.put(key, staged)  # 4 MiB > 3 MiB: down to 90 % of the cap, oldest first
    assert [store.local.size(k) is not None for k in keys] == [False, False, True]
    assert store.local.size(key) is not None and store.used == 2 * MiB
    assert sorted(k for k, _ in store.keys()) == sorted([*keys, key])  # all still shared


def test_a_blob_larger_than_the_local_cache_is_only_in_the_shared_store(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = _cached(tmp_path, objects, MiB)
    data = os.urandom(MiB + 1)
    key, staged = _staged(tmp_path, data)
    store.put(key, staged)
    assert store.local.size(key) is None and store.size(key) == len(data)
    assert store.local_path(key) is None
    assert store.read(key, 0, len(data)) == data
    assert store.copies == 0 and store.used == 0


def test_a_restart_counts_the_local_cache_and_drops_half_done_copies(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = _cached(tmp_path, objects, 10 * MiB)
    key, staged = _staged(tmp_path, os.urandom(MiB))
    store.put(key, staged)
    leftover = tmp_path / "local" / "cache-copies" / f"{key}.dead"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    again = _cached(tmp_path, objects, 10 * MiB)
    assert again.used == MiB and not leftover.exists()


def test_a_copy_that_does_not_hash_to_its_key_is_not_kept(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    data = os.urandom(MiB)
    key = hashlib.sha256(data).hexdigest()
    objects.put(remote.blob_name(key), bytes(reversed(data)))  # same size, wrong bytes
    store = _cached(tmp_path, objects, 10 * MiB)
    assert store.local_path(key) is None
    until(lambda: store.rejected == 1, "the copy checked")
    assert store.copies == 0 and store.local.size(key) is None and store.used == 0
    assert store.local_path(key) is None  # still served from the store, never from a bad copy
