"""The fake Hub (tests/fakehub) in its own process, plus a stats listener for benchmarks.

    python -m benchmarks.fakehub_stats --file org/model:w.safetensors=/tmp/big.bin \
        [--file org/other:x.bin=/tmp/x.bin ...] --throttle BYTES_PER_S --info-file F

Same hub as `python -m tests.fakehub` (nothing under tests/ is changed), with any number of
repos (one commit on main each), and two additions:
- every request gets two timestamps, `time.monotonic()` when its headers were parsed and when
  its response started (CLOCK_MONOTONIC is system-wide on Linux, so another process on this
  machine can compare them with its own clock);
- a third listener answers ``GET /stats`` with JSON: body bytes sent by each listener (2xx
  responses only, in-flight bodies included) and the request log with those timestamps;
  ``GET /summary[?reset_peak=1]`` the same byte counts and each listener's connections
  (open, opened, peak at once; the reset starts a new peak), cheap enough to poll.

The WAN flags (--throttle, --aggregate-rate, --latency, --connect-latency) are those of
``python -m tests.fakehub`` (tests/fakehub/wan.py).

--info-file receives {"hub": URL, "cdn": URL, "stats": URL} once all three listen.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fakehub import wan
from tests.fakehub.handler import Handler
from tests.fakehub.log import Exchange, RequestLog, RequestRecord
from tests.fakehub.server import FakeHub

_arrival = threading.local()  # one handler thread per connection, one request at a time
_times: dict[int, tuple[float, float]] = {}  # record index -> (arrived, responded)


def _instrument() -> None:
    serve, open_ = Handler._serve, RequestLog.open

    def timed_serve(self: Handler) -> None:
        _arrival.t = time.monotonic()
        serve(self)

    def timed_open(self: RequestLog, record: RequestRecord) -> Exchange:
        ex = open_(self, record)
        _times[ex.index] = (getattr(_arrival, "t", float("nan")), time.monotonic())
        return ex

    Handler._serve = timed_serve  # type: ignore[method-assign]
    RequestLog.open = timed_open  # type: ignore[method-assign]


def stats(hub: FakeHub) -> dict[str, Any]:
    cdn_bytes = hub.bytes_sent("/cdn/")
    requests = [
        {
            "server": r.server,
            "method": r.method,
            "path": r.path.split("?", 1)[0],
            "range": r.headers.get("range"),
            "status": r.status,
            "body_bytes": r.body_bytes,
            "arrived": _times.get(i, (float("nan"),) * 2)[0],
            "responded": _times.get(i, (float("nan"),) * 2)[1],
        }
        for i, r in enumerate(hub.requests)
    ]
    return {
        "cdn_body_bytes": cdn_bytes,
        "hub_body_bytes": hub.bytes_sent() - cdn_bytes,
        "requests": requests,
    }


def summary(hub: FakeHub, reset_peak: bool) -> dict[str, Any]:
    """Body bytes per listener and connection counts, without the request log (cheap to poll)."""
    cdn_bytes = hub.bytes_sent("/cdn/")
    return {
        "cdn_body_bytes": cdn_bytes,
        "hub_body_bytes": hub.bytes_sent() - cdn_bytes,
        "connections": hub.connections(reset_peak),
    }


def _stats_server(hub: FakeHub) -> ThreadingHTTPServer:
    class StatsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/summary":
                body = json.dumps(summary(hub, reset_peak=query == "reset_peak=1")).encode()
            else:
                body = json.dumps(stats(hub)).encode()
            self.send_response(200 if path in ("/stats", "/summary") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), StatsHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="stats").start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fakehub_stats")
    parser.add_argument("--file", action="append", default=[], metavar="REPO:PATH=LOCAL")
    parser.add_argument("--lfs-threshold", type=int, default=1024)
    wan.add_arguments(parser)
    parser.add_argument("--info-file", type=Path, required=True)
    args = parser.parse_args(argv)
    repos: dict[str, dict[str, bytes | Path]] = {}
    for spec in args.file:
        name, sep, local = spec.partition("=")
        repo, colon, path = name.partition(":")
        if not (sep and colon):
            parser.error(f"--file expects REPO:PATH=LOCAL, got {spec!r}")
        repos.setdefault(repo, {})[path] = Path(local)

    _instrument()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with FakeHub() as hub:
        wan.apply(hub, args)
        for repo, files in repos.items():
            hub.add_repo(repo, files, lfs_threshold=args.lfs_threshold)
        server = _stats_server(hub)
        info = {
            "hub": hub.url,
            "cdn": hub.cdn_url,
            "stats": f"http://127.0.0.1:{server.server_port}",
        }
        tmp = args.info_file.with_name(args.info_file.name + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, args.info_file)  # atomic: readers never see a partial file
        while not done.wait(0.5):
            pass
        server.shutdown()


if __name__ == "__main__":
    main()
