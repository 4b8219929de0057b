"""The scheduler against the fake Hub: split on free, one budget for the run, pinned counts.

Concurrency is counted at the fake Hub: a CDN response is "in flight" from the moment its
record is opened (the client sent the request, so it holds a connection slot) until the
server starts its final write (the client has not read the last bytes yet, so it still holds
the slot). That window lies inside the client's slot, so the peak seen here can never be
above the client's real one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hfpull.engine.budget import START_CONNECTIONS
from hfpull.engine.scheduler import Engine
from hfpull.pull import download
from tests.conftest import RunCli, cli_env, fast_settings
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB, random_file, repo_dir, sha256_of

KiB = 1 << 10


class InFlight:
    """Counts CDN responses in flight at the fake Hub (see the module docstring), and waits
    for the server to close every one of them (a body the client cut is closed only when the
    server's next write fails; only then is its record's byte count final)."""

    def __init__(self, hub: FakeHub) -> None:
        self.now = 0
        self.peak = 0
        self._open = 0
        self._lock = threading.Condition()
        log = hub.log
        original_open = log.open

        def open_record(record: Any) -> Any:
            exchange = original_open(record)
            if record.server != "cdn" or record.method != "GET":
                return exchange
            self._change(+1)
            with self._lock:
                self._open += 1
            done = threading.Event()
            begin_final, close = exchange.begin_final, exchange.close

            def over() -> None:
                if not done.is_set():
                    done.set()
                    self._change(-1)

            def final() -> None:
                over()
                begin_final()

            def closed() -> None:
                over()
                close()
                with self._lock:
                    self._open -= 1
                    self._lock.notify_all()

            exchange.begin_final, exchange.close = final, closed
            return exchange

        log.open = open_record  # type: ignore[method-assign]

    def wait_closed(self, timeout: float = 10.0) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: self._open == 0, timeout), "responses still open"

    def _change(self, delta: int) -> None:
        with self._lock:
            self.now += delta
            self.peak = max(self.peak, self.now)


@pytest.fixture
def in_flight(fake_hub: FakeHub) -> Iterator[InFlight]:
    yield InFlight(fake_hub)


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[Engine]:
    """Every Engine a download creates, to read its budget afterwards."""
    created: list[Engine] = []
    original = Engine.__init__

    def init(self: Engine, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(Engine, "__init__", init)
    return created


def cdn_ranges(hub: FakeHub, name: str) -> list[tuple[int, int, int, str | None]]:
    """(first byte, last byte, body bytes sent, fault) of every CDN GET for ``name``."""
    out = []
    for record in hub.requests:
        if record.server != "cdn" or name not in record.path:
            continue
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", record.headers.get("range", ""))
        assert match, record.headers
        out.append((int(match[1]), int(match[2]), record.body_bytes, record.fault))
    return out


def test_a_slow_connection_has_its_range_split_off_to_the_free_ones(
    fake_hub: FakeHub, tmp_path: Path, cache: Path, in_flight: InFlight
) -> None:
    big = random_file(tmp_path / "src", "model.safetensors", 16 * MiB)
    fake_hub.add_repo("org/model", {"model.safetensors": big})
    # The first CDN request crawls; every other one is fast.
    fake_hub.faults = [Fault("throttle", "model.safetensors", server="cdn", times=1, rate=MiB)]
    settings = fast_settings(fake_hub.url, cache, connections=4, min_split=256 * KiB)
    path = download("org/model", settings=settings).path
    assert sha256_of(Path(path) / "model.safetensors") == sha256_of(big)
    in_flight.wait_closed()

    ranges = cdn_ranges(fake_hub, "model.safetensors")
    slow = [r for r in ranges if r[3] == "throttle"]
    assert len(slow) == 1
    first, last, sent, _ = slow[0]
    assert sent < (last - first + 1) // 2  # it was cut off well before its end...
    taken_over = [r for r in ranges if first < r[0] <= last and r[3] is None]
    assert taken_over  # ...because other connections took the rest of its range
    assert max(r[1] for r in taken_over) == last  # including its very last byte
    # Nothing fetched twice beyond what cut bodies had on the wire when they were cut: at most
    # a loopback socket buffer each (4 MiB). Usually only the slow body is cut (fast pieces
    # finish too soon to be worth splitting), but on a loaded machine a fast one can be too.
    cut = [r for r in ranges if r[2] < r[1] - r[0] + 1]
    assert 1 <= len(cut) <= 3, ranges
    assert 16 * MiB <= fake_hub.bytes_sent("model.safetensors") <= 16 * MiB + len(cut) * 4 * MiB


def test_one_budget_bounds_the_connections_of_all_files(
    fake_hub: FakeHub, tmp_path: Path, cache: Path, in_flight: InFlight, engines: list[Engine]
) -> None:
    files: dict[str, bytes | Path] = {
        f"shard-{i}.safetensors": random_file(tmp_path / "src", f"shard-{i}", 2 * MiB)
        for i in range(4)
    }
    fake_hub.add_repo("org/shards", files)
    fake_hub.throttle_rate = 4 * MiB  # every response takes a while: they overlap
    settings = fast_settings(
        fake_hub.url,
        cache,
        connections=3,
        max_workers=4,
        segment_size=512 * KiB,  # 4 pieces per file, and too small to split: no cut bodies
        min_split=1 * MiB,
    )
    download("org/shards", settings=settings)
    assert 2 <= in_flight.peak <= 3  # 4 files x 4 pieces, never more than the run's 3
    assert engines[0].peak_connections == 3
    root = repo_dir(cache, "org/shards")
    for name, source in files.items():
        assert isinstance(source, Path)
        assert sha256_of(next(root.glob(f"snapshots/*/{name}"))) == sha256_of(source)


def test_many_small_files_are_in_flight_at_once(
    fake_hub: FakeHub, cache: Path, in_flight: InFlight
) -> None:
    # Small LFS files (served by the CDN listener), each slowed so that they overlap.
    files: dict[str, bytes | Path] = {f"f{i:02d}.bin": bytes([i]) * 64 * KiB for i in range(24)}
    fake_hub.add_repo("org/small", files)
    fake_hub.throttle_rate = 256 * KiB
    settings = fast_settings(fake_hub.url, cache, connections=12, max_workers=16)
    download("org/small", settings=settings)
    assert 8 < in_flight.peak <= 12  # one connection per file, as many as the budget allows


def test_pushback_from_the_server_lowers_the_adaptive_count(
    fake_hub: FakeHub, tmp_path: Path, cache: Path, engines: list[Engine]
) -> None:
    big = random_file(tmp_path / "src", "model.safetensors", 8 * MiB)
    fake_hub.add_repo("org/model", {"model.safetensors": big})
    fake_hub.faults = [
        Fault("status", "model.safetensors", server="cdn", times=2, status=503, retry_after="0")
    ]
    download("org/model", settings=fast_settings(fake_hub.url, cache, min_split=512 * KiB))
    budget = engines[0].budget
    assert budget.adaptive
    assert budget.limit < START_CONNECTIONS  # halved, and capped below where it was refused


def test_pinned_connections_1_is_one_stream_for_the_whole_run(
    fake_hub: FakeHub, tmp_path: Path, run_cli: RunCli, in_flight: InFlight
) -> None:
    files: dict[str, bytes | Path] = {
        "a.safetensors": random_file(tmp_path / "src", "a", 6 * MiB),
        "b.safetensors": random_file(tmp_path / "src", "b", 6 * MiB),
    }
    fake_hub.add_repo("org/model", files)
    fake_hub.throttle_rate = 24 * MiB
    cache = tmp_path / "cli-cache"
    result = run_cli(
        "get", "org/model", "--endpoint", fake_hub.url, "--cache-dir", str(cache),
        "--connections", "1", "--quiet",
        env=cli_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert in_flight.peak == 1
    cdn = [r for r in fake_hub.requests if r.server == "cdn"]
    assert len(cdn) == 2  # one request per file, each for the whole file
    assert sorted(r.headers["range"] for r in cdn) == ["bytes=0-6291455"] * 2


def test_the_largest_blob_starts_first(fake_hub: FakeHub, tmp_path: Path, cache: Path) -> None:
    # Listing order puts the big file last; with one file at a time it must still go first,
    # so that it streams beside the small files instead of starting alone after them.
    files: dict[str, bytes | Path] = {f"a{i:02d}.json": b"{}" * (i + 1) for i in range(6)}
    files["z.safetensors"] = random_file(tmp_path / "src", "z", 2 * MiB)
    fake_hub.add_repo("org/mixed", files)
    settings = fast_settings(fake_hub.url, cache, connections=1, max_workers=1)
    download("org/mixed", settings=settings)
    fetched = [
        r.path.rsplit("/", 1)[-1]
        for r in fake_hub.requests
        if r.server == "hub" and r.method == "GET" and "/resolve/" in r.path
    ]
    assert fetched[0] == "z.safetensors", fetched
    assert sorted(fetched) == sorted(files)


def test_one_connection_is_kept_alive_across_pieces(
    fake_hub: FakeHub, tmp_path: Path, cache: Path
) -> None:
    # Eight pieces in turn on one pinned connection: each body is read to its end into the
    # engine's own buffer, and the connection must go back to the pool for the next piece.
    big = random_file(tmp_path / "src", "model.safetensors", 8 * MiB)
    fake_hub.add_repo("org/model", {"model.safetensors": big})
    settings = fast_settings(
        fake_hub.url, cache, connections=1, segment_size=1 * MiB, min_split=1 * MiB
    )
    path = download("org/model", settings=settings).path
    assert sha256_of(Path(path) / "model.safetensors") == sha256_of(big)
    assert len(cdn_ranges(fake_hub, "model.safetensors")) == 8
    assert fake_hub.connections()["cdn"]["opened"] == 1
