"""A size-capped local disk cache in front of the shared object store.

Hits on blobs held locally go out by sendfile from ``local_path``, and still serve when the
object store is down. A blob this replica filled is kept locally (the verified file is
uploaded, then moved into the cache); a blob first read from the object store is copied to
local disk once, in the background, while the first client streams it from the store; the
copy is kept only if it hashes to its key (a store's bit rot never becomes a sendfile hit).

The cache has its own cap and its own LRU (each local blob's mtime, as LocalBlobStore keeps
it): over the cap, the least recently used local copies go until LOW_WATER of it is left.
Evicting here never deletes anything from the shared store. ``keys``/``usage`` describe the
shared store: it is the mirror's store, this is only a copy of part of it.
"""

from __future__ import annotations

import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hfpull.blobstore.local import LocalBlobStore
from hfpull.blobstore.remote import ObjectBlobStore, blob_name
from hfpull.errors import HfpullError
from hfpull.hashing import key_hasher

LOW_WATER = 0.9


class CachedBlobStore:
    def __init__(self, remote: ObjectBlobStore, local: LocalBlobStore, cap_bytes: int) -> None:
        self.remote = remote
        self.local = local
        self.cap = cap_bytes
        self._lock = threading.Lock()
        self._copying: set[str] = set()
        self._copier = ThreadPoolExecutor(2, thread_name_prefix="hfpull-cache-copy")
        self._scratch = local.root / "cache-copies"  # beside the blobs: a rename publishes
        shutil.rmtree(self._scratch, ignore_errors=True)  # copies a crash left half done
        self._used = sum(size for _, size, _ in local.usage())
        self.copies = 0  # blobs copied from the object store (for tests and the status)
        self.rejected = 0  # copies that did not hash to their key (not kept)
        self._trim()

    @property
    def partial_dir(self) -> Path:
        return self.local.partial_dir

    @property
    def used(self) -> int:
        """Bytes of blobs in the local cache."""
        with self._lock:
            return self._used

    def size(self, key: str) -> int | None:
        size = self.local.size(key)
        return size if size is not None else self.remote.size(key)

    def local_path(self, key: str) -> Path | None:
        """The local copy; None (and a copy started in the background) if there is none."""
        path = self.local.local_path(key)
        if path is None:
            self._copy_later(key)
        return path

    def read(self, key: str, start: int, end: int) -> bytes:
        try:
            return self.local.read(key, start, end)
        except FileNotFoundError:
            return self.remote.read(key, start, end)

    def put(self, key: str, verified: Path) -> None:
        size = verified.stat().st_size
        if size > self.cap:
            self.remote.put(key, verified)
            return
        self.remote.upload(key, verified)
        self._add(key, verified, size)

    def adopt(self, key: str, verified: Path) -> None:
        """The blob is on the object store already (a fleet fill composed it): keep the
        verified local file as this replica's copy if it fits."""
        size = verified.stat().st_size
        if size > self.cap:
            self.remote.adopt(key, verified)
            return
        self._add(key, verified, size)

    def delete(self, key: str) -> bool:
        self._drop(key)
        return self.remote.delete(key)

    def keys(self) -> Iterator[tuple[str, int]]:
        return self.remote.keys()

    def touch(self, key: str) -> None:
        self.local.touch(key)
        self.remote.touch(key)

    def usage(self) -> Iterator[tuple[str, int, float]]:
        return self.remote.usage()

    def close(self) -> None:
        self._copier.shutdown(wait=False, cancel_futures=True)

    # -- the local copy -------------------------------------------------------------------

    def _copy_later(self, key: str) -> None:
        with self._lock:
            if key in self._copying:
                return
            self._copying.add(key)
        try:
            self._copier.submit(self._copy, key)
        except RuntimeError:  # shut down
            with self._lock:
                self._copying.discard(key)

    def _copy(self, key: str) -> None:
        scratch = self._scratch / f"{key}.{uuid.uuid4().hex[:8]}"
        try:
            size = self.remote.size(key)
            if size is None or size > self.cap or self.local.size(key) is not None:
                return
            self._scratch.mkdir(parents=True, exist_ok=True)
            hasher = key_hasher(key, size)
            with scratch.open("wb") as out:
                for chunk in self.remote.objects.get_range(blob_name(key), 0, size):
                    out.write(chunk)
                    hasher.update(chunk)
            if scratch.stat().st_size != size or hasher.hexdigest() != key:
                print(f"hfpull serve: local cache: the store's {key} did not verify; not copied",
                      file=sys.stderr, flush=True)  # fmt: skip
                self.rejected += 1
                return  # no copy rather than a bad one: hits keep streaming from the store
            self._add(key, scratch, size)
            self.copies += 1
        except (HfpullError, OSError) as exc:
            print(f"hfpull serve: local cache: copy of {key} failed: {exc}", file=sys.stderr)
        finally:
            scratch.unlink(missing_ok=True)
            with self._lock:
                self._copying.discard(key)

    def _add(self, key: str, verified: Path, size: int) -> None:
        before = self.local.size(key) or 0
        self.local.put(key, verified)
        with self._lock:
            self._used += size - before
        self._trim()

    def _drop(self, key: str) -> None:
        size = self.local.size(key)
        if self.local.delete(key) and size is not None:
            with self._lock:
                self._used -= size

    def _trim(self) -> None:
        """Least recently used local copies go until LOW_WATER of the cap is left."""
        if self.used <= self.cap:
            return
        low = int(self.cap * LOW_WATER)
        for key, _size, _used in sorted(self.local.usage(), key=lambda u: (u[2], u[0])):
            if self.used <= low:
                break
            self._drop(key)
