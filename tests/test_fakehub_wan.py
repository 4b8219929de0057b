"""The fake Hub's WAN model (tests/fakehub/wan.py): the shared link cap, latency, connections.

Timing checks are lower bounds only (a loaded machine is only ever slower).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.fakehub import FakeHub
from tests.fakehub.wan import TokenBucket

ROOT = Path(__file__).resolve().parent.parent


class FrozenClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the token bucket ------------------------------------------------------------------------


def test_bucket_spends_its_capacity_then_charges_waits_at_its_rate() -> None:
    clock = FrozenClock()
    bucket = TokenBucket(1000, capacity=100, clock=clock)
    assert bucket.reserve(100) == 0.0  # the saved-up burst
    assert bucket.reserve(100) == pytest.approx(0.1)  # 100 bytes at 1000 B/s
    assert bucket.reserve(50) == pytest.approx(0.15)  # queued behind the previous one
    clock.now += 0.15  # the debt is paid off, nothing saved
    assert bucket.reserve(10) == pytest.approx(0.01)
    clock.now += 10  # a long quiet spell saves at most `capacity`
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.001)


def test_bucket_default_capacity_is_20_ms_of_link_but_at_least_64_kib() -> None:
    assert TokenBucket(200_000_000).capacity == 4_000_000
    assert TokenBucket(1_000_000).capacity == 64 * 1024
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_bucket_is_shared_exactly_between_threads() -> None:
    """With the clock stopped, the waits handed out are exactly 1..N steps of debt, whatever
    the interleaving: no reservation is lost or counted twice."""
    clock = FrozenClock()
    bucket = TokenBucket(1000, capacity=10, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(250):
            wait = bucket.reserve(10)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(round(w * 100) for w in waits) == list(range(2000))  # 0, 0.01 s, 0.02 s, ...


# -- the knobs on a running hub --------------------------------------------------------------


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def test_aggregate_rate_caps_parallel_responses_together(
    fake_hub: FakeHub, http: requests.Session
) -> None:
    data = os.urandom(1_000_000)
    fake_hub.add_repo("org/big", {"w.bin": data})
    fake_hub.aggregate_rate = 2_000_000
    url = f"{fake_hub.url}/org/big/resolve/main/w.bin"
    location = http.head(url, allow_redirects=False).headers["Location"]
    bodies: list[bytes] = []

    def fetch() -> None:
        with requests.Session() as session:
            session.trust_env = False
            bodies.append(session.get(location).content)

    started = time.monotonic()
    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert bodies == [data] * 4
    # 4 MB through one 2 MB/s link, of which at most 64 KiB saved up: >= 1.96 s. Uncapped
    # (or one bucket per response, 4 x 2 MB/s) this takes well under a second.
    assert elapsed >= (4_000_000 - 65536) / 2_000_000 * 0.98, elapsed
    assert fake_hub.bytes_sent("/cdn/") == 4_000_000
    assert fake_hub.errors == []


def test_throttle_rate_paces_each_response_on_its_own(
    fake_hub: FakeHub, http: requests.Session
) -> None:
    """The per-connection cap: two responses on one keep-alive connection each take their
    full time (the cap does not carry a budget over from the first to the second)."""
    data = os.urandom(500_000)
    fake_hub.add_repo("org/big", {"w.bin": data})
    fake_hub.throttle_rate = 1_000_000
    location = urlsplit(
        http.head(f"{fake_hub.url}/org/big/resolve/main/w.bin", allow_redirects=False).headers[
            "Location"
        ]
    )
    conn = HTTPConnection("127.0.0.1", location.port, timeout=10)
    try:
        for _ in range(2):
            started = time.monotonic()
            conn.request("GET", f"{location.path}?{location.query}")
            assert conn.getresponse().read() == data
            # the first 64 KiB step goes out at once, the rest at 1 MB/s
            assert time.monotonic() - started >= (500_000 - 65536) / 1_000_000 * 0.98
    finally:
        conn.close()
    assert fake_hub.connections()["cdn"]["opened"] == 1  # one connection, two responses


def test_latency_delays_every_answer_on_both_listeners(
    fake_hub: FakeHub, http: requests.Session
) -> None:
    fake_hub.add_repo("org/m", {"config.json": b"{}", "w.bin": os.urandom(4096)})
    fake_hub.latency = 0.2
    for url in (
        f"{fake_hub.url}/api/models/org/m",
        f"{fake_hub.url}/org/m/resolve/main/config.json",
    ):
        started = time.monotonic()
        assert http.get(url).status_code == 200
        assert time.monotonic() - started >= 0.2
    location = http.head(f"{fake_hub.url}/org/m/resolve/main/w.bin", allow_redirects=False)
    started = time.monotonic()
    assert http.get(location.headers["Location"]).status_code == 200  # the CDN listener
    assert time.monotonic() - started >= 0.2


def test_connect_latency_delays_a_new_connection_once(fake_hub: FakeHub) -> None:
    fake_hub.add_repo("org/m", {"config.json": b"{}"})
    fake_hub.connect_latency = 0.3
    conn = HTTPConnection("127.0.0.1", urlsplit(fake_hub.url).port, timeout=10)
    try:
        started = time.monotonic()
        conn.request("GET", "/org/m/resolve/main/config.json")
        assert conn.getresponse().read() == b"{}"
        assert time.monotonic() - started >= 0.3
        fake_hub.connect_latency = 0.0  # no lower bound to check on a reused connection
        conn.request("GET", "/org/m/resolve/main/config.json")
        assert conn.getresponse().read() == b"{}"
    finally:
        conn.close()


def test_connections_counts_peak_and_resets_it(fake_hub: FakeHub) -> None:
    fake_hub.add_repo("org/m", {"config.json": b"{}"})
    port = urlsplit(fake_hub.url).port
    conns = [HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(3)]
    for conn in conns:
        conn.request("GET", "/org/m/resolve/main/config.json")
        assert conn.getresponse().read() == b"{}"
    counts = fake_hub.connections(reset_peak=True)["hub"]
    assert counts == {"open": 3, "opened": 3, "peak": 3}
    for conn in conns:
        conn.close()
    deadline = time.monotonic() + 10
    while fake_hub.connections()["hub"]["open"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_hub.connections(reset_peak=True)["hub"] == {"open": 0, "opened": 3, "peak": 3}
    assert fake_hub.connections()["hub"]["peak"] == 0


def test_main_takes_the_wan_flags(tmp_path: Path, http: requests.Session) -> None:
    (tmp_path / "w.bin").write_bytes(b"x" * 2000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFPULL_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakehub", "--repo", "org/wan",
         "--file", f"w.bin={tmp_path / 'w.bin'}", "--latency", "0.2",
         "--aggregate-rate", "1000000", "--throttle", "500000"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        started = time.monotonic()
        assert http.get(f"{url}/org/wan/resolve/main/w.bin").content == b"x" * 2000
        assert time.monotonic() - started >= 0.4  # two answers: the hub's 302 and the CDN's
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
