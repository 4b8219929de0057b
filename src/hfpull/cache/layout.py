"""Where verified bytes go: the Hugging Face cache layout, or a plain --local-dir.

Both layouts publish the same way: the verified partial is fsynced and renamed onto its final
name (atomic), then pointers/metadata are written with temp-file + ``os.replace``. Nothing
unverified is ever at a final path, and a failed run never damages what was complete before.
Directories below the target are created without following symlinks, so a planted link can
never redirect a write outside the target.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path

from hfpull.errors import DiskError, UnsafeInputError
from hfpull.fs import adjacent_tmp_path, atomic_write, disk_errors, fsync_dir, unlink_quiet
from hfpull.hashing import hash_file
from hfpull.models import FileStatus, RemoteFile, RepoRef, Snapshot
from hfpull.names import COMMIT_RE, validate_revision

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by hfpull (huggingface_hub layout).\n"
)


class CacheLayout:
    """``<cache>/models--org--name/{blobs,snapshots/<commit>,refs,trees}`` as huggingface_hub."""

    def __init__(self, cache_dir: Path, repo: RepoRef) -> None:
        self.repo = repo
        self.cache_dir = cache_dir
        self.repo_dir = cache_dir / repo.cache_folder_name
        self.blobs_dir = self.repo_dir / "blobs"
        self._folders = Folders()

    @property
    def partial_dir(self) -> Path:
        return self.blobs_dir  # partials live beside their final blob

    @property
    def disk_root(self) -> Path:
        return self.cache_dir

    def result_path(self, commit: str) -> Path:
        return self.repo_dir / "snapshots" / commit

    def blob_path(self, file: RemoteFile) -> Path:
        return self.blobs_dir / file.etag

    def pointer_path(self, commit: str, file: RemoteFile) -> Path:
        return self.result_path(commit) / file.path

    def preflight(self, files: list[RemoteFile], commit: str) -> None:
        """Fail before writing anything if a planted link sits on the way to a target."""
        targets = [self.pointer_path(commit, f) for f in files]
        check_no_symlinks(self.cache_dir, [*targets, self.blob_path(files[0])] if files else [])

    def status(self, file: RemoteFile, commit: str) -> FileStatus:
        blob = self.blob_path(file)
        if not _has_size(blob, file.size):
            return FileStatus.FETCH
        pointer = self.pointer_path(commit, file)
        if pointer.is_symlink():
            target = os.path.normpath(os.path.join(pointer.parent, os.readlink(pointer)))
            if target == os.path.normpath(blob) and _has_size(pointer, file.size):
                return FileStatus.PRESENT
        elif _has_size(pointer, file.size, follow=False):
            return FileStatus.PRESENT  # a copy (filesystems without symlinks)
        return FileStatus.LINK

    def publish(self, verified: Path, files: list[RemoteFile], commit: str) -> None:
        """Move a verified file (same filesystem) into place for ``files``; reuse an existing
        blob instead when one is already there."""
        blob = self.blob_path(files[0])
        if _has_size(blob, files[0].size):
            os.unlink(verified)  # already present (another process, or an earlier run)
        else:
            self._folders.ensure(self.cache_dir, self.blobs_dir)
            _move_into_place(verified, blob)
        self.place_existing(files, commit)

    def place_existing(self, files: list[RemoteFile], commit: str) -> None:
        for file in files:
            pointer = self.pointer_path(commit, file)
            self._folders.ensure(self.repo_dir, pointer.parent)
            blob = self.blob_path(file)
            _atomic_symlink(os.path.relpath(blob, pointer.parent), pointer, copy_from=blob)

    def finish(self, snapshot: Snapshot) -> Path:
        """Write ``refs/<revision>`` (branches and tags) and the tree cache; return the snapshot.

        The tree cache is written only from a complete listing: huggingface_hub's offline mode
        reads it to decide whether a snapshot is complete."""
        ensure_dirs(self.cache_dir, self.repo_dir)
        tag = self.cache_dir / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, CACHEDIR_TAG.encode())
        if snapshot.listing_complete:
            write_tree_cache(self.cache_dir, self.repo_dir, snapshot)
        if snapshot.revision != snapshot.commit:
            ref = self.repo_dir / "refs" / validate_revision(snapshot.revision)
            ensure_dirs(self.repo_dir, ref.parent)
            atomic_write(ref, snapshot.commit.encode())
        snapshot_dir = self.result_path(snapshot.commit)
        ensure_dirs(self.repo_dir, snapshot_dir)
        return snapshot_dir


class LocalDirLayout:
    """Plain files at their repo paths, plus huggingface_hub's local-dir metadata:
    ``.cache/huggingface/download/<path>.metadata`` = commit, etag, timestamp."""

    def __init__(self, local_dir: Path, cache: CacheLayout | None = None) -> None:
        self.root = local_dir
        self.meta_dir = local_dir / ".cache" / "huggingface"
        self.cache = cache  # the main HF cache: its blobs are copied instead of downloaded
        self._folders = Folders()

    @property
    def partial_dir(self) -> Path:
        return self.meta_dir / "download"

    @property
    def disk_root(self) -> Path:
        return self.root

    def result_path(self, commit: str) -> Path:
        return self.root

    def target(self, file: RemoteFile) -> Path:
        return self.root / file.path

    def metadata_path(self, file: RemoteFile) -> Path:
        return self.meta_dir / "download" / f"{file.path}.metadata"

    def preflight(self, files: list[RemoteFile], commit: str) -> None:
        targets = [self.target(f) for f in files] + [self.metadata_path(f) for f in files]
        check_no_symlinks(self.root, [*targets, self.partial_dir / "x"])

    def status(self, file: RemoteFile, commit: str) -> FileStatus:
        target = self.target(file)
        if not target.is_symlink() and _has_size(target, file.size, follow=False):
            if self._metadata_etag(file, target) == file.etag:
                return FileStatus.PRESENT
            # No trustworthy metadata (e.g. written by another tool): adopt it if the hash fits.
            if hash_file(str(target), file) == file.etag:
                self._write_metadata(file, commit)
                return FileStatus.PRESENT
        if self.cache is not None and _has_size(self.cache.blob_path(file), file.size):
            return FileStatus.LINK
        return FileStatus.FETCH

    def publish(self, verified: Path, files: list[RemoteFile], commit: str) -> None:
        first = files[0]
        self._folders.ensure(self.root, self.target(first).parent)
        _move_into_place(verified, self.target(first))
        self._write_metadata(first, commit)
        self._copy_to(self.target(first), files[1:], commit)

    def place_existing(self, files: list[RemoteFile], commit: str) -> None:
        """Give every path of this blob its copy: from the cache's blob, or (another process
        published it into this folder meanwhile) from a path that already holds it."""
        missing = [f for f in files if self.status(f, commit) is not FileStatus.PRESENT]
        if not missing:
            return
        present = [f for f in files if f not in missing]
        if present:
            source = self.target(present[0])
        else:
            assert self.cache is not None
            source = self.cache.blob_path(files[0])
        self._copy_to(source, missing, commit)

    def finish(self, snapshot: Snapshot) -> Path:
        ensure_dirs(self.root, self.meta_dir)
        gitignore = self.meta_dir / ".gitignore"
        if not gitignore.exists():
            atomic_write(gitignore, b"*")
        tag = self.meta_dir / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, CACHEDIR_TAG.encode())
        if snapshot.listing_complete:
            write_tree_cache(self.root, self.meta_dir, snapshot)
        return self.root

    def _copy_to(self, source: Path, files: list[RemoteFile], commit: str) -> None:
        for file in files:
            target = self.target(file)
            self._folders.ensure(self.root, target.parent)
            tmp = adjacent_tmp_path(target)
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            except BaseException:
                unlink_quiet(tmp)
                raise
            self._write_metadata(file, commit)

    def _metadata_etag(self, file: RemoteFile, target: Path) -> str | None:
        try:
            commit, etag, stamp = self.metadata_path(file).read_text().split("\n")[:3]
            valid = COMMIT_RE.match(commit) and target.stat().st_mtime - 1 <= float(stamp)
        except (OSError, ValueError):
            return None
        return etag if valid else None

    def _write_metadata(self, file: RemoteFile, commit: str) -> None:
        path = self.metadata_path(file)
        self._folders.ensure(self.root, path.parent)
        atomic_write(path, f"{commit}\n{file.etag}\n{time.time()}\n".encode())


def write_tree_cache(root: Path, folder: Path, snapshot: Snapshot) -> None:
    """``trees/<commit>.json`` in huggingface_hub's format, so its offline mode can tell a
    complete snapshot from a partial one (and hfpull can skip listing a known commit)."""
    path = folder / "trees" / f"{snapshot.commit}.json"
    if path.exists():
        return
    files = {}
    for f in snapshot.files:
        entry: dict[str, object] = {"size": f.size, "blob_id": f.blob_id}
        if f.sha256 is not None:
            entry.update(lfs_sha256=f.sha256, lfs_size=f.size)
        files[f.path] = entry
    body = json.dumps({"format_version": 1, "files": files}, indent=1, sort_keys=True)
    ensure_dirs(root, path.parent)
    atomic_write(path, body.encode())


def ensure_dirs(root: Path, directory: Path) -> None:
    """mkdir -p ``directory`` below ``root`` without following any symlink below ``root``."""
    relative = directory.relative_to(root)
    if ".." in relative.parts:
        raise UnsafeInputError(f"refusing to create {directory}: it leaves {root}")
    current = root
    with _cannot_create(current):  # e.g. --cache-dir names a file; permission denied
        current.mkdir(parents=True, exist_ok=True)
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise UnsafeInputError(
                f"refusing to write through the symlink {current}",
                hint="remove the link; hfpull never follows links inside its target",
            )
        with _cannot_create(current):
            try:
                current.mkdir()
            except FileExistsError:
                if not current.is_dir():
                    raise DiskError(f"{current} exists and is not a folder") from None


class Folders:
    """``ensure_dirs`` once per folder and layout: a repo of 500 small files otherwise
    re-checks (lstat, mkdir, stat) every folder on every file's path, three syscalls per
    level, and each syscall of a worker thread is a chance to queue for the GIL behind the
    others (bench_suite S3: 18% of the workers' time at 16 files at once)."""

    def __init__(self) -> None:
        self._made: set[Path] = set()

    def ensure(self, root: Path, directory: Path) -> None:
        if directory in self._made:
            return
        ensure_dirs(root, directory)
        self._made.add(directory)


def _cannot_create(path: Path) -> AbstractContextManager[None]:
    return disk_errors(
        f"cannot create the folder {path}",
        hint="check the path and its permissions, or choose another --cache-dir / --local-dir",
    )


def check_no_symlinks(root: Path, paths: list[Path]) -> None:
    """Refuse, before anything is written, targets whose folders below ``root`` include a
    symlink (which could send writes elsewhere)."""
    checked: set[Path] = set()
    for path in paths:
        current = root
        for part in path.parent.relative_to(root).parts:
            current = current / part
            if current in checked:
                continue
            checked.add(current)
            if current.is_symlink():
                raise UnsafeInputError(
                    f"refusing to write through the symlink {current}",
                    hint="remove the link; hfpull never follows links inside its target",
                )


def _move_into_place(verified: Path, final: Path) -> None:
    """Rename an fsynced, verified file onto its final name, durably."""
    os.chmod(verified, 0o644)
    os.replace(verified, final)
    fsync_dir(final.parent)


def _atomic_symlink(link_target: str, path: Path, copy_from: Path) -> None:
    if path.is_symlink() and os.readlink(path) == link_target:
        return
    tmp = adjacent_tmp_path(path)
    try:
        os.symlink(link_target, tmp)
    except OSError:  # no symlinks here (some Windows/FUSE setups): copy, as huggingface_hub does
        shutil.copyfile(copy_from, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quiet(tmp)
        raise


def _has_size(path: Path, size: int, follow: bool = True) -> bool:
    try:
        return os.stat(path, follow_symlinks=follow).st_size == size
    except OSError:
        return False
