"""The mirror on an object store (the in-memory one), as a real aiohttp app on a socket in
front of the fake Hub: fills land in the store, hits stream from it byte-exact, a local cache
keeps serving when it is down, a miss then is a quick 503, and replicas share metadata."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from aiohttp import web

from hfpull.blobstore.cached import CachedBlobStore
from hfpull.serve.app import MIRROR, Mirror, ServeConfig, create_app
from tests.conftest import cli_env, fast_settings, until
from tests.fakehub import FakeHub
from tests.memory_objects import MemoryObjectStore
from tests.test_interop import run_python

MiB = 1 << 20


@contextmanager
def serving(
    tmp_path: Path,
    hub: FakeHub,
    objects: MemoryObjectStore,
    name: str = "replica",
    **config: object,
) -> Iterator[tuple[str, Mirror]]:
    """A mirror app on 127.0.0.1 (its own loop in a thread) on ``objects``; its URL."""
    settings = fast_settings(hub.url, tmp_path / name)
    app = create_app(ServeConfig(settings, **config), objects=objects)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, name=f"mirror-{name}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", app[MIRROR]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture
def repo(fake_hub: FakeHub) -> dict[str, bytes]:
    files = {"big.bin": os.urandom(2 * MiB + 12345), "small.txt": b"hello, store\n"}
    fake_hub.add_repo("org/m", dict(files))
    return files


def _get(url: str, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{url}/org/m/resolve/main/{path}", headers=headers, timeout=30)


def test_a_cold_fill_lands_in_the_store_and_hits_stream_from_it_byte_exact(
    tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]
) -> None:
    objects = MemoryObjectStore()
    big = repo["big.bin"]
    with serving(tmp_path, fake_hub, objects) as (url, mirror):
        first = _get(url, "big.bin")
        assert first.status_code == 200 and first.content == big
        assert first.headers["X-Cache"] == "MISS"
        etag = first.headers["ETag"].strip('"')
        stored = objects.get(f"blobs/{etag[:2]}/{etag}")
        assert stored is not None and stored[0] == big  # in the shared store
        assert not list((tmp_path / "replica").glob("blobs/*/*"))  # not on local disk
        assert [o.name for o in objects.scan("meta/snap/")]  # the file list is shared too
        assert _get(url, "small.txt").content == repo["small.txt"]
        fake_hub.reset_log()
        hit = _get(url, "big.bin")
        assert hit.status_code == 200 and hit.headers["X-Cache"] == "HIT" and hit.content == big
        size = len(big)
        for asked, (start, stop) in {
            "bytes=0-0": (0, 1),
            f"bytes={MiB - 3}-{MiB + 2}": (MiB - 3, MiB + 3),  # across a read boundary
            "bytes=1000-": (1000, size),
            "bytes=-10": (size - 10, size),
            f"bytes=5-{size + 100}": (5, size),
        }.items():
            part = _get(url, "big.bin", Range=asked)
            assert part.status_code == 206, asked
            assert part.content == big[start:stop], asked
            assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
        assert _get(url, "big.bin", Range=f"bytes={size}-").status_code == 416
        assert _get(url, "big.bin", **{"If-None-Match": f'"{etag}"'}).status_code == 304
        assert _get(url, "small.txt").headers["X-Cache"] == "HIT"
        assert fake_hub.requests == []  # hits never went upstream
        assert isinstance(mirror.objects, MemoryObjectStore)


def test_with_the_store_down_a_locally_cached_hit_serves_and_a_miss_is_a_quick_503(
    tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]
) -> None:
    objects = MemoryObjectStore()
    with serving(tmp_path, fake_hub, objects, local_cache_size=100 * MiB) as (url, mirror):
        assert _get(url, "big.bin").content == repo["big.bin"]  # filled: kept locally too
        assert requests.get(f"{url}/healthz", timeout=10).json()["store"] == "up"
        objects.down = True
        hit = _get(url, "big.bin")
        assert hit.status_code == 200 and hit.content == repo["big.bin"]
        part = _get(url, "big.bin", Range="bytes=10-19")
        assert part.status_code == 206 and part.content == repo["big.bin"][10:20]
        started = time.monotonic()
        miss = _get(url, "small.txt")
        assert miss.status_code == 503, miss.text
        assert miss.headers["X-Error-Code"] == "StoreUnavailable"
        assert int(miss.headers["Retry-After"]) > 0
        assert time.monotonic() - started < 10  # nowhere near a client's timeout
        assert mirror.fills.started == 1  # the miss started no fill it could not keep
        health = requests.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["store"] == "down"
        page = requests.get(url + "/", timeout=10)
        assert page.status_code == 200 and 'data-field="store-state">down' in page.text
        scrape = requests.get(url + "/metrics", timeout=10)
        assert scrape.status_code == 200 and "hfpull_store_up 0.0" in scrape.text
        objects.down = False
        until(
            lambda: requests.get(f"{url}/healthz", timeout=10).json()["store"] == "up",
            "the store back up",
        )
        assert _get(url, "small.txt").content == repo["small.txt"]


def test_a_replica_copies_a_hit_from_the_store_locally_and_serves_it_when_the_store_is_down(
    tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]
) -> None:
    objects = MemoryObjectStore()
    with serving(tmp_path, fake_hub, objects, "a") as (url_a, _):
        assert _get(url_a, "big.bin").content == repo["big.bin"]
    fake_hub.reset_log()
    with serving(tmp_path, fake_hub, objects, "b", local_cache_size=100 * MiB) as (url_b, b):
        first = _get(url_b, "big.bin")  # from the shared store; copied locally meanwhile
        assert first.headers["X-Cache"] == "HIT" and first.content == repo["big.bin"]
        assert fake_hub.bytes_sent("/cdn/") == 0
        assert isinstance(b.evictor.store, CachedBlobStore)
        cached = b.evictor.store
        until(lambda: cached.copies == 1, "the local copy")
        objects.down = True
        again = _get(url_b, "big.bin")
        assert again.status_code == 200 and again.content == repo["big.bin"]


def test_two_replicas_share_file_lists_and_agree_on_a_moved_branch_after_the_ttl(
    tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]
) -> None:
    objects = MemoryObjectStore()
    ttl = 2.0
    with (
        serving(tmp_path, fake_hub, objects, "a", metadata_ttl=ttl) as (url_a, _),
        serving(tmp_path, fake_hub, objects, "b", metadata_ttl=ttl) as (url_b, _),
    ):
        old = _get(url_a, "small.txt").headers["X-Repo-Commit"]
        fake_hub.reset_log()
        assert _get(url_b, "small.txt").headers["X-Repo-Commit"] == old
        assert fake_hub.requests == []  # b asked nobody: a's file list and blob are shared
        new = fake_hub.add_repo("org/m", {**repo, "small.txt": b"moved on\n"})
        until(
            lambda: _get(url_a, "small.txt").headers["X-Repo-Commit"] == new,
            "a seeing the moved branch",
        )
        fake_hub.reset_log()
        moved = _get(url_b, "small.txt")  # b's copy expired: it re-reads a's shared record
        assert moved.headers["X-Repo-Commit"] == new and moved.content == b"moved on\n"
        assert not [r for r in fake_hub.requests if "/api/" in r.path]


def test_huggingface_hub_downloads_through_a_mirror_on_the_object_store(
    tmp_path: Path, fake_hub: FakeHub, repo: dict[str, bytes]
) -> None:
    objects = MemoryObjectStore()
    with serving(tmp_path, fake_hub, objects) as (url, _):
        env = cli_env(
            tmp_path,
            HF_ENDPOINT=url,
            HF_HUB_CACHE=str(tmp_path / "hf-cache"),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        code = (
            "from huggingface_hub import hf_hub_download\n"
            "for name in ('big.bin', 'small.txt', 'big.bin'):\n"
            "    print(hf_hub_download('org/m', name))\n"
        )
        paths = run_python(code, env).splitlines()
        assert Path(paths[0]).read_bytes() == repo["big.bin"]
        assert Path(paths[1]).read_bytes() == repo["small.txt"]
        assert len(list(objects.scan("blobs/"))) == 2
