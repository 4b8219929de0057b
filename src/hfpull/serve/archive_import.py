"""Seed the mirror's store from ``hfpull pack`` archives (the air gap's way in).

Every archive is read with unpack's checking reader: each member is hashed (SHA-256, and
the git blob SHA-1 for non-LFS files) against the manifest while it is staged beside the
store, so blobs are verified exactly once and then renamed into ``blobs/``. All archives are
checked before anything is stored: a hostile, corrupt or truncated one imports nothing.
Archives holding a whole commit (no --include/--exclude) also seed the metadata, by commit
and by the revision they were packed from, so ``hfpull serve --offline`` serves them.

The store may be in use by a running mirror: blobs appear by atomic rename and metadata
records by atomic replace; see docs/mirror.md for what a running mirror sees.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hfpull.blobstore.local import LocalBlobStore
from hfpull.engine.scheduler import group_by_blob
from hfpull.events import ProgressCallback, ignore
from hfpull.fs import disk_errors
from hfpull.models import RepoRef, Snapshot
from hfpull.serve.metadata import MetadataCache
from hfpull.unpack import ArchiveContents, read_archive


@dataclass(frozen=True)
class ImportReport:
    source: str
    snapshot: Snapshot
    blobs_new: int  # blobs stored now
    blobs_present: int  # already in the store
    bytes_new: int
    metadata: bool  # the revision resolves offline (the archive holds the whole commit)


def import_archives(
    sources: Sequence[str],
    store_root: Path,
    open_source: Callable[[str], AbstractContextManager[IO[bytes]]],
    progress: ProgressCallback | None = None,
) -> list[ImportReport]:
    """Check every archive completely, then store their blobs and seed their metadata."""
    emit = progress or ignore
    store = LocalBlobStore(store_root)
    with disk_errors("could not prepare the store"):
        store_root.mkdir(parents=True, exist_ok=True)
    with _staging(store_root) as staging:
        checked: list[tuple[str, ArchiveContents]] = []
        for index, source in enumerate(sources):
            folder = staging / f"{index:04d}"
            folder.mkdir()
            with open_source(source) as handle:
                checked.append((source, read_archive(handle, folder, emit)))
        metadata = MetadataCache(store_root / "meta", 0.0, True, _no_resolve, _no_api)
        return [_store(source, contents, store, metadata) for source, contents in checked]


def _store(
    source: str, contents: ArchiveContents, store: LocalBlobStore, metadata: MetadataCache
) -> ImportReport:
    manifest = contents.manifest
    files = tuple(f.remote for f in manifest.files)
    new = present = new_bytes = 0
    with disk_errors("could not store the archive's blobs"):
        for group in group_by_blob(list(files)):
            file = group[0]
            if store.size(file.etag) == file.size:
                present += 1
                continue
            store.put(file.etag, contents.staged[file.path])  # verified by read_archive
            new += 1
            new_bytes += file.size
    snapshot = Snapshot(manifest.repo, manifest.revision, manifest.commit, files,
                        manifest.complete)  # fmt: skip
    if manifest.complete:  # a filtered archive must not pose as the commit's whole listing
        with disk_errors("could not write the store's metadata"):
            metadata.remember(manifest.repo, manifest.commit, snapshot)
            # the branch it was packed from resolves to it while upstream cannot be asked
            metadata.remember_commit(manifest.repo, manifest.revision, manifest.commit)
    return ImportReport(source, snapshot, new, present, new_bytes, manifest.complete)


@contextmanager
def _staging(root: Path) -> Iterator[Path]:
    """A private folder on the store's filesystem (renames into blobs/), always removed."""
    folder = root / f".import-{secrets.token_hex(6)}"
    with disk_errors("could not create a staging folder in the store"):
        folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _no_resolve(repo: RepoRef, revision: str) -> Snapshot:
    raise AssertionError("an import never asks upstream")


def _no_api(path_qs: str, form: bytes | None) -> tuple[int, bytes, dict[str, str]]:
    raise AssertionError("an import never asks upstream")
