#!/usr/bin/env python
"""Benchmark filling the mirror: ``hfpull prewarm`` through ``hfpull serve`` beside a direct
``hfpull get`` of the same file, and ``hfpull serve import`` of an archive of it.

The fake Hub runs in its own process (benchmarks.fakehub_stats), the mirror and every client
in theirs. Each run starts from an empty store or cache; each result is checked (the blob's
SHA-256 in the store, the cache's snapshot) before its row counts.

    python benchmarks/bench_prewarm.py [--size-mib 256] [--cap-mib-s 25]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_get import clean_env  # noqa: E402
from benchmarks.bench_serve import MiB, fake_hub, hfpull_mirror, make_blob  # noqa: E402

REPO, NAME = "bench/big", "model.safetensors"


def run(args: list[str], home: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "hfpull", *args], cwd=ROOT,
                            env=clean_env(home), capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"hfpull {' '.join(args)} failed: {result.stderr[-2000:]}")
    return elapsed


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(8 * MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stored(store: Path, sha: str) -> bool:
    blob = store / "blobs" / sha[:2] / sha
    return blob.is_file() and sha256(blob) == sha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--cap-mib-s", type=float, default=25.0, help="per connection; 0: none")
    options = parser.parse_args()
    size = options.size_mib * MiB
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-prewarm-") as tmp:
        work = Path(tmp)
        blob = make_blob(work / NAME, size)
        for cap in sorted({0.0, options.cap_mib_s}):
            label = "no cap" if cap == 0 else f"{cap:g} MiB/s per connection"
            hub_dir = work / f"hub-{cap:g}"
            with fake_hub({REPO: {NAME: blob.path}}, int(cap * MiB), hub_dir) as hub:
                store = work / f"store-{cap:g}"
                with hfpull_mirror(hub, store, hub_dir) as mirror:
                    seconds = run(["prewarm", REPO, "--mirror", mirror.url, "-q"], work)
                if not stored(store, blob.sha256):
                    raise SystemExit("prewarm: the blob is not in the store, verified")
                rows.append((f"prewarm through the mirror, {label}", seconds))
                cache = work / f"cache-{cap:g}"
                seconds = run(["get", REPO, "--endpoint", hub.url, "--cache-dir", str(cache),
                               "-q"], work)  # fmt: skip
                rows.append((f"hfpull get direct, {label}", seconds))
        archive = work / "big.tar"
        run(["pack", REPO, "-o", str(archive), "--offline", "--cache-dir", str(cache)], work)
        store = work / "imported"
        seconds = run(["serve", "import", str(archive), "--cache-dir", str(store)], work)
        if not stored(store, blob.sha256):
            raise SystemExit("import: the blob is not in the store, verified")
        rows.append(("serve import of an archive (from a file in the page cache)", seconds))
    print(f"{options.size_mib} MiB LFS file, fake Hub on loopback\n")
    print("| case | seconds | MiB/s |\n|---|---|---|")
    for case, seconds in rows:
        print(f"| {case} | {seconds:.2f} | {options.size_mib / seconds:.0f} |")


if __name__ == "__main__":
    main()
