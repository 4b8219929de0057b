"""Small blobs skip the claim: a private temp file, no lock, no journal, nothing to resume.

The claim protocol (engine/partial.py) costs about ten file creations, renames and unlinks per
blob, all in the one directory the partials share; on a disk where a create takes 0.1–0.8 ms
and creates in one directory serialise, a repo of 500 small files spent more time in those
steps than on the network (bench_suite S3). For a blob this small, resuming saves nothing and
two processes fetching it twice costs one round trip, so each writer gets a file of its own
(created exclusively under a random name), and the verified file is renamed to its final
path: if two processes race, both renames put the same verified bytes in place.

A temp file left by a killed process is removed by a later run once it is an hour old (the
writes of a live transfer keep its mtime fresh, and a transfer stalls out long before that).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hfpull.engine.partial import IntervalSet
from hfpull.fs import unlink_quiet
from hfpull.models import RemoteFile

STALE_SECONDS = 3600.0
_SUFFIX = ".hfpull-small.tmp"


def is_small(file: RemoteFile, limit: int) -> bool:
    """``limit``: Settings.small_blob (1 MiB by default; 0 sends every blob through the claim)."""
    return limit > 0 and file.size <= limit


class SmallPartial:
    """The partial-file interface of :class:`~hfpull.engine.partial.Partial`, unclaimed."""

    def __init__(self, directory: Path, file: RemoteFile) -> None:
        self.file = file
        self.data_path = directory / f"{file.etag}.{secrets.token_hex(8)}{_SUFFIX}"
        self.fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self.done = IntervalSet()
        self._lock = threading.Lock()

    def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def mark_done(self, start: int, end: int) -> None:
        with self._lock:
            self.done.add(start, end)

    def snapshot_done(self) -> IntervalSet:
        with self._lock:
            return IntervalSet(self.done.ranges)

    # No journal: progress of a small blob is not worth recording.
    def flush_if_due(self, interval: float = 0.0) -> None:
        pass

    def flush_journal(self, force: bool = False) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def reset(self) -> None:
        with self._lock:
            self.done = IntervalSet()
        os.ftruncate(self.fd, 0)

    def publish(self, publish: Callable[[Path], None]) -> None:
        """Verified bytes go to their final path: ``publish`` renames the file there."""
        os.fsync(self.fd)
        publish(self.data_path)
        self.close()

    def release(self) -> None:
        """Stopped before the end: nothing is kept (a small blob is fetched again whole)."""
        self.discard()

    def discard(self) -> None:
        self.close()
        unlink_quiet(self.data_path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def remove_stale(directory: Path, now: float | None = None) -> None:
    """Remove small-blob temp files that killed processes left (older than STALE_SECONDS)."""
    cutoff = (time.time() if now is None else now) - STALE_SECONDS
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.endswith(_SUFFIX):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    unlink_quiet(Path(entry.path))
            except FileNotFoundError:
                pass
