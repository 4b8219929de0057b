"""Seed the mirror's store from an existing HF cache (or an unpacked ``hfpull pack``).

Every blob is re-hashed before it is taken (a cache may hold damaged files); it is
hard-linked when the cache is on the same filesystem, else copied. Revisions whose complete
file list is known (``trees/<commit>.json``, which hfpull writes and unpack restores) also
seed the metadata, so an air-gapped mirror started with ``--offline`` serves them by branch
and by commit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hfpull.blobstore import BlobStore
from hfpull.cache.layout import CacheLayout
from hfpull.cache.offline import cached_snapshot
from hfpull.errors import HfpullError
from hfpull.hashing import hash_file
from hfpull.models import RemoteFile, RepoRef
from hfpull.serve.metadata import MetadataCache

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class SeedReport:
    blobs: int = 0
    revisions: int = 0
    refused: int = 0  # blobs whose bytes did not match their name


def seed(store: BlobStore, metadata: MetadataCache, cache_dir: Path) -> SeedReport:
    report = SeedReport()
    refused: set[str] = set()
    for folder in sorted(cache_dir.glob("*--*")):
        kind, _, rest = folder.name.partition("--")
        if kind not in _TYPES or not (folder / "snapshots").is_dir():
            continue
        repo = RepoRef(rest.replace("--", "/"), _TYPES[kind])
        cache = CacheLayout(cache_dir, repo)
        for revision in _revisions(folder):
            try:
                snapshot = cached_snapshot(cache, revision)
            except HfpullError:
                continue
            for file in snapshot.files:
                if file.etag in refused:
                    continue
                taken = _take(store, cache, file)
                report.blobs += taken is True
                if taken is False:
                    refused.add(file.etag)
            if snapshot.listing_complete:
                metadata.remember(repo, revision, snapshot)
                report.revisions += 1
    report.refused = len(refused)
    return report


def _revisions(folder: Path) -> list[str]:
    refs = folder / "refs"
    names = [str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()]
    commits = [p.name for p in (folder / "snapshots").iterdir() if p.is_dir()]
    return names + commits


def _take(store: BlobStore, cache: CacheLayout, file: RemoteFile) -> bool | None:
    """True: stored now; False: refused (bad bytes); None: absent or already stored."""
    if store.size(file.etag) == file.size:
        return None
    blob = cache.blob_path(file)
    try:
        if blob.stat().st_size != file.size:
            return False
    except FileNotFoundError:
        return None
    if hash_file(str(blob), file) != file.etag:
        return False
    store.partial_dir.mkdir(parents=True, exist_ok=True)
    staged = store.partial_dir / f"{file.etag}.seed"
    staged.unlink(missing_ok=True)
    try:
        os.link(blob, staged)  # same filesystem: no copy
    except OSError:
        shutil.copyfile(blob, staged)
    store.put(file.etag, staged)
    return True
