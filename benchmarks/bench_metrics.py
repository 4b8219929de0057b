#!/usr/bin/env python
"""What counting costs on the hit path: small-hit requests/s with metrics on and off.

The fake Hub (its own process) serves one 4 KiB file; `hfpull serve` runs in front of it,
once with metrics (the default) and once with `--no-metrics` (no middleware, no upstream
meter), alternating `--rounds` times. After one warming GET (the miss), a client process
(aiohttp, keep-alive, `--concurrency` connections) GETs the file for `--seconds` and counts
complete 200 answers of the right length. Prints a Markdown table; never asserts on timing.

    python benchmarks/bench_metrics.py [--seconds 5] [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = 4096
FILE_PATH = "/org/small/resolve/main/s.bin"


async def _client(url: str, seconds: float, concurrency: int) -> int:
    import aiohttp

    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.get(url) as response:
                    body = await response.read()
                    if response.status != 200 or len(body) != SIZE:
                        raise SystemExit(f"bad answer: {response.status}, {len(body)} bytes")
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFPULL_"))}
    return {**env, "HF_HOME": str(work / "hf-home"), "PYTHONPATH": str(ROOT)}


def _one_run(hub: str, work: Path, metrics: bool, args: argparse.Namespace) -> float:
    port = _free_port()
    store = work / f"store-{port}"
    flags = [] if metrics else ["--no-metrics"]
    serve = subprocess.Popen(
        [sys.executable, "-m", "hfpull", "serve", "--upstream", hub, "--port", str(port),
         "--cache-dir", str(store), *flags],
        cwd=ROOT, env=_env(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/healthz", serve)
        with urllib.request.urlopen(base + FILE_PATH, timeout=30) as answer:  # the miss
            assert len(answer.read()) == SIZE
        client = subprocess.run(
            [sys.executable, __file__, "--client", base + FILE_PATH,
             "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)],
            cwd=ROOT, env=_env(work), capture_output=True, text=True, check=True,
        )  # fmt: skip
        return int(client.stdout.strip()) / args.seconds
    finally:
        serve.terminate()
        serve.wait(30)


def record_cost(n: int = 50_000) -> float:
    """Microseconds the middleware's bookkeeping takes for one hit, in this process."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from hfpull.serve.metrics import Metrics, body_sent

    metrics = Metrics()
    request = make_mocked_request("GET", FILE_PATH)
    request["hfpull_target"] = {"repo": "org/small", "revision": "main", "path": "s.bin"}
    response = web.StreamResponse(headers={"X-Cache": "HIT"})
    response.content_length = SIZE
    started = time.perf_counter()
    for _ in range(n):
        metrics.in_flight.inc()
        body_sent(request, response, SIZE)
        metrics.in_flight.dec()
        metrics.record(request, response)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: be the client
    args = parser.parse_args()
    if args.client:
        print(asyncio.run(_client(args.client, args.seconds, args.concurrency)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        work = Path(tmp)
        (work / "s.bin").write_bytes(os.urandom(SIZE))
        port_file = work / "hub-url"
        hub = subprocess.Popen(
            [sys.executable, "-m", "tests.fakehub", "--repo", "org/small",
             "--file", f"s.bin={work / 's.bin'}", "--port-file", str(port_file)],
            cwd=ROOT, env=_env(work), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while not port_file.exists():
                time.sleep(0.05)
            url = port_file.read_text().strip()
            rates: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.rounds):
                for metrics in (True, False):
                    rates[metrics].append(_one_run(url, work, metrics, args))
                    print(f"metrics {'on ' if metrics else 'off'}: {rates[metrics][-1]:.0f}/s",
                          file=sys.stderr, flush=True)  # fmt: skip
        finally:
            hub.terminate()
            hub.wait(30)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"\n4 KiB hits, {args.concurrency} keep-alive clients, {args.seconds:.0f} s per run, "
          f"{args.rounds} runs each (median)\n")  # fmt: skip
    print("| | requests/s | runs |\n|---|---|---|")
    print(f"| metrics on (default) | {on:.0f} | {', '.join(f'{r:.0f}' for r in rates[True])} |")
    print(f"| --no-metrics | {off:.0f} | {', '.join(f'{r:.0f}' for r in rates[False])} |")
    print(f"\noverhead: {(1 - on / off) * 100:.1f}% of requests/s ({1e6 / on - 1e6 / off:.0f} µs "
          "per request)")  # fmt: skip
    print(f"the bookkeeping alone, in process: {record_cost():.1f} µs per hit")


if __name__ == "__main__":
    main()
