"""Keep the store under ``--max-cache-size``: least recently used blobs go first.

What counts toward the cap: stored blobs, plus the full size of every fill in progress from
the moment it starts (so room is made before its bytes land, not after the disk filled).
Not counted: ``meta/`` (small) and partials left by interrupted fills (they are resumed the
next time their blob is asked for). Size a disk for the cap plus those.

The store's total is a running figure, counted once from ``usage()`` at start and kept on
every put and delete after that (blobs added or removed behind the mirror's back are seen
at the next start). When it is over the cap — at start, when a fill starts, when a blob is
put, when a pinned blob is released — a worker thread (never the event loop) runs a pass:
one ``usage()`` scan, then blobs in order of last use, oldest first, skipping pinned ones,
until the total is at or below LOW_WATER of the cap. Each pass costs a scan of the whole
store, so it frees a tenth of the cap rather than just enough for one blob: a full cache
then runs one pass per tenth of the cap fetched, not one per fill.

A pinned blob is never deleted (see pins.py); a blob larger than the cap is filled and
served all the same, and evicted when its last client and its fill are done. Eviction
deletes blobs only: file lists and branch -> commit answers stay, so an evicted blob comes
back through the normal miss path, fetched from upstream again.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hfpull.blobstore import BlobStore
from hfpull.models import RemoteFile
from hfpull.serve.pins import Pins

LOW_WATER = 0.9


@dataclass(frozen=True)
class PassReport:
    evicted: int
    freed: int
    seconds: float
    used: int  # bytes counted toward the cap after the pass
    pinned: int  # blobs that would have gone but were in use


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Evictor:
    """Pins (always) and, with a cap, the running total and the eviction worker."""

    def __init__(
        self,
        store: BlobStore,
        cap: int | None,
        log: Callable[[str], None] = _stderr,
        worker: bool = True,  # False: passes run only when run_pass() is called (tests)
    ) -> None:
        self.pins = Pins()
        self.cap = cap
        self._inner = store
        self._log = log
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}  # fills in progress: blob -> its size
        self._wake = threading.Event()
        self.store: BlobStore = store if cap is None else _CountingStore(store, self)
        self._stored = 0
        if cap is not None:
            self._stored = sum(size for _, size, _ in store.usage())
            if worker:
                threading.Thread(target=self._work, name="hfpull-evict", daemon=True).start()
            self._wake_if_over()

    @property
    def used(self) -> int:
        """Bytes counted toward the cap: stored blobs and fills in progress."""
        with self._lock:
            return self._stored + sum(self._reserved.values())

    @contextmanager
    def serving(self, key: str) -> Iterator[None]:
        """Held by a response from before it looks the blob up until it ends."""
        self.pins.pin(key)
        try:
            yield
        finally:
            if self.pins.unpin(key):
                self._wake_if_over()

    @contextmanager
    def filling(self, file: RemoteFile) -> Iterator[None]:
        """Held by a fill from start until it published or failed; reserves its size."""
        self.pins.pin(file.etag)
        if self.cap is not None and self._inner.size(file.etag) is None:
            with self._lock:
                self._reserved[file.etag] = file.size
            self._wake_if_over()
        try:
            yield
        finally:
            with self._lock:
                self._reserved.pop(file.etag, None)
            self.pins.unpin(file.etag)
            self._wake_if_over()

    def run_pass(self) -> PassReport | None:
        """One eviction pass if over the cap (None if not). Blocking: a worker thread's job."""
        if self.cap is None or self.used <= self.cap:
            return None
        started = time.monotonic()
        low = int(self.cap * LOW_WATER)
        oldest_first = sorted(self._inner.usage(), key=lambda use: (use[2], use[0]))
        evicted = freed = pinned = 0
        for key, size, _ in oldest_first:
            if self.used <= low:
                break
            with self.pins.evicting(key) as free:
                if not free:
                    pinned += 1
                elif self.store.delete(key):
                    evicted += 1
                    freed += size
        report = PassReport(evicted, freed, time.monotonic() - started, self.used, pinned)
        self._log(describe(report, self.cap))
        return report

    def note_put(self, key: str, added: int) -> None:
        with self._lock:
            self._stored += added
            self._reserved.pop(key, None)  # the fill's reservation is now a stored blob
        self._wake_if_over()

    def note_delete(self, size: int) -> None:
        with self._lock:
            self._stored -= size

    def _wake_if_over(self) -> None:
        if self.cap is not None and self.used > self.cap:
            self._wake.set()

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.run_pass()
            except Exception as exc:  # a store error must not end eviction for good
                self._log(f"hfpull serve: eviction pass failed: {type(exc).__name__}: {exc}")


def describe(report: PassReport, cap: int) -> str:
    kept = f"; {report.pinned} blobs in use kept" if report.pinned else ""
    return (
        f"hfpull serve: eviction pass: {report.evicted} blobs evicted, {human(report.freed)} "
        f"freed in {report.seconds * 1000:.0f} ms; {human(report.used)} of {human(cap)} "
        f"used{kept}"
    )


def human(n: int) -> str:
    """Decimal units, as --max-cache-size reads them."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class _CountingStore:
    """The store as the mirror sees it with a cap: every put and delete keeps the total."""

    def __init__(self, inner: BlobStore, evictor: Evictor) -> None:
        self._inner = inner
        self._evictor = evictor

    @property
    def partial_dir(self) -> Path:
        return self._inner.partial_dir

    def size(self, key: str) -> int | None:
        return self._inner.size(key)

    def local_path(self, key: str) -> Path | None:
        return self._inner.local_path(key)

    def read(self, key: str, start: int, end: int) -> bytes:
        return self._inner.read(key, start, end)

    def put(self, key: str, verified: Path) -> None:
        before = self._inner.size(key) or 0
        self._inner.put(key, verified)
        self._evictor.note_put(key, (self._inner.size(key) or 0) - before)

    def adopt(self, key: str, verified: Path) -> None:
        """A blob a fleet fill composed on the object store: count it; the inner store keeps
        the verified local file (a local cache) or it is deleted."""
        size = verified.stat().st_size
        self._inner.adopt(key, verified)
        self._evictor.note_put(key, size)

    def delete(self, key: str) -> bool:
        size = self._inner.size(key)
        deleted = self._inner.delete(key)
        if deleted and size is not None:
            self._evictor.note_delete(size)
        return deleted

    def keys(self) -> Iterator[tuple[str, int]]:
        return self._inner.keys()

    def touch(self, key: str) -> None:
        self._inner.touch(key)

    def usage(self) -> Iterator[tuple[str, int, float]]:
        return self._inner.usage()
