"""Streaming content hashes: SHA-256 for LFS files, git blob SHA-1 for the rest.

No network or filesystem policy here; ``verify.py`` builds on these.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

from hfpull.models import RemoteFile

READ_CHUNK = 1 << 20  # one read (disk or network) at a time: memory stays flat per stream
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))  # files hashed in parallel (pack, verify)


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def new_hasher(file: RemoteFile) -> Hasher:
    """A hasher whose final hexdigest must equal ``file.etag`` when the bytes are right."""
    return key_hasher(file.etag, file.size)


def key_hasher(key: str, size: int) -> Hasher:
    """The hash a stored blob's key is: SHA-256 (64 hex, LFS) or git's blob SHA-1 (40 hex)."""
    if len(key) == 64:
        return hashlib.sha256()
    git = hashlib.sha1()  # noqa: S324 - git's object id, not a security primitive on its own
    git.update(b"blob %d\0" % size)
    return git


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324


def hash_range(fd: int, hasher: Hasher, start: int, end: int) -> None:
    """Feed bytes [start, end) of an open file into ``hasher``; memory stays at one chunk."""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(READ_CHUNK, end - pos), pos)
        if not chunk:
            raise OSError(f"file shorter than expected while hashing (at byte {pos})")
        hasher.update(chunk)
        pos += len(chunk)


def file_digests(path: str, file: RemoteFile) -> tuple[str, str]:
    """(digest under ``file``'s own hash, sha256 of the content) in a single read."""
    own, sha256 = new_hasher(file), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            own.update(chunk)
            sha256.update(chunk)
    return own.hexdigest(), sha256.hexdigest()


def hash_file(path: str, file: RemoteFile) -> str:
    """Hex digest of a whole file, using the hash that ``file`` is published under."""
    hasher = new_hasher(file)
    fd = os.open(path, os.O_RDONLY)
    try:
        hash_range(fd, hasher, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file stored in git for an LFS file (the Hub lists its blob id)."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )
