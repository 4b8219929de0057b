"""Content-addressed blobs for the mirror: one interface, a local-disk implementation.

A blob is named by its hash (SHA-256 for LFS files, git blob SHA-1 otherwise), whatever repo
or revision asked for it, so a file shared by two repos is stored once. Nothing above this
interface may assume a blob is a local file: ``local_path`` is an optimisation (zero-copy
responses) that a remote store answers with None.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    @property
    def partial_dir(self) -> Path:
        """Where fills keep their partials (same filesystem as the blobs, for rename)."""

    def size(self, key: str) -> int | None:
        """The stored blob's size, or None if it is not stored."""

    def local_path(self, key: str) -> Path | None:
        """A local file holding the blob, for zero-copy serving; None if not local."""

    def read(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a stored blob."""

    def put(self, key: str, verified: Path) -> None:
        """Store a file whose hash was checked against ``key`` (moved, not copied)."""

    def adopt(self, key: str, verified: Path) -> None:
        """The blob was stored by other means (a fleet fill composed it on the object store);
        ``verified`` is its checked local file: kept as a local copy, or removed."""

    def delete(self, key: str) -> bool: ...

    def keys(self) -> Iterator[tuple[str, int]]:
        """Every stored blob and its size."""

    def touch(self, key: str) -> None:
        """Record a use of the blob now (for LRU eviction); cheap enough for every hit, so
        implementations may record at most one use per blob every few minutes."""

    def usage(self) -> Iterator[tuple[str, int, float]]:
        """Every stored blob, its size and its last use (epoch seconds), in any order."""
