"""What eviction costs: one pass over a store of many small blobs, and what a hit pays.

    python benchmarks/bench_evict.py [--blobs 10000] [--dir DIR]

Builds a LocalBlobStore of N 1 KiB blobs with spread-out last uses (in DIR, default a
temporary folder: put it on the disk the mirror would use), then times:
- the start-up count (one usage() scan: what Evictor() does at start),
- one eviction pass with the cap at 95% of the store (it frees down to 90% of the cap,
  so about 14.5% of the blobs go), split into scan+sort and deletes,
- the per-hit extras: pin + unpin, and touch() (throttled: one stat; due: stat + utime).
Page cache warm (the blobs were just written), as on a mirror that stats its store often.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from hfpull.blobstore.local import LocalBlobStore  # noqa: E402
from hfpull.serve.eviction import Evictor  # noqa: E402

BLOB = 1024


def build(store: LocalBlobStore, count: int) -> list[str]:
    now = time.time()
    keys = []
    for i in range(count):
        data = i.to_bytes(8, "big") * (BLOB // 8)
        key = hashlib.sha256(data).hexdigest()
        path = store.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        used = now - 86400 + (i * 7919 % count)  # a shuffled order of last uses
        os.utime(path, (used, used))
        keys.append(key)
    return keys


def per_call_us(fn: object, keys: list[str], repeat: int = 3) -> float:
    best = []
    for _ in range(repeat):
        started = time.perf_counter()
        for key in keys:
            fn(key)  # type: ignore[operator]
        best.append((time.perf_counter() - started) / len(keys) * 1e6)
    return min(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-evict-") as tmp:
        store = LocalBlobStore(Path(tmp))
        keys = build(store, args.blobs)
        total = args.blobs * BLOB

        started = time.perf_counter()
        evictor = Evictor(store, cap=int(total * 0.95), log=lambda line: None, worker=False)
        count_s = time.perf_counter() - started

        started = time.perf_counter()
        ordered = sorted(store.usage(), key=lambda use: (use[2], use[0]))
        scan_s = time.perf_counter() - started
        assert len(ordered) == args.blobs

        report = evictor.run_pass()
        assert report is not None
        left = [key for key in keys if store.size(key) is not None]

        pins = evictor.pins
        pin_us = per_call_us(lambda key: (pins.pin(key), pins.unpin(key)), left)
        stale = time.time() - 3600
        for key in left:
            os.utime(store.path(key), (stale, stale))
        started = time.perf_counter()
        for key in left:
            store.touch(key)  # due: stat + utime
        due_us = (time.perf_counter() - started) / len(left) * 1e6
        throttled_us = per_call_us(store.touch, left)  # just touched: one stat each

        print(f"store: {args.blobs} blobs of {BLOB} B in {tmp}")
        print(f"start-up count (usage() scan): {count_s * 1000:.1f} ms")
        print(f"scan + sort by last use: {scan_s * 1000:.1f} ms")
        print(
            f"eviction pass: {report.evicted} blobs evicted in {report.seconds * 1000:.1f} ms "
            f"({(report.seconds - scan_s) / max(report.evicted, 1) * 1e6:.0f} us per delete "
            f"beyond the scan)"
        )
        print(f"per hit: pin+unpin {pin_us:.2f} us; touch {throttled_us:.2f} us (throttled), "
              f"{due_us:.2f} us (due: stat + utime)")  # fmt: skip


if __name__ == "__main__":
    main()
