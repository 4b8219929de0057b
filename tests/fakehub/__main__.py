"""Run a FakeHub in its own process (for benchmarks).

    python -m tests.fakehub --repo org/model --file model.safetensors=/tmp/big.bin \
        [--throttle BYTES_PER_S] [--aggregate-rate BYTES_PER_S] [--latency S]
        [--connect-latency S] [--port-file F]

Prints the hub URL (also written to --port-file) and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from . import wan
from .server import FakeHub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakehub", description=__doc__)
    parser.add_argument("--repo", default="org/model", help="repo id (default: org/model)")
    parser.add_argument("--repo-type", default="model", choices=["model", "dataset", "space"])
    parser.add_argument(
        "--file", action="append", default=[], metavar="PATH=LOCAL", help="repo path=local file"
    )
    parser.add_argument("--lfs-threshold", type=int, default=1024)
    wan.add_arguments(parser)
    parser.add_argument("--port-file", type=Path, help="write the hub URL to this file")
    args = parser.parse_args(argv)

    files: dict[str, bytes | Path] = {}
    for spec in args.file:
        name, sep, local = spec.partition("=")
        if not sep:
            parser.error(f"--file expects PATH=LOCAL, got {spec!r}")
        files[name] = Path(local)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with FakeHub() as hub:
        wan.apply(hub, args)
        hub.add_repo(args.repo, files, repo_type=args.repo_type, lfs_threshold=args.lfs_threshold)
        if args.port_file:
            tmp = args.port_file.with_name(args.port_file.name + ".tmp")
            tmp.write_text(hub.url + "\n")
            os.replace(tmp, args.port_file)  # atomic: readers never see a partial URL
        print(hub.url, flush=True)
        while not done.wait(0.5):
            pass


if __name__ == "__main__":
    main()
