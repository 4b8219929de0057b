"""hfpull serve --max-cache-size in front of the fake Hub: LRU order, pins, refills."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.conftest import RunCli
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB
from tests.serve_helpers import running_mirror


def _blobs(fake_hub: FakeHub, sizes: dict[str, int]) -> dict[str, bytes]:
    files = {f"{name}.safetensors": os.urandom(size) for name, size in sizes.items()}
    fake_hub.add_repo("org/m", files)
    return {name.removesuffix(".safetensors"): data for name, data in files.items()}


def _stored(store: Path, data: bytes) -> Path:
    key = hashlib.sha256(data).hexdigest()
    return store / "blobs" / key[:2] / key


def _get(mirror: str, name: str) -> requests.Response:
    response = requests.get(f"{mirror}/org/m/resolve/main/{name}.safetensors", timeout=60)
    response.raise_for_status()
    return response


def _passes(tmp_path: Path) -> list[str]:
    """The mirror's eviction log lines, so far."""
    (log,) = tmp_path.glob("serve-*.log")
    return [line for line in log.read_text().splitlines() if "eviction pass:" in line]


def _wait(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _filling(mirror: str) -> int:
    return int(requests.get(mirror + "/healthz", timeout=5).json()["filling"])


class SlowClient:
    """A GET read a little at a time: a tiny receive buffer, so the mirror's response stays
    in progress (and its blob pinned) until the test reads the rest."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)  # before connect
        sock.settimeout(60)
        sock.connect((parts.hostname or "", parts.port or 80))
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
        self.conn.sock = sock
        self.conn.request("GET", parts.path)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.received = self.response.read(64 << 10)

    def finish(self) -> bytes:
        self.received += self.response.read()
        self.conn.close()
        return self.received


def test_over_the_cap_the_least_recently_fetched_blob_goes_and_refills_byte_exact(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    blobs = _blobs(fake_hub, {"a": MiB, "b": MiB, "c": MiB})
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, "--max-cache-size", "2.5MiB", store=store) as url:
        for name in "abc":
            assert _get(url, name).content == blobs[name]
        _wait(lambda: _passes(tmp_path), "an eviction pass")
        assert not _stored(store, blobs["a"]).exists()
        assert _stored(store, blobs["b"]).exists() and _stored(store, blobs["c"]).exists()
        assert "1 blobs evicted, 1.0 MB freed" in _passes(tmp_path)[0]

        fake_hub.reset_log()  # a refill: the normal miss path, from the metadata kept
        again = _get(url, "a")
        assert again.headers["X-Cache"] == "MISS" and again.content == blobs["a"]
        assert MiB <= fake_hub.bytes_sent("/cdn/") <= 2 * MiB  # fetched once more
        assert not [r for r in fake_hub.requests if "/api/" in r.path]  # file list kept
        _wait(lambda: not _stored(store, blobs["b"]).exists(), "b, now the oldest, to go")
        assert _get(url, "a").headers["X-Cache"] == "HIT"


def test_a_hit_counts_as_a_use(tmp_path: Path, fake_hub: FakeHub) -> None:
    blobs = _blobs(fake_hub, {"a": MiB, "b": MiB, "c": MiB})
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, "--max-cache-size", "2.5MiB", store=store) as url:
        _get(url, "a")
        _get(url, "b")
        now = time.time()  # a and b were fetched minutes ago, a first
        os.utime(_stored(store, blobs["a"]), (now - 300, now - 300))
        os.utime(_stored(store, blobs["b"]), (now - 200, now - 200))
        assert _get(url, "a").headers["X-Cache"] == "HIT"  # a used again
        _get(url, "c")
        _wait(lambda: _passes(tmp_path), "an eviction pass")
        assert _stored(store, blobs["a"]).exists() and not _stored(store, blobs["b"]).exists()


def test_a_blob_being_streamed_is_not_evicted(tmp_path: Path, fake_hub: FakeHub) -> None:
    blobs = _blobs(fake_hub, {"a": 12 * MiB, "b": 12 * MiB, "c": 12 * MiB})
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, "--max-cache-size", "30MiB", store=store) as url:
        _get(url, "a")
        _get(url, "b")
        slow = SlowClient(f"{url}/org/m/resolve/main/a.safetensors")  # a HIT, in progress
        assert _get(url, "c").content == blobs["c"]  # its fill puts the store over the cap
        _wait(lambda: _passes(tmp_path), "an eviction pass")
        assert _stored(store, blobs["a"]).exists()  # the oldest, but in use: b went instead
        assert not _stored(store, blobs["b"]).exists()
        assert "1 blobs in use kept" in _passes(tmp_path)[0]
        assert slow.finish() == blobs["a"]
        assert _stored(store, blobs["a"]).exists()  # a and c fit: nothing more to evict


def test_a_blob_larger_than_the_cap_is_served_and_evicted_once_its_stream_ends(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    blobs = _blobs(fake_hub, {"big": 12 * MiB})
    store = tmp_path / "store"
    blob = _stored(store, blobs["big"])
    with running_mirror(tmp_path, fake_hub.url, "--max-cache-size", "8MiB", store=store) as url:
        slow = SlowClient(f"{url}/org/m/resolve/main/big.safetensors")  # a MISS: the fill
        _wait(lambda: _filling(url) == 0 and blob.exists(), "the fill to publish")
        _wait(lambda: any("in use kept" in p for p in _passes(tmp_path)), "a pass that kept it")
        assert blob.exists()  # the fill is over, its client still streams: kept
        assert slow.finish() == blobs["big"]
        _wait(lambda: not blob.exists(), "the released blob to be evicted")
        again = _get(url, "big")  # and it refills on demand
        assert again.headers["X-Cache"] == "MISS" and again.content == blobs["big"]


def test_a_fill_makes_room_before_its_bytes_land_and_is_never_evicted(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    blobs = _blobs(fake_hub, {"a": MiB, "b": MiB, "c": 4 * MiB})
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, "--max-cache-size", "5.8MiB", store=store) as url:
        _get(url, "a")
        _get(url, "b")
        fake_hub.reset_log()
        c_key = hashlib.sha256(blobs["c"]).hexdigest()
        fake_hub.faults.append(Fault("throttle", match=c_key, rate=MiB))  # c fills slowly
        with requests.get(f"{url}/org/m/resolve/main/c.safetensors", stream=True, timeout=60):
            pass  # its client leaves at once; the fill goes on alone
        _wait(lambda: not _stored(store, blobs["a"]).exists(), "a to make room for c")
        assert _filling(url) == 1  # room was made while c was still on its way
        _wait(lambda: _filling(url) == 0, "c's fill to end")
        fake_hub.faults.clear()
        c = _get(url, "c")
        assert c.headers["X-Cache"] == "HIT" and c.content == blobs["c"]
        assert 4 * MiB <= fake_hub.bytes_sent("/cdn/") <= 5 * MiB  # c fetched once
        assert _stored(store, blobs["b"]).exists()


def test_a_bad_size_is_a_usage_error(tmp_path: Path, run_cli: RunCli) -> None:
    done = run_cli("serve", "--max-cache-size", "12XB", "--cache-dir", str(tmp_path / "s"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--max-cache-size" in done.stderr
