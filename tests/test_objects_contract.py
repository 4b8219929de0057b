"""The ObjectStore contract: what the S3 blob store, fleet leases and shared metadata rely on.

Every test runs against each implementation in ``STORES``: the in-memory one (tests only) and
the S3 one against a real SeaweedFS started by the suite (``seaweed`` in tests/conftest.py).
An implementation that passes here is one the layers above may be built on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hfpull.blobstore.objects import ObjectStore, PreconditionFailed, StoreUnavailable
from hfpull.errors import NotFoundError
from tests.memory_objects import MIN_PART, MemoryObjectStore


def memory_store(request: pytest.FixtureRequest) -> ObjectStore:
    return MemoryObjectStore()


def s3_store(request: pytest.FixtureRequest) -> ObjectStore:
    store: ObjectStore = request.getfixturevalue("s3_objects")
    return store


STORES: dict[str, Callable[[pytest.FixtureRequest], ObjectStore]] = {
    "memory": memory_store,
    "s3": s3_store,
}


@pytest.fixture(params=sorted(STORES))
def objects(request: pytest.FixtureRequest) -> Iterator[ObjectStore]:
    yield STORES[request.param](request)


def test_put_get_head_and_delete(objects: ObjectStore) -> None:
    assert objects.head("a/b") is None
    assert objects.get("a/b") is None
    etag = objects.put("a/b", b"hello")
    info = objects.head("a/b")
    assert info is not None and (info.name, info.size, info.etag) == ("a/b", 5, etag)
    assert objects.get("a/b") == (b"hello", etag)
    objects.delete("a/b")
    objects.delete("a/b")  # already gone: no error
    assert objects.head("a/b") is None


def test_if_none_match_lets_exactly_one_writer_create(objects: ObjectStore) -> None:
    first = objects.put("lease", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        objects.put("lease", b"two", if_none_match=True)
    assert objects.get("lease") == (b"one", first)


def test_if_match_renews_only_the_version_it_read(objects: ObjectStore) -> None:
    first = objects.put("lease", b"one")
    second = objects.put("lease", b"two", if_match=first)
    assert second != first
    with pytest.raises(PreconditionFailed):
        objects.put("lease", b"three", if_match=first)  # stale: someone renewed meanwhile
    assert objects.get("lease") == (b"two", second)
    with pytest.raises(PreconditionFailed):
        objects.put("absent", b"x", if_match=first)


def test_get_range_streams_exactly_the_asked_bytes(objects: ObjectStore, tmp_path: Path) -> None:
    body = bytes(range(256)) * 10_000
    path = tmp_path / "blob"
    path.write_bytes(body)
    objects.upload_file("blobs/x", str(path))
    assert b"".join(objects.get_range("blobs/x", 0, len(body))) == body
    assert b"".join(objects.get_range("blobs/x", 1000, 1_234_567)) == body[1000:1_234_567]
    with pytest.raises(NotFoundError):
        b"".join(objects.get_range("blobs/absent", 0, 1))


def test_upload_file_if_none_match_keeps_the_first(objects: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"first")
    objects.upload_file("k", str(path), if_none_match=True)
    path.write_bytes(b"second")
    with pytest.raises(PreconditionFailed):
        objects.upload_file("k", str(path), if_none_match=True)
    assert objects.get("k") is not None and objects.get("k")[0] == b"first"  # type: ignore[index]


def test_scan_lists_by_prefix_in_name_order(objects: ObjectStore) -> None:
    for name in ("p/b", "p/a", "q/a", "p/c/d"):
        objects.put(name, name.encode())
    assert [info.name for info in objects.scan("p/")] == ["p/a", "p/b", "p/c/d"]
    assert [info.size for info in objects.scan("q/")] == [3]
    assert list(objects.scan("none/")) == []


def test_multipart_is_invisible_until_complete(objects: ObjectStore) -> None:
    part1 = b"a" * MIN_PART
    part2 = b"tail"
    upload = objects.create_multipart("big")
    etags = [
        objects.upload_part("big", upload, 1, part1),
        objects.upload_part("big", upload, 2, part2),
    ]
    assert objects.head("big") is None
    assert ("big", upload) in list(objects.list_multipart(""))
    objects.complete_multipart("big", upload, [(1, etags[0]), (2, etags[1])])
    assert b"".join(objects.get_range("big", 0, len(part1) + 4)) == part1 + part2
    assert list(objects.list_multipart("big")) == []


def test_upload_part_copy_composes_from_other_objects(objects: ObjectStore) -> None:
    chunk = bytes(range(256)) * (MIN_PART // 256)
    objects.put("chunks/0", chunk)
    objects.put("chunks/1", b"end")
    upload = objects.create_multipart("whole")
    one = objects.upload_part_copy("whole", upload, 1, "chunks/0", 0, len(chunk))
    two = objects.upload_part_copy("whole", upload, 2, "chunks/1", 1, 3)
    objects.complete_multipart("whole", upload, [(1, one), (2, two)], if_none_match=True)
    assert b"".join(objects.get_range("whole", 0, len(chunk) + 2)) == chunk + b"nd"


def test_complete_if_none_match_loses_to_an_existing_object(objects: ObjectStore) -> None:
    objects.put("done", b"already")
    upload = objects.create_multipart("done")
    etag = objects.upload_part("done", upload, 1, b"late")
    with pytest.raises(PreconditionFailed):
        objects.complete_multipart("done", upload, [(1, etag)], if_none_match=True)
    objects.abort_multipart("done", upload)
    objects.abort_multipart("done", upload)  # already gone: no error
    assert objects.get("done") is not None and objects.get("done")[0] == b"already"  # type: ignore[index]


def test_a_down_memory_store_raises_store_unavailable() -> None:
    store = MemoryObjectStore()
    store.put("k", b"v")
    store.down = True
    with pytest.raises(StoreUnavailable):
        store.head("k")
    store.down = False
    assert store.head("k") is not None
