"""What the local HF cache knows about a repo, without the network: the commit a revision
points at (``refs/``), and the file list of a commit (``trees/<commit>.json``, or rebuilt
from the snapshot's links when an older huggingface_hub wrote no tree cache)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hfpull.cache.layout import CacheLayout
from hfpull.errors import NotFoundError, UnsafeInputError
from hfpull.hashing import git_blob_sha1, lfs_pointer
from hfpull.models import RemoteFile, Snapshot
from hfpull.names import COMMIT_RE, SHA256_RE, check_repo_path, file_record_problem


def cached_commit(cache: CacheLayout, revision: str) -> str:
    if COMMIT_RE.match(revision):
        return revision
    ref = cache.repo_dir / "refs" / revision
    try:
        commit = ref.read_text(encoding="ascii").strip()
    except OSError:
        raise NotFoundError(
            f"{revision!r} of {cache.repo_dir.name} is not in the cache {cache.cache_dir}",
            hint="download it first (hfpull get), or pass --cache-dir",
        ) from None
    if not COMMIT_RE.match(commit):
        raise UnsafeInputError(f"{ref} does not hold a commit id")
    return commit


def cached_snapshot(cache: CacheLayout, revision: str) -> Snapshot:
    commit = cached_commit(cache, revision)
    files = _from_tree_cache(cache, commit)
    complete = files is not None
    if files is None:
        files = _from_snapshot_links(cache, commit)
    ordered = tuple(sorted(files, key=lambda f: f.path))
    return Snapshot(cache.repo, revision, commit, ordered, listing_complete=complete)


def lfs_pointer_blob_id(sha256: str, size: int) -> str:
    """Git blob id of the LFS pointer file, which is what the Hub lists for LFS files."""
    return git_blob_sha1(lfs_pointer(sha256, size))


def _from_tree_cache(cache: CacheLayout, commit: str) -> list[RemoteFile] | None:
    return read_tree_listing(cache.repo_dir / "trees" / f"{commit}.json")


def read_tree_listing(path: Path) -> list[RemoteFile] | None:
    """Files from a ``trees/<commit>.json`` (huggingface_hub's format); None if absent or
    damaged. Hashes become file names, so a damaged listing is not trusted at all."""
    try:
        entries = json.loads(path.read_text())["files"].items()
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    files = []
    for name, info in entries:
        try:
            sha256, blob_id, size = info.get("lfs_sha256"), info["blob_id"], info["size"]
        except (KeyError, TypeError, AttributeError):
            return None
        if file_record_problem(size, blob_id, sha256) is not None:
            return None
        files.append(RemoteFile(check_repo_path(name), size, blob_id, sha256))
    return files


def _from_snapshot_links(cache: CacheLayout, commit: str) -> list[RemoteFile]:
    root = cache.result_path(commit)
    if not root.is_dir():
        raise NotFoundError(f"commit {commit[:12]} of {cache.repo_dir.name} is not in the cache")
    files = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            path = check_repo_path(os.path.relpath(full, root).replace(os.sep, "/"))
            etag = os.path.basename(os.readlink(full)) if os.path.islink(full) else ""
            if not (SHA256_RE.match(etag) or COMMIT_RE.match(etag)):
                continue  # not a link into blobs/: nothing tells us what it should be
            size = os.stat(full).st_size
            if SHA256_RE.match(etag):
                files.append(RemoteFile(path, size, lfs_pointer_blob_id(etag, size), etag))
            else:
                files.append(RemoteFile(path, size, etag))
    return files
