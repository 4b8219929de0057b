"""Eviction without sockets: pins, the size parser, LRU order over a LocalBlobStore."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from hfpull.blobstore.local import TOUCH_INTERVAL, LocalBlobStore
from hfpull.cli.sizes import parse_size
from hfpull.errors import UsageError
from hfpull.models import RemoteFile, RepoRef
from hfpull.serve.eviction import LOW_WATER, Evictor
from hfpull.serve.pins import Pins

NOW = time.time()


def _put(store: LocalBlobStore, tmp_path: Path, data: bytes, age: float = 0.0) -> str:
    """Store ``data`` under its hash, last used ``age`` seconds ago."""
    key = hashlib.sha256(data).hexdigest()
    staged = tmp_path / f"{key}.staged"
    staged.write_bytes(data)
    store.put(key, staged)
    os.utime(store.path(key), (NOW - age, NOW - age))
    return key


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("123456", 123456),
        ("500G", 500 * 10**9),
        ("500GB", 500 * 10**9),
        ("500 gb", 500 * 10**9),
        ("10GiB", 10 * 2**30),
        ("1.5T", 1_500_000_000_000),
        ("2k", 2000),
        ("1MiB", 2**20),
        (".5MB", 500_000),
    ],
)
def test_sizes_read_as_documented(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "12XB", "1.2.3G", "-5G", "0", "0.0001"])
def test_a_bad_size_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_size(text)
    assert "--max-cache-size" in raised.value.message and "\n" not in raised.value.message


def test_a_pinned_blob_cannot_be_evicted_and_a_pin_waits_for_a_delete_in_progress() -> None:
    pins = Pins()
    pins.pin("a")
    pins.pin("a")
    with pins.evicting("a") as free:
        assert not free
    assert not pins.unpin("a")  # one pin left
    with pins.evicting("a") as free:
        assert not free
    assert pins.unpin("a")  # the last one
    taken = threading.Event()
    with pins.evicting("a") as free:
        assert free
        waiter = threading.Thread(target=lambda: (pins.pin("a"), taken.set()))
        waiter.start()
        assert not taken.wait(0.2)  # blocked while the blob is being deleted
        with pins.evicting("a") as again:
            assert not again  # one eviction at a time
    assert taken.wait(5) and pins.count("a") == 1
    waiter.join()


def test_touch_records_a_use_at_most_once_per_interval(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    old = _put(store, tmp_path, b"old", age=TOUCH_INTERVAL + 5)
    recent = _put(store, tmp_path, b"recent", age=TOUCH_INTERVAL / 2)
    store.touch(old)
    store.touch(recent)
    uses = {key: used for key, _, used in store.usage()}
    assert uses[old] > NOW - 5  # moved to now
    assert uses[recent] == pytest.approx(NOW - TOUCH_INTERVAL / 2)  # not rewritten
    store.touch("f" * 64)  # absent (evicted meanwhile): nothing happens


def test_a_pass_evicts_least_recently_used_unpinned_blobs_down_to_the_low_water_mark(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path / "store")
    keys = [_put(store, tmp_path, bytes([i]) * 1000, age=1000 - i) for i in range(10)]
    lines: list[str] = []
    evictor = Evictor(store, cap=10_000, log=lines.append, worker=False)  # exactly full: no pass
    assert evictor.used == 10_000 and evictor.run_pass() is None
    evictor.store.put(*_staged(tmp_path, b"x" * 1500))  # 11.5 kB > cap
    evictor.pins.pin(keys[0])  # the oldest is in use
    report = evictor.run_pass()
    assert report is not None
    left = {key for key, _ in store.keys()}
    # down to <= 9000 bytes: the oldest three unpinned ones go, the pinned oldest stays
    assert keys[0] in left and not {keys[1], keys[2], keys[3]} & left
    assert set(keys[4:]) <= left
    assert report.evicted == 3 and report.freed == 3000 and report.pinned == 1
    assert evictor.used == 8500 <= LOW_WATER * 10_000
    assert "3 blobs evicted" in lines[-1] and "in use kept" in lines[-1]


def test_a_use_moves_a_blob_to_the_back_of_the_line(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    a = _put(store, tmp_path, b"a" * 1000, age=3000)
    b = _put(store, tmp_path, b"b" * 1000, age=2000)
    evictor = Evictor(store, cap=2500, log=lambda line: None, worker=False)
    evictor.store.touch(a)
    evictor.store.put(*_staged(tmp_path, b"c" * 1000))
    evictor.run_pass()
    left = {key for key, _ in store.keys()}
    assert a in left and b not in left


def test_a_fill_counts_toward_the_cap_from_its_start_and_is_pinned_until_it_ends(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path / "store")
    old = _put(store, tmp_path, b"o" * 1000, age=100)
    evictor = Evictor(store, cap=1500, log=lambda line: None, worker=False)
    key, staged = _staged(tmp_path, b"n" * 1000)
    with evictor.filling(RemoteFile("n.bin", 1000, key)):
        assert evictor.used == 2000 and evictor.pins.count(key) == 1
        evictor.run_pass()  # room is made before the bytes land
        assert store.size(old) is None
        evictor.store.put(key, staged)
        assert evictor.used == 1000  # the reservation became the stored blob
    assert evictor.pins.count(key) == 0 and store.size(key) == 1000


def test_the_running_total_starts_from_the_store_and_follows_puts_and_deletes(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path / "store")
    a = _put(store, tmp_path, b"a" * 700)
    evictor = Evictor(store, cap=10**6, log=lambda line: None, worker=False)
    assert evictor.used == 700
    evictor.store.put(*_staged(tmp_path, b"b" * 300))
    evictor.store.put(*_staged(tmp_path, b"b" * 300))  # the same blob again: counted once
    assert evictor.used == 1000
    assert evictor.store.delete(a) and not evictor.store.delete(a)
    assert evictor.used == 300


def test_a_blob_larger_than_the_cap_goes_once_released(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    evictor = Evictor(store, cap=500, log=lambda line: None)  # with its worker thread
    key, staged = _staged(tmp_path, b"h" * 1000)
    with evictor.serving(key):
        evictor.store.put(key, staged)
        evictor.run_pass()
        assert store.size(key) == 1000  # served all the same
    deadline = time.monotonic() + 10  # released: the worker thread's pass removes it
    while store.size(key) is not None:
        assert time.monotonic() < deadline, "the released oversized blob was never evicted"
        time.sleep(0.01)


def _staged(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    key = hashlib.sha256(data).hexdigest()
    staged = tmp_path / f"{key}.staged"
    staged.write_bytes(data)
    return key, staged


def test_the_mirror_pins_and_reserves_a_fill_until_it_published(tmp_path: Path) -> None:
    from hfpull.serve.app import Mirror, ServeConfig
    from tests.conftest import fast_settings

    settings = fast_settings("http://127.0.0.1:9", tmp_path / "store")
    mirror = Mirror(ServeConfig(settings, max_cache_size=10**6))
    data = b"f" * 5000
    file = RemoteFile("f.bin", len(data), hashlib.sha256(data).hexdigest())
    seen: list[tuple[int, int]] = []

    def fake_fill(
        repo: object,
        commit: str,
        file: RemoteFile,
        store: object,
        on_claim: object,
        cancel: object = None,
    ) -> None:
        seen.append((mirror.evictor.pins.count(file.etag), mirror.evictor.used))
        key, staged = _staged(tmp_path, data)
        mirror.store.put(key, staged)
        seen.append((mirror.evictor.pins.count(file.etag), mirror.evictor.used))

    mirror.upstream.fill = fake_fill  # type: ignore[method-assign]
    mirror.fill_origin[file.etag] = (RepoRef("org/m"), "a" * 40)
    fill, started = mirror.fills.join(file)
    assert started and fill.done.wait(10) and fill.error is None
    assert seen == [(1, 5000), (1, 5000)]  # pinned throughout; reserved, then stored
    assert mirror.evictor.pins.count(file.etag) == 0
