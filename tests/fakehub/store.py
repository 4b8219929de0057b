"""Repository data of the fake hub: content blobs, commits, refs and renames."""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
REPO_TYPES = ("model", "dataset", "space")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    """File content, either in memory (`data`) or backed by a local file (`path`)."""

    size: int
    git_sha1: str
    sha256: str
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def from_source(cls, source: bytes | Path) -> Blob:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            return cls(len(data), git_blob_sha1(data), hashlib.sha256(data).hexdigest(), data=data)
        path = Path(source).resolve()
        size = path.stat().st_size
        sha1 = hashlib.sha1(b"blob %d\0" % size)
        sha256 = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                sha1.update(chunk)
                sha256.update(chunk)
        return cls(size, sha1.hexdigest(), sha256.hexdigest(), path=path)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(blob: Blob) -> bytes:
    """The git-lfs pointer file git stores instead of an LFS file's content."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob.sha256}\nsize {blob.size}\n"
    ).encode()


@dataclass(frozen=True)
class Entry:
    """One file of a commit."""

    path: str
    blob: Blob
    lfs: bool

    @property
    def oid(self) -> str:
        """Git blob id as the Hub reports it: of the pointer file for LFS files (like git)."""
        return git_blob_sha1(lfs_pointer(self.blob)) if self.lfs else self.blob.git_sha1

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.blob))


@dataclass(frozen=True)
class Commit:
    sha: str
    files: dict[str, Entry]
    date: str

    def listing(self, base: str, recursive: bool) -> list[Entry | str] | None:
        """Files (Entry) and folders (str) under `base`, sorted by path; None if not a folder."""
        prefix = f"{base}/" if base else ""
        found = not base
        files: list[Entry] = []
        dirs: set[str] = set()
        for path, entry in self.files.items():
            if not path.startswith(prefix):
                continue
            found = True
            parts = path[len(prefix) :].split("/")
            if recursive:
                files.append(entry)
                dirs.update(prefix + "/".join(parts[:i]) for i in range(1, len(parts)))
            elif len(parts) == 1:
                files.append(entry)
            else:
                dirs.add(prefix + parts[0])
        if not found:
            return None
        items: list[Entry | str] = [*files, *dirs]
        return sorted(items, key=lambda i: i if isinstance(i, str) else i.path)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    gated: bool = False
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        sha = self.refs.get(rev, rev)
        return self.commits.get(sha)


class Store:
    """All repos of one fake hub. Thread-safe: the server reads while tests mutate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._renames: dict[tuple[str, str], str] = {}
        self._by_sha256: dict[str, Blob] = {}
        self._counter = itertools.count(1)

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        repo_type: str,
        branch: str,
        lfs_threshold: int,
        gated: bool,
        private: bool,
    ) -> str:
        _check_repo(repo_id, repo_type)
        entries: dict[str, Entry] = {}
        for raw_path, source in files.items():
            path = raw_path.strip("/")
            if not path or "" in path.split("/"):
                raise ValueError(f"bad file path {raw_path!r}")
            blob = Blob.from_source(source)
            lfs = blob.size >= lfs_threshold or path.endswith(LFS_SUFFIXES)
            entries[path] = Entry(path, blob, lfs)
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        with self._lock:
            seed = f"{repo_type}/{repo_id}/{next(self._counter)}"
            digest = hashlib.sha1(seed.encode())
            for path in sorted(entries):
                digest.update(f"\0{path}\0{entries[path].blob.sha256}".encode())
            commit = Commit(digest.hexdigest(), dict(sorted(entries.items())), date)
            repo = self._repos.setdefault((repo_type, repo_id), Repo(repo_type, repo_id))
            repo.gated, repo.private = gated, private
            repo.commits[commit.sha] = commit
            repo.refs[branch] = commit.sha
            self._renames.pop((repo_type, repo_id), None)
            for entry in entries.values():
                if entry.lfs:
                    self._by_sha256[entry.blob.sha256] = entry.blob
        return commit.sha

    def add_branch(self, repo_id: str, name: str, revision: str, repo_type: str) -> None:
        with self._lock:
            repo = self._get(repo_type, repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"unknown revision {revision!r} in {repo_id}")
            repo.refs[name] = commit.sha

    def rename_repo(self, old_id: str, new_id: str, repo_type: str) -> None:
        _check_repo(new_id, repo_type)
        with self._lock:
            repo = self._repos.pop((repo_type, old_id), None)
            if repo is None:
                raise KeyError(f"unknown repo {old_id!r}")
            repo.repo_id = new_id
            self._repos[(repo_type, new_id)] = repo
            self._renames[(repo_type, old_id)] = new_id
            self._renames.pop((repo_type, new_id), None)

    def lookup(self, repo_type: str, repo_id: str) -> Repo | str | None:
        """The repo, or the new id (str) if it was renamed, or None."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            return repo if repo is not None else self._renames.get((repo_type, repo_id))

    def resolve(self, repo: Repo, rev: str) -> Commit | None:
        with self._lock:
            return repo.resolve(rev)

    def repos(self, repo_type: str) -> list[Repo]:
        with self._lock:
            return sorted(
                (r for r in self._repos.values() if r.repo_type == repo_type),
                key=lambda r: r.repo_id,
            )

    def refs(self, repo: Repo) -> dict[str, str]:
        """Branch and ref names -> commit sha, a copy."""
        with self._lock:
            return dict(repo.refs)

    def head(self, repo: Repo, branch: str = "main") -> Commit | None:
        return self.resolve(repo, branch)

    def blob_by_sha256(self, sha256: str) -> Blob | None:
        with self._lock:
            return self._by_sha256.get(sha256)

    def _get(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"unknown repo {repo_id!r} ({repo_type})")
        return repo


def _check_repo(repo_id: str, repo_type: str) -> None:
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, not {repo_type!r}")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"repo id must look like 'org/name', not {repo_id!r}")
