"""The object-store operations the mirror needs, whatever S3-compatible store is behind them.

Two implementations are meant to stand behind this: one speaking S3 (``blobstore.s3``) and an
in-memory one for unit tests. Everything above it (the S3 blob store, fleet-wide leases, shared
metadata) is written against this protocol only, so the conditional-write rules live in one
place and are testable without a server.

Names are object keys relative to the store's prefix (``blobs/ab/abcd…``, ``leases/…``).
ETags are compared as the store returns them (quotes included); callers never parse them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from hfpull.errors import HfpullError, NetworkError


class StoreUnavailable(NetworkError):
    """The object store did not answer (down, timeout, 5xx, throttled): try again later.
    The mirror answers 503 for it; nothing is written or deleted on its account."""


class PreconditionFailed(HfpullError):
    """A conditional write or delete lost: the object exists (If-None-Match: *) or its ETag
    changed (If-Match). Someone else got there first."""


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    etag: str
    modified: float  # epoch seconds, the store's clock


class ObjectStore(Protocol):
    def head(self, name: str) -> ObjectInfo | None:
        """The object's size and ETag, or None if it does not exist."""

    def get(self, name: str) -> tuple[bytes, str] | None:
        """A small object's whole body and its ETag, or None if it does not exist."""

    def get_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of an object, streamed in chunks (constant memory).
        Raises NotFoundError if the object does not exist."""

    def put(
        self, name: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write a small object; its new ETag. ``if_none_match``: only if absent;
        ``if_match``: only if its ETag is still this. Raises PreconditionFailed otherwise."""

    def upload_file(self, name: str, path: str, *, if_none_match: bool = False) -> str:
        """Write a local file of any size (multipart above a threshold); its new ETag."""

    def delete(self, name: str) -> None:
        """Remove an object; no error if it is already gone."""

    def scan(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in name order."""

    # Multipart: how a lease holder writes a blob while it is still arriving.
    def create_multipart(self, name: str) -> str:
        """A new multipart upload's id."""

    def upload_part(self, name: str, upload_id: str, number: int, body: bytes) -> str:
        """Upload part ``number`` (1-based; every part but the last ≥ 5 MiB); its ETag."""

    def upload_part_copy(
        self, name: str, upload_id: str, number: int, source: str, start: int, end: int
    ) -> str:
        """Part ``number`` copied server-side from bytes [start, end) of ``source``; its ETag."""

    def complete_multipart(
        self,
        name: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        if_none_match: bool = False,
    ) -> str:
        """Make the object from its parts ``(number, etag)``; its ETag."""

    def abort_multipart(self, name: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts; no error if it is already gone."""

    def list_multipart(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Unfinished uploads ``(name, upload_id)`` under ``prefix`` (left by a dead replica)."""
