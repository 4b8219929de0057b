"""The archive manifest: which repo, which commit, and every file with its hashes.

It is the first member of every hfpull archive and the ground truth unpack and verify check
against. Its JSON is canonical (sorted keys, fixed separators), so the same content always
serializes to the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hfpull.errors import UnsafeInputError, UsageError
from hfpull.models import REPO_TYPES, RemoteFile, RepoRef
from hfpull.names import (
    check_commit,
    check_path_set,
    check_repo_path,
    is_git_sha1,
    is_sha256,
    is_size,
    validate_repo_id,
    validate_revision,
)

MANIFEST_NAME = "hfpull-manifest.json"
ARCHIVE_FORMAT = "hfpull-archive"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 << 20


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str  # of the content, for every file
    git_sha1: str  # the git blob id at that commit (for LFS files: of the LFS pointer)
    lfs: bool

    @property
    def remote(self) -> RemoteFile:
        """The same file as the Hub lists it (etag = sha256 for LFS, git sha1 otherwise)."""
        return RemoteFile(self.path, self.size, self.git_sha1, self.sha256 if self.lfs else None)


@dataclass(frozen=True)
class Manifest:
    repo: RepoRef
    revision: str
    commit: str
    tool: str
    files: tuple[ManifestFile, ...]
    complete: bool  # every file of the commit is included (no --include/--exclude)

    def to_bytes(self) -> bytes:
        document = {
            "format": ARCHIVE_FORMAT,
            "format_version": FORMAT_VERSION,
            "tool": self.tool,
            "repo_id": self.repo.repo_id,
            "repo_type": self.repo.repo_type,
            "revision": self.revision,
            "commit": self.commit,
            "complete": self.complete,
            "files": [
                {
                    "path": f.path,
                    "size": f.size,
                    "sha256": f.sha256,
                    "git_sha1": f.git_sha1,
                    "lfs": f.lfs,
                }
                for f in sorted(self.files, key=lambda f: f.path)
            ],
        }
        return (json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def by_path(self) -> dict[str, ManifestFile]:
        return {f.path: f for f in self.files}


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate a manifest; anything unexpected is refused."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise UnsafeInputError("the archive manifest is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != ARCHIVE_FORMAT:
        raise UnsafeInputError("not an hfpull archive manifest")
    if doc.get("format_version") != FORMAT_VERSION:
        raise UnsafeInputError(
            f"archive format version {doc.get('format_version')!r} is not supported",
            hint=f"this hfpull reads version {FORMAT_VERSION}; upgrade hfpull",
        )
    try:
        repo_type = doc["repo_type"]
        if repo_type not in REPO_TYPES:
            raise UnsafeInputError(f"unknown repo type {repo_type!r} in manifest")
        files = tuple(_parse_file(f) for f in doc["files"])
        manifest = Manifest(
            repo=RepoRef(_as_unsafe(validate_repo_id, doc["repo_id"]), repo_type),
            revision=_as_unsafe(validate_revision, doc["revision"]),
            commit=check_commit(doc["commit"], "manifest"),
            tool=_text(doc["tool"]),
            files=files,
            complete=doc["complete"] is True,
        )
    except (KeyError, TypeError) as exc:
        raise UnsafeInputError(f"the archive manifest is malformed ({exc})") from None
    check_path_set([f.path for f in files])
    return manifest


def _as_unsafe(validate: Callable[[str], str], value: object) -> str:
    """A bad repo id or revision inside an archive is hostile input, not a usage error."""
    if not isinstance(value, str):
        raise UnsafeInputError(f"invalid value {value!r} in the archive manifest")
    try:
        return validate(value)
    except UsageError as error:
        raise UnsafeInputError(f"the archive manifest holds an {error.message}") from None


def _parse_file(item: Any) -> ManifestFile:
    path = check_repo_path(item["path"])
    size = item["size"]
    if not is_size(size):
        raise UnsafeInputError(f"invalid size in manifest for {path!r}")
    sha256, git_sha1, lfs = item["sha256"], item["git_sha1"], item["lfs"]
    if not is_sha256(sha256):  # every file's, LFS or not
        raise UnsafeInputError(f"invalid sha256 in manifest for {path!r}")
    if not is_git_sha1(git_sha1):
        raise UnsafeInputError(f"invalid git sha1 in manifest for {path!r}")
    if not isinstance(lfs, bool):
        raise UnsafeInputError(f"invalid lfs flag in manifest for {path!r}")
    return ManifestFile(path, size, sha256, git_sha1, lfs)


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > 1024:
        raise UnsafeInputError("invalid text field in manifest")
    return value
