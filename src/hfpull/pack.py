"""hfpull pack: a verified, reproducible archive of a repo at one commit.

Format v1 (docs/archive-format.md): a POSIX (pax) tar whose first member is
``hfpull-manifest.json``, then every file under its repo path, sorted, as a regular file with
mtime 0, uid/gid 0, mode 0644; optionally gzip- or zstd-compressed. The same repo@commit and
options give byte-identical archives. Each blob is read once: LFS hashes are the blobs' own
names, so they go into the manifest up front and are checked while the bytes stream out;
only regular (small) files are hashed beforehand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hfpull.archive.compression import compressing_writer, validate_kind
from hfpull.archive.manifest import MANIFEST_NAME, Manifest, ManifestFile
from hfpull.errors import IntegrityError
from hfpull.events import ProgressCallback, ProgressEvent, ignore
from hfpull.fs import disk_errors, replacing
from hfpull.hashing import HASH_THREADS, READ_CHUNK, file_digests
from hfpull.models import Plan, RemoteFile
from hfpull.pull import Session
from hfpull.settings import Settings, from_environment
from hfpull.version import __version__

STREAM_BUFFER = 4 << 20


@dataclass(frozen=True)
class PackResult:
    manifest: Manifest
    size: int  # bytes of the archive as written (after compression)
    sha256: str  # of the archive bytes


def pack(
    repo_id: str,
    output: IO[bytes] | Path,
    *,
    repo_type: str = "model",
    revision: str = "main",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    compression: str = "none",
    offline: bool = False,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> PackResult:
    """Archive ``repo_id`` from the cache, fetching what is missing first (unless offline)."""
    validate_kind(compression)  # before anything is fetched
    # pack always reads the HF cache, never a --local-dir
    settings = dataclasses.replace(settings or from_environment(), local_dir=None)
    session = Session(repo_id, repo_type=repo_type, revision=revision, settings=settings)
    emit = progress or ignore
    if offline:
        plan = session.plan_cached(
            include, exclude, why="--offline",
            hint="run without --offline to fetch them, or hfpull get first",
        )  # fmt: skip
    else:
        session.emit = emit
        plan = session.plan(include, exclude)
        session.run(plan)
    manifest = build_manifest(session, plan, complete=not include and not exclude)
    sources = {f.path: session.cache.blob_path(f.remote) for f in manifest.files}
    emit(ProgressEvent("plan", size=manifest.total_bytes, nbytes=len(manifest.files)))
    if isinstance(output, Path):
        return _pack_to_file(output, manifest, sources, compression, emit)
    return write_archive(output, manifest, sources, compression, emit)


def build_manifest(session: Session, plan: Plan, complete: bool) -> Manifest:
    """Manifest entries for the planned files; regular files are hashed (sha256) here."""
    files = [p.file for p in plan.files]
    cache = session.cache

    def entry(file: RemoteFile) -> ManifestFile:
        if file.sha256 is not None:
            return ManifestFile(file.path, file.size, file.sha256, file.blob_id, True)
        blob = cache.blob_path(file)
        git_sha1, sha256 = file_digests(str(blob), file)
        if git_sha1 != file.blob_id:
            raise IntegrityError(
                f"{file.path}: the cached blob {blob} does not match its git sha1",
                hint="run hfpull verify --repair on this repo",
            )
        return ManifestFile(file.path, file.size, sha256, file.blob_id, False)

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        entries = list(pool.map(entry, files))
    snapshot = plan.snapshot
    return Manifest(
        snapshot.repo, snapshot.revision, snapshot.commit, f"hfpull {__version__}",
        tuple(entries), complete,
    )  # fmt: skip


def write_archive(
    out: IO[bytes],
    manifest: Manifest,
    sources: dict[str, Path],
    compression: str = "none",
    emit: ProgressCallback = ignore,
) -> PackResult:
    """Stream the archive into ``out`` (a file or a pipe); memory stays at a few MiB."""
    tee = _HashingWriter(out)
    stream = compressing_writer(tee, compression)  # type: ignore[arg-type]
    # bufsize: tarfile's stream mode re-slices its buffer per 10 KiB record, which is
    # quadratic for big writes; the archive's bytes do not depend on it.
    with tarfile.open(
        fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT, bufsize=STREAM_BUFFER
    ) as tar:
        tar.copybufsize = READ_CHUNK  # type: ignore[attr-defined]
        body = manifest.to_bytes()
        tar.addfile(_member(MANIFEST_NAME, len(body)), io.BytesIO(body))
        for entry in sorted(manifest.files, key=lambda f: f.path):
            with open(sources[entry.path], "rb") as handle:
                reader = _CheckingReader(handle, entry, emit)
                tar.addfile(_member(entry.path, entry.size), reader)
                reader.check()
    if compression != "none":
        stream.close()  # ends the compressed frame; the output itself stays open
    tee.flush()
    return PackResult(manifest, tee.size, tee.hasher.hexdigest())


def _pack_to_file(
    path: Path,
    manifest: Manifest,
    sources: dict[str, Path],
    compression: str,
    emit: ProgressCallback,
) -> PackResult:
    """Write beside the target and rename at the end: a failed pack leaves nothing behind.
    The folder is fsynced too: the archive is what the command is run for."""
    with disk_errors(f"could not write {path}"), replacing(path, sync_dir=True) as handle:
        return write_archive(handle, manifest, sources, compression, emit)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class _CheckingReader:
    """Feeds tarfile the blob's bytes and checks their sha256 against the manifest."""

    def __init__(self, handle: IO[bytes], entry: ManifestFile, emit: ProgressCallback) -> None:
        self.handle = handle
        self.entry = entry
        self.emit = emit
        self.hasher = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.hasher.update(data)
        self.size += len(data)
        self.emit(ProgressEvent("advance", self.entry.path, nbytes=len(data)))
        return data

    def check(self) -> None:
        actual = self.hasher.hexdigest()
        if self.size != self.entry.size or actual != self.entry.sha256:
            raise IntegrityError(
                f"{self.entry.path}: cached blob does not match its sha256 "
                f"(expected {self.entry.sha256}, got {actual}); the archive is incomplete",
                hint="run hfpull verify --repair on this repo, then pack again",
            )


class _HashingWriter(io.RawIOBase):
    """Counts and hashes the archive bytes on their way out (for the final size/sha256 line)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.out.write(view)
        self.hasher.update(view)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        self.out.flush()
