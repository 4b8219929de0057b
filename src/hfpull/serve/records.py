"""Where the metadata cache keeps its records: local disk, or the shared object store.

A record is one JSON document named by its cache key (``snap/…``, ``ref/…``, ``api/…``).
Keys come from repo ids, revisions and query strings, so a record's name is the SHA-256 of
its key: nothing a client sends can shape a file or object name. On the object store every
replica reads and writes the same records (``meta/<kind>/<digest>.json``), so they share
file lists and branch -> commit answers; on local disk the layout is the one of earlier
releases (``meta/<ab>/<digest>.json``), so existing caches keep working.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from hfpull.blobstore.objects import ObjectStore
from hfpull.fs import atomic_write

_KIND = re.compile(r"[a-z]{1,16}")


class Records(Protocol):
    shared: bool  # other replicas may write these records (re-read before asking upstream)

    def load(self, key: str) -> bytes | None:
        """The record's body, or None if there is none."""

    def save(self, key: str, body: bytes) -> None: ...

    def scan(self, kind: str, head: bytes) -> Iterator[bytes]:
        """Bodies of records that may be of ``kind`` (their key starts with ``kind/``): a
        local scan keeps files that begin with ``head``; callers check the key anyway."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class LocalRecords:
    shared = False

    def __init__(self, directory: Path, flat: bool = False) -> None:
        self.directory = directory
        self.flat = flat  # ``<digest>.json`` without the ``<ab>/`` fan-out (visibility records)

    def _path(self, key: str) -> Path:
        digest = _digest(key)
        if self.flat:
            return self.directory / f"{digest}.json"
        return self.directory / digest[:2] / f"{digest}.json"

    def load(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    def save(self, key: str, body: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, body)

    def scan(self, kind: str, head: bytes) -> Iterator[bytes]:
        for path in sorted(self.directory.glob("*.json" if self.flat else "*/*.json")):
            try:
                with path.open("rb") as handle:
                    if handle.read(len(head)) != head:
                        continue
                    yield head + handle.read()
            except OSError:
                continue


class ObjectRecords:
    shared = True

    def __init__(self, objects: ObjectStore, prefix: str = "meta/") -> None:
        self.objects = objects
        self.prefix = prefix

    def _name(self, key: str) -> str:
        kind = key.split("/", 1)[0]
        return f"{self.prefix}{kind if _KIND.fullmatch(kind) else 'other'}/{_digest(key)}.json"

    def load(self, key: str) -> bytes | None:
        found = self.objects.get(self._name(key))
        return None if found is None else found[0]

    def save(self, key: str, body: bytes) -> None:
        self.objects.put(self._name(key), body)  # last writer wins: both asked upstream

    def scan(self, kind: str, head: bytes) -> Iterator[bytes]:
        for info in self.objects.scan(f"{self.prefix}{kind}/"):
            found = self.objects.get(info.name)
            if found is not None:
                yield found[0]
