#!/usr/bin/env python
"""Benchmark `hfpull serve`: a cold fill against single-stream direct download, then hits.

The fake Hub (`python -m tests.fakehub`, its own process, a per-connection bandwidth cap)
is the upstream; `hfpull serve` runs as a subprocess in front of it; clients are `curl`
processes (so the client side is not one Python GIL). Every body is checked by size and
SHA-256 before its row counts.

    python benchmarks/bench_serve.py [--quick] [--size-mib N] [--cap-mib-s X] [--clients N]

Rows: direct single stream (curl -L to the fake Hub, as one client without a mirror does),
the mirror's cold miss, one client on the cached blob, N concurrent clients on it (each
reads a 64 MiB range), with time to first byte and the mirror's peak RSS. Exit 1 on any
failure. Not a test: no timing asserts anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serve_helpers import free_port  # noqa: E402

from benchmarks.bench_get import clean_env, fake_hub  # noqa: E402


@dataclass(frozen=True)
class Fetch:
    ttfb: float
    seconds: float
    nbytes: int
    sha256: str | None


def curl(url: str, out: Path | None, byte_range: str | None = None) -> Fetch:
    cmd = ["curl", "-sSfL", "-o", str(out) if out else "/dev/null"]
    cmd += ["-w", "%{time_starttransfer} %{time_total} %{size_download}"]
    if byte_range:
        cmd += ["-r", byte_range]
    result = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"curl failed on {url}: {result.stderr.strip()}")
    ttfb, total, size = result.stdout.split()
    digest = _sha256(out) if out else None
    return Fetch(float(ttfb), float(total), int(size), digest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(8 * MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def mirror(upstream: str, store: Path, workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hfpull", "serve", "--upstream", upstream, "--port", str(port),
         "--cache-dir", str(store)],
        cwd=ROOT, env=clean_env(workdir), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["curl", "-sf", url + "/healthz"], capture_output=True).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "hfpull serve did not start: " + (workdir / "serve.log").read_text()
                )
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int)
    parser.add_argument("--cap-mib-s", type=float, default=25.0)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    size = (args.size_mib or (128 if args.quick else 1024)) * MiB
    cap = int(args.cap_mib_s * MiB)
    work = Path(tempfile.mkdtemp(prefix="hfpull-bench-serve-"))
    blob = work / "weights.bin"
    with open(blob, "wb") as handle:
        for _ in range(size // (16 * MiB)):
            handle.write(os.urandom(16 * MiB))
        handle.write(os.urandom(size % (16 * MiB)))
    expected = _sha256(blob)
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, fetch: Fetch, note: str = "") -> None:
        rate = fetch.nbytes / fetch.seconds / MiB
        rows.append((name, f"{fetch.seconds:.2f}", f"{rate:.0f}", f"{fetch.ttfb * 1000:.1f}", note))

    with fake_hub("org/model", {"w.safetensors": blob}, cap, work / "hub") as hub:
        path = "/org/model/resolve/main/w.safetensors"
        print(f"direct single stream from the fake Hub ({args.cap_mib_s:g} MiB/s cap)...",
              file=sys.stderr)  # fmt: skip
        direct = curl(hub.url + path, work / "direct.bin")
        assert direct.sha256 == expected, "direct download differs"
        row("direct, 1 stream (no mirror)", direct)
        (work / "direct.bin").unlink()
        with mirror(hub.url, work / "store", work) as (url, pid):
            print("cold miss through the mirror...", file=sys.stderr)
            cold = curl(url + path, work / "cold.bin")
            assert cold.sha256 == expected, "the mirror's cold answer differs"
            row("mirror, cold miss", cold, f"{direct.seconds / cold.seconds:.1f}x direct")
            (work / "cold.bin").unlink()
            hit = curl(url + path, work / "hit.bin")
            assert hit.sha256 == expected, "the mirror's hit differs"
            (work / "hit.bin").unlink()
            hit = curl(url + path, None)
            row("mirror, hit, 1 client", hit)
            part = min(size, 64 * MiB)
            print(f"{args.clients} clients on the cached blob...", file=sys.stderr)
            started = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                fetches = list(
                    pool.map(lambda _: curl(url + path, None, f"0-{part - 1}"), range(args.clients))
                )
            wall = time.monotonic() - started
            assert all(f.nbytes == part for f in fetches)
            total = sum(f.nbytes for f in fetches)
            p50 = statistics.median(f.ttfb for f in fetches) * 1000
            rows.append((
                f"mirror, hit, {args.clients} clients x {part // MiB} MiB", f"{wall:.2f}",
                f"{total / wall / MiB:.0f} (aggregate)", f"{p50:.1f} (p50)", "",
            ))  # fmt: skip
            rss = peak_rss_mib(pid)
    print(f"file {size // MiB} MiB, per-connection cap {args.cap_mib_s:g} MiB/s, "
          f"{os.cpu_count()} CPUs; mirror peak RSS {rss:.0f} MiB\n")  # fmt: skip
    print("| scenario | seconds | MiB/s | first byte ms | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
