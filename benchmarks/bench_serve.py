#!/usr/bin/env python
"""Benchmark `hfpull serve` (and olah, side by side): cold misses against the upstream, hits.

The fake Hub (tests/fakehub via benchmarks/fakehub_stats.py: its own process, a per-connection
bandwidth cap, a stats listener with the request log) is the upstream; `hfpull serve` and olah
run as subprocesses in front of it. Clients: an asyncio HTTP client in this process (one event
loop; benchmarks/httpclient.py) that records every request's time to first byte, and `curl`
for the single-client hit row. Every body is checked by size and SHA-256: timed hit passes only
count bytes, each follows an untimed pass of the same requests that hashes them.

    python benchmarks/bench_serve.py [--quick] [--size-mib N] [--cap-mib-s X] [--clients N]
        [--stagger-ms MS] [--miss-samples K] [--no-olah] [--olah-venv DIR] [--out FILE]

Prints a Markdown table with the issue's targets next to the measured values (never asserts on
timing), then where a miss's first byte time goes. Exit 1 on any failure or wrong byte.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
GB = 10**9
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_get import clean_env, process_cpu_seconds  # noqa: E402
from benchmarks.httpclient import Response, Session  # noqa: E402

MAIN_REPO, MAIN_FILE = "org/model", "w.safetensors"
WARMUP_REPO, PROBE_FILE = "org/warmup", "p.safetensors"
PROBE_MAX = 256 * MiB  # 8 segments of 32 MiB: all 8 of hfpull's connections start, as for 1 GiB
WARMUP_SIZE = 4 * MiB
PART_MAX = 64 * MiB  # each of the N clients reads one range of this size
CROWD_BUFFER = 64 << 10  # receive buffer per connection of the N clients (see httpclient)
NEWCOMER = 64 << 10  # the newcomer probe's Range GET
LFS_THRESHOLD = 1 * MiB
OLAH_VENV = ROOT / "benchmarks" / ".olah-venv"
START_TIMEOUT = 90.0

# the targets
HIT_RATE = GB  # bytes/s: 1 client, and N clients aggregate
HIT_TTFB_P50 = 0.005
MISS_SLACK = 0.050  # miss TTFB <= upstream's own + this
FILL_FACTOR = 4  # cold fill (capped connections) <= direct single stream / this
OLAH_FACTOR = 3  # hfpull hit throughput >= olah's x this
FLAT_MIB = 32  # "memory flat": peak RSS grows by less than this while serving hits


class BenchError(Exception):
    """A request failed or a body was wrong: the benchmark must not report it."""


class Unavailable(Exception):
    """olah could not be started: its rows are skipped, the others still run."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    path: Path
    size: int
    sha256: str

    @functools.lru_cache(maxsize=256)  # noqa: B019 (a few blobs, alive for the whole run)
    def sha_of(self, start: int, length: int) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            f.seek(start)
            left = length
            while left:
                chunk = f.read(min(8 * MiB, left))
                digest.update(chunk)
                left -= len(chunk)
        return digest.hexdigest()


def make_blob(path: Path, size: int) -> Blob:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(16 * MiB, left))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return Blob(path, size, digest.hexdigest())


def resolve_path(repo: str, name: str) -> str:
    return f"/{repo}/resolve/main/{name}"


# -- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hub:
    url: str
    cdn: str
    stats_url: str
    pid: int = 0

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.stats_url + "/stats", timeout=60) as answer:
            result: dict[str, Any] = json.load(answer)
            return result

    def summary(self, reset_peak: bool = False) -> dict[str, Any]:
        """Body bytes per listener and connection counts (fakehub_stats /summary)."""
        query = "?reset_peak=1" if reset_peak else ""
        with urllib.request.urlopen(f"{self.stats_url}/summary{query}", timeout=60) as answer:
            result: dict[str, Any] = json.load(answer)
            return result

    def cdn_bytes(self) -> int:
        return int(self.stats()["cdn_body_bytes"])

    def wait_quiet(self, quiet: float = 1.0, limit: float = 300.0) -> None:
        """Until no CDN body byte was sent for `quiet` seconds (a cut-off fill may go on)."""
        deadline = time.monotonic() + limit
        last, since = self.cdn_bytes(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.cdn_bytes()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return


@contextlib.contextmanager
def fake_hub(
    repos: dict[str, dict[str, Path]], cap: int, workdir: Path, wan: Sequence[str] = ()
) -> Iterator[Hub]:
    """`wan`: more WAN flags of tests/fakehub/wan.py (--aggregate-rate, --latency, ...)."""
    workdir.mkdir(parents=True, exist_ok=True)
    info = workdir / "hub.json"
    cmd = [sys.executable, "-m", "benchmarks.fakehub_stats", "--throttle", str(cap), *wan]
    cmd += ["--lfs-threshold", str(LFS_THRESHOLD), "--info-file", str(info)]
    for repo, files in repos.items():
        cmd += [arg for name, path in files.items() for arg in ("--file", f"{repo}:{name}={path}")]
    log_path = workdir / "hub.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=clean_env(workdir), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not info.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("fake hub did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.05)
        urls = json.loads(info.read_text())
        yield Hub(urls["hub"], urls["cdn"], urls["stats"], proc.pid)
    finally:
        stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    pid: int
    command: str = ""


def _wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    """Until `url` answers with any HTTP status (curl's %{http_code} is 000 until then)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        code = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}", url],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        if code not in ("", "000"):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = " ".join(log_path.read_text(errors="replace").split())[-400:]
            raise Unavailable(f"{what} did not start (exit {proc.poll()}): {tail}")
        time.sleep(0.1)


@contextlib.contextmanager
def hfpull_mirror(hub: Hub, store: Path, workdir: Path) -> Iterator[Server]:
    port = free_port()
    log_path = workdir / "serve.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hfpull", "serve", "--upstream", hub.url, "--port", str(port),
             "--cache-dir", str(store)],
            cwd=ROOT, env=clean_env(workdir), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_http(url + "/healthz", proc, log_path, "hfpull serve")
        except Unavailable as exc:
            raise BenchError(str(exc)) from None
        yield Server("hfpull", url, proc.pid)
    finally:
        stop(proc)


def olah_version(venv: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('olah'))"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def olah_command(venv: Path, hub: Hub, port: int, repos: Path, logs: Path) -> list[str]:
    """olah-cli with its documented flags: upstream hub and LFS host, own address, cache dir."""
    hub_netloc, cdn_netloc = hub.url.split("://", 1)[1], hub.cdn.split("://", 1)[1]
    return [
        str(venv / "bin" / "olah-cli"), "--host", "127.0.0.1", "--port", str(port),
        "--hf-scheme", "http", "--hf-netloc", hub_netloc, "--hf-lfs-netloc", cdn_netloc,
        "--mirror-scheme", "http", "--mirror-netloc", f"127.0.0.1:{port}",
        "--mirror-lfs-netloc", f"127.0.0.1:{port}",
        "--repos-path", str(repos), "--log-path", str(logs),
    ]  # fmt: skip


@contextlib.contextmanager
def olah_mirror(venv: Path, hub: Hub, workdir: Path) -> Iterator[Server]:
    if not (venv / "bin" / "olah-cli").exists():
        raise Unavailable(f"no olah-cli in {venv} (see benchmarks/README.md to install it)")
    port = free_port()
    log_path = workdir / "olah.log"
    cmd = olah_command(venv, hub, port, workdir / "olah-repos", workdir / "olah-logs")
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=clean_env(workdir), stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/", proc, log_path, "olah")
        yield Server("olah", url, proc.pid, " ".join(cmd[1:]))
    finally:
        stop(proc)


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a live process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


@dataclass
class Cpu:
    """CPU seconds used during a block: the server process, this process, reaped children."""

    server: float = 0.0
    client: float = 0.0

    def __str__(self) -> str:
        return f"CPU s: server {self.server:.1f}, client {self.client:.1f}"


@contextlib.contextmanager
def cpu_meter(pid: int) -> Iterator[Cpu]:
    cpu = Cpu()

    def client() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    server0, client0 = process_cpu_seconds(pid), client()
    yield cpu
    cpu.server, cpu.client = process_cpu_seconds(pid) - server0, client() - client0


# -- measurements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    head: Response
    get: Response  # cut after its first body bytes (the prefix is checked)
    upstream: list[dict[str, Any]]  # fake hub requests from the HEAD on, in arrival order


def check(ok: bool, message: str) -> None:
    if not ok:
        raise BenchError(message)


def check_head(r: Response, blob: Blob, direct: bool, what: str) -> None:
    if direct:
        check(r.status == 302, f"{what}: HEAD answered {r.status}, expected 302")
        check(r.headers.get("x-linked-size") == str(blob.size), f"{what}: X-Linked-Size")
    else:
        check(r.status == 200, f"{what}: HEAD answered {r.status}, expected 200")
        check(r.headers.get("content-length") == str(blob.size), f"{what}: HEAD Content-Length")


def check_body(
    r: Response, blob: Blob, what: str, start: int = 0, length: int | None = None,
    ranged: bool = False,
) -> None:  # fmt: skip
    length = blob.size if length is None else length
    want = 206 if ranged else 200
    check(r.status == want, f"{what}: answered {r.status}, expected {want}")
    if r.complete:
        check(r.nbytes == length, f"{what}: {r.nbytes} body bytes, expected {length}")
        if r.sha256 is not None:
            sha = blob.sha256 if length == blob.size else blob.sha_of(start, length)
            check(r.sha256 == sha, f"{what}: body differs (SHA-256)")
    else:
        check(0 < r.nbytes <= length, f"{what}: {r.nbytes} first bytes")
        check(r.sha256 == blob.sha_of(start, r.nbytes), f"{what}: first bytes differ (SHA-256)")


async def _probe(base: str, path: str, blob: Blob, direct: bool) -> tuple[Response, Response]:
    """huggingface_hub's order: HEAD the resolve URL (redirects not followed), then GET it on
    the same connection; the GET follows the redirect (direct: to the CDN) and is cut off
    after its first body bytes."""
    session = Session()
    try:
        head = await session.request("HEAD", base + path, follow_redirects=False)
        check_head(head, blob, direct, f"{base}{path}")
        get = await session.request("GET", base + path, hash_body=True, first_byte_only=True)
        check_body(get, blob, f"GET {base}{path}")
        return head, get
    finally:
        session.close()


def probe(hub: Hub, base: str, repo: str, blob: Blob, direct: bool = False) -> Probe:
    head, get = asyncio.run(_probe(base, resolve_path(repo, PROBE_FILE), blob, direct))
    hub.wait_quiet()  # a mirror's cut-off fill may go on; the next sample starts on a quiet hub
    requests = [r for r in hub.stats()["requests"] if r["arrived"] >= head.started]
    return Probe(head, get, sorted(requests, key=lambda r: r["arrived"]))


async def _full(url: str, blob: Blob, hash_body: bool, head_first: bool) -> Response:
    session = Session()
    try:
        if head_first:
            check_head(await session.request("HEAD", url), blob, False, url)
        r = await session.request("GET", url, hash_body=hash_body)
        check_body(r, blob, f"GET {url}")
        return r
    finally:
        session.close()


def full_get(url: str, blob: Blob, hash_body: bool = True, head_first: bool = False) -> Response:
    return asyncio.run(_full(url, blob, hash_body, head_first))


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Crowd:
    responses: list[Response]
    wall: float  # first client's start to the last body byte
    nbytes: int
    lags: list[float]  # this process's event loop: how late a 1 ms sleep woke, s
    newcomer: list[float]  # TTFB of a separate client process's requests during the run, s
    idle: list[float]  # the same client's TTFB just before the run, s

    def ttfb(self, q: float) -> float:
        return quantile([r.ttfb for r in self.responses], q)


async def _crowd(url: str, blob: Blob, n: int, part: int, stagger: float, hashed: bool) -> Crowd:
    slots = blob.size // part
    lags: list[float] = []
    running = True

    async def monitor() -> None:
        while running:
            before = time.monotonic()
            await asyncio.sleep(0.001)
            lags.append(time.monotonic() - before - 0.001)

    async def one(i: int) -> Response:
        await asyncio.sleep(i * stagger)
        start = (i % slots) * part
        session = Session(CROWD_BUFFER)
        try:
            r = await session.request(
                "GET", url, {"Range": f"bytes={start}-{start + part - 1}"}, hash_body=hashed
            )
        finally:
            session.close()
        check_body(r, blob, f"client {i}: GET {url} bytes={start}-", start, part, ranged=True)
        return r

    lag_task = asyncio.create_task(monitor())
    started = time.monotonic()
    try:
        responses = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        running = False
        await lag_task
    wall = max(r.ended_at for r in responses) - started
    return Crowd(list(responses), wall, sum(r.nbytes for r in responses), lags, [], [])


def crowd(
    url: str, blob: Blob, n: int, part: int, stagger: float = 0.0, hashed: bool = False
) -> Crowd:
    """N clients in this process; with `hashed` False, a newcomer probe runs alongside."""
    if hashed:
        return asyncio.run(_crowd(url, blob, n, part, stagger, hashed))
    probe = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ttfb_probe", url, "--range", f"0-{NEWCOMER - 1}"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert probe.stdin is not None and probe.stdout is not None
    try:
        check(probe.stdout.readline().strip() == "ready", "the newcomer probe did not start")
        time.sleep(0.5)  # a few samples on the idle server first
        begun = time.monotonic()
        run = asyncio.run(_crowd(url, blob, n, part, stagger, hashed))
        ended = time.monotonic()
    finally:
        probe.stdin.close()
        samples = json.loads(probe.stdout.read() or "[]")
        probe.wait(60)
    for _started, _ttfb, status, nbytes in samples:
        check(status == 206 and nbytes == NEWCOMER, f"newcomer probe got {status}, {nbytes} B")
    during = [t for s0, t, _, _ in samples if s0 >= begun and s0 + t <= ended]
    idle = [t for s0, t, _, _ in samples if s0 + t < begun]
    return dataclasses.replace(run, newcomer=during, idle=idle)


async def _burst(url: str, n: int) -> list[float]:
    async def one() -> float:
        session = Session(CROWD_BUFFER)
        try:
            r = await session.request("GET", url)
        finally:
            session.close()
        check(r.status == 200, f"GET {url} answered {r.status}")
        return r.ttfb

    return list(await asyncio.gather(*(one() for _ in range(n))))


def burst(url: str, n: int) -> list[float]:
    """TTFB of N small GETs sent at once: what setting up N connections costs here."""
    return asyncio.run(_burst(url, n))


@dataclass(frozen=True)
class Curl:
    ttfb: float  # curl's time_starttransfer: the first byte of the response (its headers)
    seconds: float
    nbytes: int


def curl(url: str, blob: Blob) -> Curl:
    cmd = [
        "curl",
        "-sSf",
        "-o",
        "/dev/null",
        "-w",
        "%{time_starttransfer} %{time_total} %{size_download}",
    ]
    result = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise BenchError(f"curl failed on {url}: {result.stderr.strip()}")
    ttfb, total, size = result.stdout.split()
    check(int(size) == blob.size, f"curl {url}: {size} bytes, expected {blob.size}")
    return Curl(float(ttfb), float(total), int(size))


# -- report ----------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timelines: list[str] = field(default_factory=list)

    def row(self, who: str, scenario: str, seconds: float | None = None, nbytes: int = 0,
            ttfb: str = "", target: str = "", note: str = "") -> None:  # fmt: skip
        secs = f"{seconds:.2f}" if seconds is not None else ""
        rate = f"{nbytes / seconds / MiB:.0f}" if seconds and nbytes else ""
        self.rows.append((who, scenario, secs, rate, ttfb, target, note))

    def markdown(self) -> str:
        lines = ["| server | scenario | seconds | MiB/s | TTFB ms | target | note |"]
        lines.append("|---|---|---:|---:|---:|---|---|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def spread(values: list[float]) -> str:
    """p50 (min–max) in ms."""
    return f"{ms(statistics.median(values))} ({ms(min(values))}–{ms(max(values))})"


def mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / MiB


def timeline(name: str, p: Probe) -> str:
    """The upstream requests of one probe, on the client's clock (0 = the HEAD was sent)."""
    t0 = p.head.started
    out = [f"{name}: HEAD sent at 0.0 ms, its headers back at {ms(p.head.headers_at - t0)}; "
           f"GET sent at {ms(p.get.started - t0)}, first body byte at "
           f"{ms((p.get.first_byte_at or p.get.headers_at) - t0)} "
           f"(TTFB {ms(p.get.ttfb)}); upstream saw:"]  # fmt: skip
    for r in p.upstream[:24]:
        what = r["path"]
        if "/resolve/" in what:
            what = "resolve " + what.rsplit("/", 1)[-1]
        elif what.startswith("/cdn/"):
            what = "cdn blob"
        rng = f" {r['range']}" if r["range"] else ""
        out.append(
            f"    {r['server']:<3} {r['method']:<4} {what}{rng} -> {r['status']}: arrived "
            f"{ms(r['arrived'] - t0)}, answered {ms(r['responded'] - t0)}"
        )
    if len(p.upstream) > 24:
        out.append(f"    ... {len(p.upstream) - 24} more")
    return "\n".join(out)


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    size: int
    cap: int
    clients: int
    stagger: float
    samples: int
    olah: bool
    olah_venv: Path
    out: Path | None


@dataclass
class Direct:
    head: list[float]
    get: list[float]
    full: Response


@dataclass
class Measured:
    """One mirror's numbers, for the hfpull-vs-olah rows."""

    hit1: float = 0.0  # bytes/s, curl
    hit_n: float = 0.0  # bytes/s aggregate, all at once


def measure_direct(
    cfg: Config, hub: Hub, blob: Blob, probe_blobs: list[Blob], rep: Report
) -> Direct:
    log(f"direct: {cfg.samples} HEAD+GET first-byte samples, then one full single stream...")
    probes = [
        probe(hub, hub.url, f"org/probe-{i}", b, direct=True) for i, b in enumerate(probe_blobs)
    ]
    head = [p.head.ttfb for p in probes]
    get = [p.get.ttfb for p in probes]
    full = full_get(hub.url + resolve_path(MAIN_REPO, MAIN_FILE), blob)
    k = f"{len(probes)} samples, p50 (min–max)"
    rep.row("upstream", "HEAD resolve (302 to the CDN)", ttfb=spread(head), note=k)
    rep.row("upstream", "GET resolve → 302 → CDN, first body byte", ttfb=spread(get), note=k)
    rep.row("upstream", f"1 stream, full {blob.size // MiB} MiB (no mirror)", full.seconds,
            full.nbytes, ms(full.ttfb), note="what a client without a mirror gets")  # fmt: skip
    rep.timelines.append(timeline("upstream (direct)", _median_probe(probes)))
    return Direct(head, get, full)


def _median_probe(probes: list[Probe]) -> Probe:
    return sorted(probes, key=lambda p: p.get.ttfb)[len(probes) // 2]


def measure_mirror(
    cfg: Config, hub: Hub, srv: Server, blob: Blob, probe_blobs: list[Blob], warm: Blob,
    direct: Direct, rep: Report,
) -> Measured:  # fmt: skip
    name, got = srv.name, Measured()
    rss_start = memory_mib(srv.pid)[0]
    log(f"{name}: warm-up, then {cfg.samples} cold HEAD+GET first-byte samples...")
    full_get(srv.url + resolve_path(WARMUP_REPO, PROBE_FILE), warm, head_first=True)
    hub.wait_quiet()
    probes = [probe(hub, srv.url, f"org/probe-{i}", b) for i, b in enumerate(probe_blobs)]
    head = [p.head.ttfb for p in probes]
    get = [p.get.ttfb for p in probes]
    up_head, up_get = statistics.median(direct.head), statistics.median(direct.get)
    k = f"{len(probes)} samples, p50 (min–max); repo and blob both cold"
    limit = up_head + MISS_SLACK
    rep.row(name, "cold HEAD (repo metadata from upstream)", ttfb=spread(head),
            target=f"≤ {ms(limit)} (upstream + 50): {verdict(statistics.median(head) <= limit)}",
            note=k)  # fmt: skip
    limit = up_get + MISS_SLACK
    rep.row(name, "GET after HEAD, cold blob, first body byte", ttfb=spread(get),
            target=f"≤ {ms(limit)} (upstream + 50): {verdict(statistics.median(get) <= limit)}",
            note=k)  # fmt: skip
    rep.timelines.append(timeline(name, _median_probe(probes)))

    log(f"{name}: cold miss, full {blob.size // MiB} MiB...")
    before = hub.cdn_bytes()
    url = srv.url + resolve_path(MAIN_REPO, MAIN_FILE)
    cold = full_get(url, blob, head_first=True)
    hub.wait_quiet()
    upstream = hub.cdn_bytes() - before
    limit = direct.full.seconds / FILL_FACTOR
    rep.row(name, "cold miss, full body (HEAD, then GET)", cold.seconds, cold.nbytes, ms(cold.ttfb),
            f"≤ {limit:.2f} s (direct / {FILL_FACTOR}): {verdict(cold.seconds <= limit)}",
            f"{direct.full.seconds / cold.seconds:.1f}× direct; upstream sent "
            f"{upstream / MiB:.0f} MiB")  # fmt: skip
    rss_cold = memory_mib(srv.pid)[0]

    log(f"{name}: hits...")
    hub_before = hub.stats()
    rate_target = f"≥ {HIT_RATE / MiB:.0f} MiB/s (1 GB/s)"
    full_get(url, blob)  # verifying pass (hashed, untimed) for the two single-client rows
    os.sync()
    with cpu_meter(srv.pid) as cpu:
        c = curl(url, blob)
    got.hit1 = c.nbytes / c.seconds
    rep.row(name, "hit, 1 client (curl)", c.seconds, c.nbytes, ms(c.ttfb),
            f"{rate_target}: {verdict(got.hit1 >= HIT_RATE)}",
            f"{cpu}; TTFB = curl's first response byte")  # fmt: skip
    with cpu_meter(srv.pid) as cpu:
        one = full_get(url, blob, hash_body=False)
    ok = verdict(one.nbytes / one.seconds >= HIT_RATE)
    rep.row(name, "hit, 1 client (in-process client)", one.seconds, one.nbytes, ms(one.ttfb),
            f"{rate_target}: {ok}", str(cpu))  # fmt: skip

    part = min(blob.size, PART_MAX)
    n = cfg.clients
    crowd(url, blob, n, part, hashed=True)  # verifying pass
    for label, stagger in (
        ("all at once", 0.0),
        (f"staggered {cfg.stagger * 1000:g} ms", cfg.stagger),
    ):
        with cpu_meter(srv.pid) as cpu:
            run = crowd(url, blob, n, part, stagger)
        rate = run.nbytes / run.wall
        if stagger == 0:
            got.hit_n = rate
        p50 = run.ttfb(0.5)
        lag = f"{ms(statistics.median(run.lags))} / {ms(max(run.lags))}"
        rep.row(name, f"hit, {n} clients × {part // MiB} MiB, {label}", run.wall, run.nbytes,
                f"{ms(p50)} / {ms(run.ttfb(0.95))}",
                f"{rate_target} aggregate: {verdict(rate >= HIT_RATE)}; "
                f"TTFB p50 < {ms(HIT_TTFB_P50)}: {verdict(p50 < HIT_TTFB_P50)}",
                f"TTFB p50 / p95 (max {ms(run.ttfb(1))}); client loop lag p50 / max {lag}; "
                f"{cpu}")  # fmt: skip
        if run.newcomer:
            p50 = statistics.median(run.newcomer)
            idle = f"{ms(statistics.median(run.idle))}" if run.idle else "n/a"
            rep.row(name, f"… newcomer during that run ({NEWCOMER >> 10} KiB range, own process)",
                    ttfb=f"{ms(p50)} / {ms(quantile(run.newcomer, 0.95))}",
                    target=f"TTFB p50 < {ms(HIT_TTFB_P50)}: {verdict(p50 < HIT_TTFB_P50)}",
                    note=f"requests: {len(run.newcomer)}, one at a time, a new connection each; "
                    f"idle server before the run: p50 {idle}")  # fmt: skip
    if name == "hfpull":
        floor = burst(srv.url + "/healthz", n)
        rep.row(name, f"… calibration: {n} × GET /healthz at once (no file, no thread hop)",
                ttfb=f"{ms(statistics.median(floor))} / {ms(quantile(floor, 0.95))}",
                note="the floor of an all-at-once TTFB on this machine: connection setup and "
                "request handling for N clients, client and server sharing the CPUs")  # fmt: skip
    hub_after = hub.stats()
    sent = hub_after["cdn_body_bytes"] - hub_before["cdn_body_bytes"]
    asked = len(hub_after["requests"]) - len(hub_before["requests"])
    check(sent == 0, f"{name} fetched {sent} bytes from upstream while serving hits")
    rss_now, peak = memory_mib(srv.pid)
    grew = peak - rss_cold
    rep.row(name, "memory (RSS, MiB)", target=f"flat (peak < +{FLAT_MIB} MiB while serving hits): "
            f"{verdict(grew < FLAT_MIB)}",
            note=f"at start {rss_start:.0f}, after the cold miss {rss_cold:.0f}, peak {peak:.0f}, "
            f"now {rss_now:.0f}")  # fmt: skip
    kinds = _kinds(hub_after["requests"][len(hub_before["requests"]) :])
    rep.notes.append(
        f"{name}: while serving all hit rows upstream sent 0 body bytes "
        f"and got {asked} requests ({kinds})."
    )
    return got


def _kinds(requests: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in requests:
        key = f"{r['server']} {r['method']} {'resolve' if '/resolve/' in r['path'] else r['path']}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{v}× {k}" for k, v in sorted(counts.items())) or "none"


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB, 3 miss samples")
    parser.add_argument("--size-mib", type=int, help="size of the blob (default 1024; quick 128)")
    parser.add_argument("--cap-mib-s", type=float, default=25.0, help="upstream per-connection cap")
    parser.add_argument("--clients", type=int, default=50, help="concurrent hit clients")
    parser.add_argument("--stagger-ms", type=float, default=10.0,
                        help="staggered row: client i starts i × this after the first")  # fmt: skip
    parser.add_argument(
        "--miss-samples", type=int, help="cold HEAD+GET samples (default 5; quick 3)"
    )
    parser.add_argument("--no-olah", action="store_true", help="skip the olah rows")
    parser.add_argument("--olah-venv", type=Path, default=OLAH_VENV, help=f"default {OLAH_VENV}")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    size = (args.size_mib or (128 if args.quick else 1024)) * MiB
    samples = args.miss_samples or (3 if args.quick else 5)
    if size < 2 * MiB or args.clients < 1 or samples < 1 or args.cap_mib_s <= 0:
        parser.error("--size-mib ≥ 2, --clients ≥ 1, --miss-samples ≥ 1, --cap-mib-s > 0")
    return Config(size, int(args.cap_mib_s * MiB), args.clients, args.stagger_ms / 1000,
                  samples, not args.no_olah, args.olah_venv, args.out)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hfpull-bench-serve-"))
    started, load0 = time.monotonic(), os.getloadavg()[0]
    try:
        report = run(cfg, work)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    facts = (
        f"file {cfg.size // MiB} MiB, upstream cap {cfg.cap / MiB:g} MiB/s per connection, "
        f"{cfg.clients} hit clients, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    where = (
        "Where a cold miss's time goes (the probe with the median GET TTFB; "
        "ms on the client's clock):"
    )
    text = "\n".join(
        [facts, "", report.markdown(), "", *report.notes, "", where, "", "```",
         *report.timelines, "```"]
    )  # fmt: skip
    print(text)
    if cfg.out:
        cfg.out.write_text(text + "\n")
    return 0


def run(cfg: Config, work: Path) -> Report:
    rep = Report()
    log(f"test data in {work}...")
    blob = make_blob(work / "weights.bin", cfg.size)
    warm = make_blob(work / "warmup.bin", WARMUP_SIZE)
    probe_size = min(cfg.size, PROBE_MAX)
    probes = [make_blob(work / f"probe-{i}.bin", probe_size) for i in range(cfg.samples)]
    repos = {MAIN_REPO: {MAIN_FILE: blob.path}, WARMUP_REPO: {PROBE_FILE: warm.path}}
    repos.update({f"org/probe-{i}": {PROBE_FILE: b.path} for i, b in enumerate(probes)})
    with fake_hub(repos, cfg.cap, work / "hub") as hub:
        direct = measure_direct(cfg, hub, blob, probes, rep)
        mirrors: dict[str, Measured] = {}
        (work / "hfpull").mkdir()
        with hfpull_mirror(hub, work / "hfpull" / "store", work / "hfpull") as srv:
            mirrors["hfpull"] = measure_mirror(cfg, hub, srv, blob, probes, warm, direct, rep)
        if cfg.olah:
            (work / "olah").mkdir()
            try:
                with olah_mirror(cfg.olah_venv, hub, work / "olah") as srv:
                    rep.notes.append(f"olah {olah_version(cfg.olah_venv)}: olah-cli {srv.command}")
                    mirrors["olah"] = measure_mirror(cfg, hub, srv, blob, probes, warm, direct, rep)
            except Unavailable as exc:
                line = f"olah: could not run, its rows are left out ({exc})"
                log(line)
                rep.notes.append(line)
        if "olah" in mirrors:
            h, o = mirrors["hfpull"], mirrors["olah"]
            r1, rn = h.hit1 / o.hit1, h.hit_n / o.hit_n
            rep.row("hfpull / olah", "hit throughput ratio: 1 client (curl); "
                    f"{cfg.clients} clients all at once", ttfb="",
                    target=f"≥ {OLAH_FACTOR}×: {verdict(r1 >= OLAH_FACTOR)}; "
                    f"{verdict(rn >= OLAH_FACTOR)}", note=f"{r1:.1f}×; {rn:.1f}×")  # fmt: skip
    return rep


if __name__ == "__main__":
    sys.exit(main())
