"""Pins: blobs in use, which eviction must leave alone.

A response pins its blob from before it looks in the store until its last byte is written
(or the connection drops); a fill pins its blob from start until it published or failed.
Eviction deletes a blob only through ``evicting``, which refuses a pinned blob and makes a
``pin`` of that blob wait until the delete is done. So a client that found a blob in the
store can always open it, and a client that arrives during its delete finds it gone and
takes the normal miss path. An open file descriptor would keep a local blob readable after
its unlink, but a remote store has no such thing: the pin is the guarantee.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class Pins:
    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._being_evicted: set[str] = set()
        self._changed = threading.Condition()

    def count(self, key: str) -> int:
        with self._changed:
            return self._held[key]

    def pin(self, key: str) -> None:
        """Take a pin; waits only while this very blob is being deleted (one unlink)."""
        with self._changed:
            while key in self._being_evicted:
                self._changed.wait()
            self._held[key] += 1

    def unpin(self, key: str) -> bool:
        """Drop a pin; True when it was the blob's last one."""
        with self._changed:
            self._held[key] -= 1
            if self._held[key] > 0:
                return False
            del self._held[key]
            return True

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        self.pin(key)
        try:
            yield
        finally:
            self.unpin(key)

    @contextmanager
    def evicting(self, key: str) -> Iterator[bool]:
        """Yields False (do not delete) if the blob is pinned; else True, and no pin can be
        taken on it until the block ends."""
        with self._changed:
            free = self._held[key] == 0 and key not in self._being_evicted
            if free:
                self._being_evicted.add(key)
        if not free:
            yield False
            return
        try:
            yield True
        finally:
            with self._changed:
                self._being_evicted.discard(key)
                self._changed.notify_all()
