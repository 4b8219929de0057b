"""Blobs on an object store: ``blobs/<first two hex digits>/<hash>``, shared by replicas.

Blobs are immutable, so a size once seen is kept in memory (bounded); a "not stored" answer
is kept only NEGATIVE_TTL seconds, since another replica may store the blob any moment.

Last use, for LRU eviction of the shared store: an object's modified time cannot be bumped
without rewriting it, so a hit writes an empty ``used/<hash>`` marker instead, at most once
per TOUCH_INTERVAL per blob and replica, from a background thread (``touch`` never blocks,
so the hit path may call it on the event loop). A blob's last use is the newer of its own
modified time and its marker's. Markers are best effort: one lost while the store is down
only makes that blob look older.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from hfpull.blobstore.local import TOUCH_INTERVAL, check_key
from hfpull.blobstore.objects import ObjectStore, StoreUnavailable

NEGATIVE_TTL = 2.0  # seconds a "not stored" answer is reused
KNOWN_SIZES = 100_000  # sizes remembered (a few MB of memory)
BLOBS = "blobs/"
USED = "used/"
_NAME = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{40}|[0-9a-f]{64})")


def blob_name(key: str) -> str:
    """The object name of a blob (the fleet's final uploads use it too)."""
    check_key(key)
    return f"{BLOBS}{key[:2]}/{key}"


class ObjectBlobStore:
    def __init__(self, objects: ObjectStore, partial_dir: Path) -> None:
        self.objects = objects
        self._partial_dir = partial_dir
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._absent: dict[str, float] = {}  # key -> monotonic time the answer expires
        self._touched: dict[str, float] = {}  # key -> last marker queued (monotonic)
        self._lock = threading.Lock()
        self._touches: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._toucher: threading.Thread | None = None

    @property
    def partial_dir(self) -> Path:
        return self._partial_dir

    def size(self, key: str) -> int | None:
        name = blob_name(key)
        now = time.monotonic()
        with self._lock:
            known = self._sizes.get(key)
            if known is not None:
                self._sizes.move_to_end(key)
                return known
            if self._absent.get(key, 0.0) > now:
                return None
        info = self.objects.head(name)
        with self._lock:
            if info is None:
                self._absent[key] = now + NEGATIVE_TTL
                if len(self._absent) > KNOWN_SIZES:  # expired ones go; the rest stay
                    self._absent = {k: t for k, t in self._absent.items() if t > now}
                return None
            self._know(key, info.size)
        return info.size

    def _know(self, key: str, size: int) -> None:
        self._absent.pop(key, None)
        self._sizes[key] = size
        self._sizes.move_to_end(key)
        while len(self._sizes) > KNOWN_SIZES:
            self._sizes.popitem(last=False)

    def local_path(self, key: str) -> Path | None:
        return None

    def read(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end): the hit path asks for at most 1 MiB at a time."""
        return b"".join(self.objects.get_range(blob_name(key), start, end))

    def upload(self, key: str, verified: Path) -> None:
        """Store a verified file, leaving the local file where it is."""
        size = verified.stat().st_size
        self.objects.upload_file(blob_name(key), str(verified))
        with self._lock:
            self._know(key, size)

    def put(self, key: str, verified: Path) -> None:
        self.upload(key, verified)
        verified.unlink(missing_ok=True)

    def adopt(self, key: str, verified: Path) -> None:
        """The blob was stored by other means (a fleet fill composed it from chunks): note
        its size and drop the local file."""
        size = verified.stat().st_size
        verified.unlink(missing_ok=True)
        with self._lock:
            self._know(key, size)

    def delete(self, key: str) -> bool:
        existed = self.objects.head(blob_name(key)) is not None
        self.objects.delete(blob_name(key))
        self.objects.delete(USED + key)
        with self._lock:
            self._sizes.pop(key, None)
            self._touched.pop(key, None)
        return existed

    def keys(self) -> Iterator[tuple[str, int]]:
        for info in self.objects.scan(BLOBS):
            match = _NAME.fullmatch(info.name)
            if match and match.group(2).startswith(match.group(1)):
                yield match.group(2), info.size

    def touch(self, key: str) -> None:
        check_key(key)
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(key, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
                return
            self._touched[key] = now
            if len(self._touched) > KNOWN_SIZES:
                self._touched = {k: t for k, t in self._touched.items() if now - t < TOUCH_INTERVAL}
            if self._toucher is None:
                self._toucher = threading.Thread(
                    target=self._write_markers, name="hfpull-touch", daemon=True
                )
                self._toucher.start()
        self._touches.put(key)

    def _write_markers(self) -> None:
        while True:
            key = self._touches.get()
            try:
                self.objects.put(USED + key, b"")
            except StoreUnavailable:
                with self._lock:  # try again at the next hit
                    self._touched.pop(key, None)
            except Exception:  # noqa: S112 (best effort: a marker must not end the thread)
                continue

    def usage(self) -> Iterator[tuple[str, int, float]]:
        used = {info.name[len(USED) :]: info.modified for info in self.objects.scan(USED)}
        for info in self.objects.scan(BLOBS):
            match = _NAME.fullmatch(info.name)
            if match and match.group(2).startswith(match.group(1)):
                key = match.group(2)
                yield key, info.size, max(info.modified, used.get(key, 0.0))
