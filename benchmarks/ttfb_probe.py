"""A 51st client in its own process: what a newcomer waits for while the others stream.

    python -m benchmarks.ttfb_probe URL [--range 0-65535] [--interval 0.02]

Sends one GET at a time, each on a new connection (as a new client would), until its stdin
closes; then prints one JSON list of [started, ttfb, status, nbytes] (time.monotonic(), s).
Its event loop does nothing else, so its time to first byte is the server's plus loopback,
not the lag of a client loop that is busy receiving 50 other bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from typing import Any

from benchmarks.httpclient import Session


async def probe(url: str, byte_range: str, interval: float, stop: threading.Event) -> list[Any]:
    out: list[Any] = []
    while not stop.is_set():
        session = Session()
        try:
            r = await session.request("GET", url, {"Range": f"bytes={byte_range}"})
        finally:
            session.close()
        out.append([r.started, r.ttfb, r.status, r.nbytes])
        await asyncio.sleep(interval)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ttfb_probe")
    parser.add_argument("url")
    parser.add_argument("--range", default="0-65535")
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    stop = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    print("ready", flush=True)
    results = asyncio.run(probe(args.url, args.range, args.interval, stop))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
