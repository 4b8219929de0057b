"""Replicas of ``hfpull serve --store s3://…`` as separate processes on one real SeaweedFS.

The fleet's promise end to end: however many replicas and clients ask for one cold blob at
once, upstream sends it once; a holder killed mid-fill is replaced; a stopped store is a
quick 503 and the fleet recovers when it returns.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import requests

from tests.conftest import cli_env
from tests.fakehub import FakeHub
from tests.s3_helpers import SeaweedFS
from tests.serve_helpers import running_mirror

MiB = 1 << 20


def _replicas(
    stack: ExitStack, tmp_path: Path, hub: FakeHub, seaweed: SeaweedFS, bucket: str, count: int,
    procs: list[subprocess.Popen[bytes]] | None = None,
) -> list[str]:  # fmt: skip
    env = {**seaweed.env(), "HFPULL_SERVE_LEASE_TTL": "3"}
    return [
        stack.enter_context(
            running_mirror(
                tmp_path,
                hub.url,
                "--store",
                f"s3://{bucket}/fleet",
                store=tmp_path / f"replica-{i}",
                procs=procs,
                env=env,
            )
        )
        for i in range(count)
    ]


def _get(url: str) -> bytes:
    response = requests.get(f"{url}/org/m/resolve/main/big.bin", timeout=60)
    assert response.status_code == 200, (response.status_code, response.text[:200])
    return response.content


def test_three_replicas_and_ten_clients_fetch_a_cold_blob_from_upstream_once(
    tmp_path: Path, fake_hub: FakeHub, seaweed: SeaweedFS
) -> None:
    data = os.urandom(24 * MiB + 4321)
    fake_hub.add_repo("org/m", {"big.bin": data, "config.json": b"{}"})
    with ExitStack() as stack:
        urls = _replicas(stack, tmp_path, fake_hub, seaweed, seaweed.new_bucket(), 3)
        for url in urls:  # the listing first, so the clients race on the blob alone
            assert requests.head(f"{url}/org/m/resolve/main/config.json", timeout=30).ok
        fake_hub.reset_log()
        fake_hub.throttle_rate = 12 * MiB  # the fill takes ~2 s: everyone asks while it runs
        with ThreadPoolExecutor(10) as pool:
            bodies = list(pool.map(_get, [urls[i % 3] for i in range(10)]))
        assert all(body == data for body in bodies)
        sent = fake_hub.bytes_sent("/cdn/")
        assert len(data) <= sent <= len(data) + 2 * MiB, f"upstream sent {sent / len(data):.2f}×"
        fake_hub.reset_log()
        assert all(_get(url) == data for url in urls)  # hits, from the store
        assert fake_hub.bytes_sent("/cdn/") == 0


def test_a_holder_killed_mid_fill_is_replaced_and_the_clients_get_the_blob(
    tmp_path: Path, fake_hub: FakeHub, seaweed: SeaweedFS
) -> None:
    data = os.urandom(24 * MiB)
    fake_hub.add_repo("org/m", {"big.bin": data, "config.json": b"{}"})
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        urls = _replicas(stack, tmp_path, fake_hub, seaweed, seaweed.new_bucket(), 2, procs)
        for url in urls:
            assert requests.head(f"{url}/org/m/resolve/main/config.json", timeout=30).ok
        fake_hub.reset_log()
        fake_hub.throttle_rate = 6 * MiB  # ~4 s: time to kill the holder half way
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_try_get, urls[0])  # replica 0 takes the lease
            deadline = time.monotonic() + 20
            while fake_hub.bytes_sent("/cdn/") < len(data) // 3:
                assert time.monotonic() < deadline, "the fill did not start"
                time.sleep(0.02)
            follower = pool.submit(_get_resuming, urls[1])
            time.sleep(0.3)
            procs[0].send_signal(signal.SIGKILL)
            # replica 1 took the fill over; its client, cut at the change of generation,
            # resumes with a Range request as huggingface_hub does
            assert follower.result(90) == data
            first.result(90)  # the killed replica's client: cut, whatever it got
        sent = fake_hub.bytes_sent("/cdn/")
        assert sent <= 2 * len(data) + 2 * MiB, f"upstream sent {sent / len(data):.2f}×"
        fake_hub.reset_log()
        assert _get(urls[1]) == data and fake_hub.bytes_sent("/cdn/") == 0
        digest = hashlib.sha256(data).hexdigest()
        assert (
            requests.get(f"{urls[1]}/org/m/resolve/main/big.bin", timeout=30)
            .headers["ETag"]
            .strip('"')
            == digest
        )


def _get_resuming(url: str, attempts: int = 5) -> bytes:
    got = b""
    for _ in range(attempts):
        headers = {"Range": f"bytes={len(got)}-"} if got else {}
        try:
            with requests.get(
                f"{url}/org/m/resolve/main/big.bin", headers=headers, stream=True, timeout=60
            ) as response:
                assert response.status_code in (200, 206), response.status_code
                for chunk in response.iter_content(1 << 20):
                    got += chunk
            return got
        except requests.RequestException:
            continue
    raise AssertionError(f"not complete after {attempts} attempts ({len(got)} bytes)")


def _try_get(url: str) -> bytes | None:
    try:
        return requests.get(f"{url}/org/m/resolve/main/big.bin", timeout=60).content
    except requests.RequestException:
        return None


def test_a_stopped_store_is_a_quick_503_and_the_replica_recovers_when_it_returns(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    data = os.urandom(2 * MiB)
    fake_hub.add_repo("org/m", {"big.bin": data, "config.json": b"{}"})
    server = SeaweedFS(tmp_path / "own-store")
    server.start()
    try:
        with ExitStack() as stack:
            (url,) = _replicas(stack, tmp_path, fake_hub, server, server.new_bucket(), 1)
            assert requests.head(f"{url}/org/m/resolve/main/config.json", timeout=30).ok
            server.stop()
            started = time.monotonic()
            answer = requests.get(f"{url}/org/m/resolve/main/big.bin", timeout=60)
            took = time.monotonic() - started
            assert answer.status_code == 503, (answer.status_code, answer.text[:200])
            assert (
                answer.headers["X-Error-Code"] == "StoreUnavailable"
                and answer.headers["Retry-After"]
            )
            assert took < 15, f"the 503 took {took:.1f} s"
            health = requests.get(f"{url}/healthz", timeout=10)
            assert health.json()["store"] == "down"
            server.start()
            deadline = time.monotonic() + 30
            while (
                answer := requests.get(f"{url}/org/m/resolve/main/big.bin", timeout=60)
            ).status_code != 200:
                assert time.monotonic() < deadline, "no recovery after the store came back"
                time.sleep(0.5)
            assert answer.content == data
    finally:
        server.stop()


def test_two_edges_on_two_regional_replicas_fetch_each_blob_from_upstream_once(
    tmp_path: Path, fake_hub: FakeHub, seaweed: SeaweedFS
) -> None:
    """Tiers: edge mirrors (local disk) whose upstreams are two replicas of a regional fleet
    on the store, prewarmed at once from one lock file: single flight holds through the tier."""
    data = os.urandom(12 * MiB)
    fake_hub.add_repo("org/m", {"big.bin": data, "config.json": b"{}"})
    fake_hub.throttle_rate = 12 * MiB
    with ExitStack() as stack:
        regional = _replicas(stack, tmp_path, fake_hub, seaweed, seaweed.new_bucket(), 2)
        edges = [
            stack.enter_context(running_mirror(tmp_path, url, store=tmp_path / f"edge-{i}"))
            for i, url in enumerate(regional)
        ]
        lock = tmp_path / "m.lock"  # what the tier is to hold, pinned to a commit
        made = subprocess.run(
            [sys.executable, "-m", "hfpull", "lock", "org/m", "-o", str(lock)],
            env=cli_env(tmp_path, HF_ENDPOINT=edges[0]), capture_output=True, text=True,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr[-500:]
        fake_hub.reset_log()
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "hfpull", "prewarm", "--lock", str(lock), "--mirror", edge],
                env=cli_env(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for edge in edges
        ]
        for run in runs:
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err.decode()[-500:]
        sent = fake_hub.bytes_sent("/cdn/")
        assert len(data) <= sent <= len(data) + 2 * MiB, f"upstream sent {sent / len(data):.2f}×"
        fake_hub.reset_log()
        for edge in edges:
            assert requests.get(f"{edge}/org/m/resolve/main/big.bin", timeout=60).content == data
        assert fake_hub.bytes_sent("/cdn/") == 0
