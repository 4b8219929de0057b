"""Hash a blob while its ranges land out of order, without a second full read.

The hash covers the contiguous prefix [0, n) of the partial. A chunk landing exactly at n is
hashed from memory; ranges that finished earlier further on are read back (from the page
cache) once the prefix reaches them. After a resume the existing prefix is read once.
Hashed bytes are final, so they are handed to the disk as the prefix grows (``start_writeback``):
the fsync before publishing then finds almost nothing left to write.
"""

from __future__ import annotations

import threading

from hfpull.engine.partial import PartialFile
from hfpull.errors import IntegrityError
from hfpull.fs import start_writeback
from hfpull.hashing import Hasher, hash_range, new_hasher
from hfpull.models import RemoteFile

WRITEBACK_STEP = 16 << 20  # bytes hashed between two writeback hints


class PrefixHasher:
    def __init__(self, file: RemoteFile, partial: PartialFile) -> None:
        self.file = file
        self.partial = partial
        self._hasher: Hasher = new_hasher(file)
        self._hashed = 0
        self._written_back = 0  # hashed bytes already handed to the disk
        self._lock = threading.Lock()

    def landed(self, offset: int, data: bytes | memoryview) -> None:
        """Called after ``data`` was written at ``offset`` and recorded in the partial.

        Never blocks a writer: if another thread is hashing, it (or ``finish``) will pick
        this range up when the prefix reaches it."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if offset == self._hashed:
                self._hasher.update(data)
                self._hashed += len(data)
            self._catch_up()
            if self._hashed - self._written_back >= WRITEBACK_STEP:
                start_writeback(self.partial.fd, self._written_back, self._hashed)
                self._written_back = self._hashed
        finally:
            self._lock.release()

    def finish(self) -> str:
        """The digest of the whole blob; every byte must have landed."""
        with self._lock:
            self._catch_up()
            if self._hashed != self.file.size:
                raise IntegrityError(
                    f"{self.file.path}: download ended with a gap at byte {self._hashed}"
                )
            return self._hasher.hexdigest()

    def _catch_up(self) -> None:
        end = self.partial.snapshot_done().prefix_end()
        if end > self._hashed:
            hash_range(self.partial.fd, self._hasher, self._hashed, end)
            self._hashed = end
