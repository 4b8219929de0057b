"""Blobs on local disk: ``<root>/blobs/<first two hex digits>/<hash>``.

A blob's last use is its file's mtime, not its atime: ``noatime`` and ``relatime`` mounts
(relatime is Linux's default) do not update atime on every read, and nothing else writes a
stored blob, so mtime is free to mean "last served". It survives restarts with no index to
keep. Hits set it at most once per TOUCH_INTERVAL per blob, so a busy mirror does not turn
reads into metadata writes.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from hfpull.errors import UnsafeInputError
from hfpull.fs import fsync_dir

TOUCH_INTERVAL = 60.0  # seconds: LRU needs the order of uses, not their exact times
_KEY = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise UnsafeInputError(f"not a blob hash: {key[:80]!r}")
    return key


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"

    @property
    def partial_dir(self) -> Path:
        return self.root / "partials"

    def path(self, key: str) -> Path:
        check_key(key)
        return self.blobs / key[:2] / key

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, key: str) -> Path | None:
        return self.path(key) if self.size(key) is not None else None

    def read(self, key: str, start: int, end: int) -> bytes:
        with open(self.path(key), "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)

    def put(self, key: str, verified: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(verified, target)  # same inode: readers of the partial keep reading
        fsync_dir(target.parent)

    def adopt(self, key: str, verified: Path) -> None:
        self.put(key, verified)  # local disk is the store: the verified file is the blob

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def keys(self) -> Iterator[tuple[str, int]]:
        if not self.blobs.is_dir():
            return
        for folder in sorted(self.blobs.iterdir()):
            for blob in sorted(folder.iterdir()):
                if _KEY.fullmatch(blob.name):
                    yield blob.name, blob.stat().st_size

    def touch(self, key: str) -> None:
        path = self.path(key)
        try:
            if time.time() - path.stat().st_mtime >= TOUCH_INTERVAL:
                os.utime(path)
        except FileNotFoundError:  # evicted meanwhile: nothing to record
            pass

    def usage(self) -> Iterator[tuple[str, int, float]]:
        try:
            folders = list(os.scandir(self.blobs))
        except FileNotFoundError:
            return
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            with os.scandir(folder.path) as entries:
                for entry in entries:
                    if not _KEY.fullmatch(entry.name):
                        continue
                    try:
                        stat = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # deleted while we looked
                        continue
                    yield entry.name, stat.st_size, stat.st_mtime
