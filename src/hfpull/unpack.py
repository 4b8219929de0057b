"""hfpull unpack: restore an archive into the HF cache or a folder, refusing anything hostile.

Every member is checked before anything is published: the first member must be the manifest;
then only regular files whose names are safe, listed in the manifest, seen once, of exactly
the manifest's size, with the manifest's hashes. Bytes are staged under numbered names in a
staging folder on the target's filesystem (an archive's names never touch the disk there),
and the decoded stream is capped at what the manifest declares, so tar and gzip/zstd bombs
stop early. Only when every file checks out is anything moved into place; an existing cache
is never damaged, and blobs already present are reused.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hfpull.archive.compression import decompressing_reader
from hfpull.archive.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestFile,
    parse_manifest,
)
from hfpull.cache.layout import CacheLayout, LocalDirLayout, ensure_dirs
from hfpull.engine.scheduler import group_by_blob
from hfpull.errors import IntegrityError, UnsafeInputError
from hfpull.events import ProgressCallback, ProgressEvent, ignore
from hfpull.fs import disk_errors
from hfpull.hashing import READ_CHUNK, new_hasher
from hfpull.models import Snapshot
from hfpull.names import check_repo_path
from hfpull.settings import Settings

_ALLOWED_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_HEADER_ALLOWANCE = 4096  # tar/pax header bytes allowed per member, beyond its name


@dataclass(frozen=True)
class Mismatch:
    path: str
    expected: str
    actual: str
    algorithm: str


@dataclass
class ArchiveContents:
    manifest: Manifest
    staged: dict[str, Path] = field(default_factory=dict)  # path -> staged verified copy
    mismatches: list[Mismatch] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # member names read


@dataclass(frozen=True)
class UnpackResult:
    manifest: Manifest
    path: str  # snapshot folder (cache) or the local dir


def unpack(
    source: IO[bytes], settings: Settings, progress: ProgressCallback | None = None
) -> UnpackResult:
    """Check the whole archive, then publish it into the cache (or ``settings.local_dir``)."""
    emit = progress or ignore
    if settings.local_dir is not None:
        staging_root = settings.local_dir / ".cache" / "huggingface"
        ensure_dirs(settings.local_dir, staging_root)  # never through a planted link
    else:
        staging_root = settings.cache_dir
        staging_root.mkdir(parents=True, exist_ok=True)
    with _staging(staging_root) as staging:
        contents = read_archive(source, staging, emit)
        manifest = contents.manifest
        cache = CacheLayout(settings.cache_dir, manifest.repo)
        layout: CacheLayout | LocalDirLayout = (
            LocalDirLayout(settings.local_dir) if settings.local_dir is not None else cache
        )
        remote = [f.remote for f in manifest.files]
        layout.preflight(remote, manifest.commit)
        with disk_errors("could not publish the archive"):
            for group in group_by_blob(remote):
                layout.publish(contents.staged[group[0].path], group, manifest.commit)
            snapshot = Snapshot(
                manifest.repo, manifest.revision, manifest.commit, tuple(remote), manifest.complete
            )
            path = layout.finish(snapshot)
    return UnpackResult(manifest, str(path))


def read_archive(
    source: IO[bytes],
    staging: Path | None,
    emit: ProgressCallback = ignore,
    collect_mismatches: bool = False,
) -> ArchiveContents:
    """Read and check every member. With ``staging``, keep verified copies there.

    Hostile structure raises UnsafeInputError; truncation or corruption raises IntegrityError;
    a hash mismatch raises too unless ``collect_mismatches`` (verify reports them all).
    """
    try:
        capped = _CappedReader(decompressing_reader(source), MAX_MANIFEST_BYTES + 65536)
        with tarfile.open(fileobj=capped, mode="r|") as tar:
            manifest, first = _read_manifest(tar)
            capped.cap = capped.consumed + _budget(manifest)
            emit(ProgressEvent("plan", size=manifest.total_bytes, nbytes=len(manifest.files)))
            contents = ArchiveContents(manifest)
            expected = manifest.by_path()
            for index, member in enumerate(_members(tar, first, expected, contents.seen)):
                entry = expected[member.name]
                target = staging / f"{index:08d}" if staging is not None else None
                _check_member(tar, member, entry, target, contents, emit, collect_mismatches)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise IntegrityError(f"the archive is truncated or corrupted ({exc})") from None
    except OSError as exc:  # gzip.BadGzipFile and friends
        raise IntegrityError(f"the archive could not be read ({exc})") from None
    except Exception as exc:  # decompressor errors (zstd) have no common base class
        if exc.__class__.__module__.startswith("zstandard"):
            raise IntegrityError(f"the archive is truncated or corrupted ({exc})") from None
        raise
    missing = sorted(set(expected) - contents.seen)
    if missing:
        raise IntegrityError(
            f"the archive lacks {len(missing)} file(s) its manifest lists, e.g. {missing[0]!r}"
        )
    return contents


def read_manifest_only(source: IO[bytes]) -> Manifest:
    """The manifest of an archive, reading only its first member."""
    try:
        capped = _CappedReader(decompressing_reader(source), MAX_MANIFEST_BYTES + 65536)
        with tarfile.open(fileobj=capped, mode="r|") as tar:
            return _read_manifest(tar)[0]
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise IntegrityError(f"the archive is truncated or corrupted ({exc})") from None


def _read_manifest(tar: tarfile.TarFile) -> tuple[Manifest, tarfile.TarInfo]:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or first.type not in _ALLOWED_TYPES:
        raise UnsafeInputError(
            f"not an hfpull archive: the first member must be {MANIFEST_NAME}",
            hint="archives are made with hfpull pack",
        )
    if first.size > MAX_MANIFEST_BYTES:
        raise UnsafeInputError("the archive manifest is implausibly large")
    handle = tar.extractfile(first)
    assert handle is not None
    return parse_manifest(handle.read()), first


def _budget(manifest: Manifest) -> int:
    """Decoded bytes the rest of the archive may take: contents + headers + end padding."""
    headers = sum(_HEADER_ALLOWANCE + 2 * len(f.path.encode()) for f in manifest.files)
    return manifest.total_bytes + headers + 2 * tarfile.RECORDSIZE + 65536


def _members(
    tar: tarfile.TarFile, first: tarfile.TarInfo, expected: dict[str, ManifestFile], seen: set[str]
) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if member is first:
            continue  # iterating a stream-mode TarFile replays members already read
        name = member.name
        if member.type not in _ALLOWED_TYPES:
            kind = _TYPE_NAMES.get(member.type, f"type {member.type!r}")
            raise UnsafeInputError(f"the archive holds a {kind} ({name!r}); refused")
        check_repo_path(name)
        if name in seen or name == MANIFEST_NAME:
            raise UnsafeInputError(f"the archive holds {name!r} twice; refused")
        if name not in expected:
            raise UnsafeInputError(f"the archive holds {name!r}, which its manifest does not list")
        if member.size != expected[name].size:
            raise UnsafeInputError(
                f"{name!r} is {member.size} bytes in the archive but {expected[name].size} "
                "in its manifest; refused"
            )
        seen.add(name)
        yield member


def _check_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    entry: ManifestFile,
    target: Path | None,
    contents: ArchiveContents,
    emit: ProgressCallback,
    collect_mismatches: bool,
) -> None:
    handle = tar.extractfile(member)
    assert handle is not None
    sha256 = hashlib.sha256()
    git = None if entry.lfs else new_hasher(entry.remote)
    out = _open_staged(target) if target is not None else None
    try:
        remaining = entry.size
        while remaining:
            chunk = handle.read(min(READ_CHUNK, remaining))
            if not chunk:
                raise IntegrityError(f"the archive is truncated inside {entry.path!r}")
            sha256.update(chunk)
            if git is not None:
                git.update(chunk)
            if out is not None:
                _write_staged(out, chunk)
            remaining -= len(chunk)
            emit(ProgressEvent("advance", entry.path, nbytes=len(chunk)))
        if out is not None:
            out.flush()
            os.fsync(out.fileno())  # staged bytes are renamed into blobs/: make them durable
    finally:
        if out is not None:
            out.close()
    problems = []
    if sha256.hexdigest() != entry.sha256:
        problems.append(Mismatch(entry.path, entry.sha256, sha256.hexdigest(), "sha256"))
    if git is not None and git.hexdigest() != entry.git_sha1:
        problems.append(Mismatch(entry.path, entry.git_sha1, git.hexdigest(), "git-sha1"))
    if problems and not collect_mismatches:
        bad = problems[0]
        raise IntegrityError(
            f"{bad.path}: {bad.algorithm} mismatch in the archive: expected {bad.expected}, "
            f"got {bad.actual}; nothing was published"
        )
    contents.mismatches.extend(problems)
    if target is not None and not problems:
        contents.staged[entry.path] = target


def _open_staged(target: Path) -> IO[bytes]:
    with disk_errors("could not write to the staging folder"):
        return open(target, "xb")


def _write_staged(out: IO[bytes], chunk: bytes) -> None:
    with disk_errors(
        "could not write to the staging folder", hint="free some space; nothing was published"
    ):
        out.write(chunk)


@contextmanager
def _staging(root: Path) -> Iterator[Path]:
    """A private folder on the target's filesystem, always removed at the end."""
    folder = root / f".hfpull-staging-{secrets.token_hex(6)}"
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _CappedReader(io.RawIOBase):
    """Refuses to decode more than ``cap`` bytes: the manifest bounds the whole archive."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.cap - self.consumed + 1)
        data = self.inner.read(want)
        self.consumed += len(data)
        if self.consumed > self.cap:
            raise UnsafeInputError(
                "the archive expands beyond what its manifest declares (a tar or zip bomb?)"
            )
        buffer[: len(data)] = data
        return len(data)


_TYPE_NAMES = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.DIRTYPE: "directory",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "sparse file",
}
