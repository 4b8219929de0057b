"""Start ``hfpull serve`` as a real subprocess in front of the fake Hub, and stop it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.conftest import ROOT, cli_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_mirror(
    tmp_path: Path,
    upstream: str,
    *extra: str,
    store: Path | None = None,
    procs: list[subprocess.Popen[bytes]] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    port = free_port()
    store = store or tmp_path / "mirror-store"
    log = open(tmp_path / f"serve-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hfpull", "serve", "--upstream", upstream, "--port", str(port),
         "--cache-dir", str(store), *extra],
        cwd=ROOT, env=cli_env(tmp_path, HFPULL_READ_TIMEOUT="3", HFPULL_CONNECT_TIMEOUT="2",
                              HFPULL_BACKOFF_BASE="0.05", HFPULL_SEGMENT_SIZE=str(1 << 20),
                              **(env or {})),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    if procs is not None:
        procs.append(proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"hfpull serve exited: {Path(log.name).read_text()}")
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("hfpull serve did not start within 20 s")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
