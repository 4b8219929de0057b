"""Fleet single flight in-process: K mirrors on ONE shared in-memory object store are K
replicas. Real aiohttp servers and HTTP clients in front of the fake Hub; the fake Hub's byte
counts say how often the blob was fetched upstream."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from aiohttp import web

from hfpull.blobstore.objects import StoreUnavailable
from hfpull.blobstore.remote import blob_name
from hfpull.serve.answers import status_and_code
from hfpull.serve.app import MIRROR, Mirror, ServeConfig, create_app
from hfpull.serve.fleet import CHUNK
from tests.conftest import fast_settings
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB
from tests.memory_objects import MemoryObjectStore
from tests.serve_helpers import free_port

RATE = 6 * MiB  # per upstream connection; two connections: a 24 MiB fill takes about 2 s


class Replicas:
    """K mirrors sharing one object store, served from one event loop in a thread."""

    def __init__(self, hub: FakeHub, tmp_path: Path, objects: MemoryObjectStore, count: int):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []
        self.urls: list[str] = []
        self.mirrors: list[Mirror] = []
        for index in range(count):
            root = tmp_path / f"replica-{index}"
            settings = fast_settings(
                hub.url, root, connections=2, segment_size=MiB, min_split=MiB, read_timeout=5.0
            )
            app = create_app(ServeConfig(settings, lease_ttl=0.6), objects=objects)
            port = free_port()
            self.runners.append(self._call(self._start(app, port)))
            self.urls.append(f"http://127.0.0.1:{port}")
            self.mirrors.append(app[MIRROR])

    async def _start(self, app: web.Application, port: int) -> web.AppRunner:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def _call(self, coro: object) -> web.AppRunner:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def close(self) -> None:
        for runner in self.runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def idle(self, timeout: float = 30.0) -> None:
        """Wait until no replica has a fill running."""
        deadline = time.monotonic() + timeout
        while any(m.fills.active for m in self.mirrors):
            assert time.monotonic() < deadline, "fills did not end"
            time.sleep(0.02)


@pytest.fixture
def objects() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def replicas(tmp_path: Path, fake_hub: FakeHub, objects: MemoryObjectStore) -> Iterator[Replicas]:
    fleet = Replicas(fake_hub, tmp_path, objects, 3)
    try:
        yield fleet
    finally:
        fleet.close()


def fetch_resuming(url: str, size: int, attempts: int = 100) -> tuple[bytes, int]:
    """GET with Range resume after a cut, as huggingface_hub does; (body, cuts)."""
    data, cuts = bytearray(), 0
    for _ in range(attempts):
        headers = {"Range": f"bytes={len(data)}-"} if data else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=30) as response:
                if response.status_code >= 500:
                    cuts += 1
                    time.sleep(0.05)  # a client's retry backoff
                    continue
                assert response.status_code == (206 if data else 200), response.status_code
                for chunk in response.iter_content(1 << 16):
                    data += chunk
        except requests.RequestException:
            cuts += 1
            time.sleep(0.05)
            continue
        if len(data) == size:
            return bytes(data), cuts
    raise AssertionError(f"{url}: {len(data)} of {size} bytes after {attempts} attempts")


def clients(urls: list[str], per_replica: int, fn: Callable[[str], object]) -> list[object]:
    targets = [url for url in urls for _ in range(per_replica)]
    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(fn, targets))


def _leftovers(objects: MemoryObjectStore) -> list[str]:
    names = [i.name for i in objects.scan("fills/")] + [i.name for i in objects.scan("leases/")]
    return names + [name for name, _ in objects.list_multipart("")]


def test_three_replicas_and_many_clients_fetch_a_cold_blob_upstream_once(
    fake_hub: FakeHub, objects: MemoryObjectStore, replicas: Replicas
) -> None:
    data = os.urandom(2 * CHUNK + 5 * MiB)  # three chunks, the last a short one
    fake_hub.add_repo("org/big", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=RATE))
    urls = [f"{url}/org/big/resolve/main/w.safetensors" for url in replicas.urls]
    results = clients(urls, 5, lambda url: fetch_resuming(url, len(data)))
    assert all(body == data for body, _ in results)  # type: ignore[misc]
    assert sum(cuts for _, cuts in results) == 0  # type: ignore[misc]
    served = fake_hub.bytes_sent("/cdn/")
    assert len(data) <= served <= len(data) + MiB  # once (plus at most a retried piece)
    replicas.idle()
    stored = objects.get(blob_name(hashlib.sha256(data).hexdigest()))
    assert stored is not None and stored[0] == data
    assert _leftovers(objects) == []  # chunks, the lease and the upload are gone
    assert "upload_part_copy" in objects.calls and "upload_file" not in objects.calls
    assert sum(m.fills.started for m in replicas.mirrors) == 3  # one fill (or follow) each


def _wait_for_holder(replicas: Replicas, objects: MemoryObjectStore) -> Mirror:
    deadline = time.monotonic() + 20
    while True:
        if any(True for _ in objects.scan("fills/")):  # a first chunk is up
            holders = [m for m in replicas.mirrors if m.fills.fleet and m.fills.fleet.holding()]
            if holders:
                return holders[0]
        assert time.monotonic() < deadline, "no replica started a fleet fill"
        time.sleep(0.01)


def test_a_holder_that_dies_mid_fill_is_replaced_and_every_client_gets_the_blob(
    fake_hub: FakeHub, objects: MemoryObjectStore, replicas: Replicas
) -> None:
    data = os.urandom(2 * CHUNK + 5 * MiB)
    key = hashlib.sha256(data).hexdigest()
    fake_hub.add_repo("org/big", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=RATE))
    urls = [f"{url}/org/big/resolve/main/w.safetensors" for url in replicas.urls]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(clients, urls, 4, lambda url: fetch_resuming(url, len(data)))
        holder = _wait_for_holder(replicas, objects)
        assert holder.fills.fleet is not None and holder.fills.fleet.abandon(key)
        results = running.result(60)
    assert all(body == data for body, _ in results)  # type: ignore[misc]
    takeovers = sum(m.fills.fleet.takeovers for m in replicas.mirrors if m.fills.fleet)
    assert takeovers == 1
    served = fake_hub.bytes_sent("/cdn/")
    assert len(data) < served <= 2 * len(data) + MiB  # the dead fill's bytes, then once more
    replicas.idle()
    stored = objects.get(blob_name(key))
    assert stored is not None and stored[0] == data
    assert _leftovers(objects) == []  # the dead holder's chunks and upload were cleaned up


def test_when_the_holder_cannot_verify_no_client_gets_a_clean_end_and_nothing_is_stored(
    fake_hub: FakeHub, objects: MemoryObjectStore, replicas: Replicas
) -> None:
    data = os.urandom(CHUNK + 3 * MiB)
    fake_hub.add_repo("org/bad", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=RATE))
    fake_hub.faults.append(Fault("flip", match="/cdn/", after_bytes=CHUNK + 5))  # always
    urls = [f"{url}/org/bad/resolve/main/w.safetensors" for url in replicas.urls]

    def once(url: str) -> int:
        """Bytes received, or -1 for a clean, complete answer (which must never happen)."""
        received = 0
        try:
            with requests.get(url, stream=True, timeout=60) as response:
                if response.status_code != 200:
                    return received
                for chunk in response.iter_content(1 << 16):
                    received += len(chunk)
        except requests.RequestException:
            return received
        return -1 if received == len(data) else received

    received = clients(urls, 3, once)
    assert all(0 <= r < len(data) for r in received)  # type: ignore[operator]
    replicas.idle()
    assert objects.head(blob_name(hashlib.sha256(data).hexdigest())) is None
    assert _leftovers(objects) == []
    assert fake_hub.bytes_sent("/cdn/") <= 2 * len(data) + 2 * MiB  # the holder's two tries only


def test_a_stopped_store_is_an_error_answer_at_once_and_the_fleet_recovers_when_it_returns(
    fake_hub: FakeHub, objects: MemoryObjectStore, replicas: Replicas
) -> None:
    data = os.urandom(3 * MiB)
    fake_hub.add_repo("org/m", {"w.safetensors": data})
    url = f"{replicas.urls[1]}/org/m/resolve/main/w.safetensors"
    assert requests.head(url, timeout=10).status_code == 200  # metadata cached first
    objects.down = True
    expected = status_and_code(StoreUnavailable("down"))[0]
    answer = requests.get(url, timeout=5)  # answered, not hanging on the store
    assert answer.status_code == expected and answer.headers["X-Error-Code"]
    assert fake_hub.bytes_sent("/cdn/") == 0  # nothing fetched while nothing can be stored
    objects.down = False
    body, _ = fetch_resuming(url, len(data))
    assert body == data
    replicas.idle()
    assert objects.head(blob_name(hashlib.sha256(data).hexdigest())) is not None
