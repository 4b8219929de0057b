"""Plain data that flows through hfpull: what the user asked for and what the server said."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

REPO_TYPES = ("model", "dataset", "space")


@dataclass(frozen=True)
class RepoRef:
    repo_id: str
    repo_type: str = "model"

    @property
    def api_plural(self) -> str:
        return f"{self.repo_type}s"

    @property
    def url_prefix(self) -> str:
        """Prefix of resolve URLs: none for models, ``datasets/`` or ``spaces/`` otherwise."""
        return "" if self.repo_type == "model" else f"{self.repo_type}s/"

    @property
    def cache_folder_name(self) -> str:
        """``models--org--name``, as huggingface_hub names the repo folder in its cache."""
        return "--".join([f"{self.repo_type}s", *self.repo_id.split("/")])


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a commit, as listed by the Hub API."""

    path: str
    size: int
    blob_id: str  # git blob sha1 of the content (for LFS files: of the pointer)
    sha256: str | None = None  # set for LFS files: sha256 of the real content

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None

    @property
    def etag(self) -> str:
        """The blob's name in the HF cache: sha256 for LFS files, git sha1 otherwise."""
        return self.sha256 if self.sha256 is not None else self.blob_id

    @property
    def hash_kind(self) -> str:
        return "sha256" if self.is_lfs else "git-sha1"


@dataclass(frozen=True)
class Snapshot:
    """A repo pinned to one commit, with its complete file list."""

    repo: RepoRef
    revision: str  # what the user asked for (branch, tag or sha)
    commit: str  # the 40-hex sha everything else uses
    files: tuple[RemoteFile, ...]
    # False when ``files`` may be a subset of the commit (a filtered archive, a listing
    # rebuilt from snapshot links): then no tree cache may claim the snapshot is complete.
    listing_complete: bool = True


class FileStatus(str, Enum):
    PRESENT = "present"  # already complete at the target: nothing to do
    LINK = "link"  # blob already present; only the snapshot entry / local copy is missing
    FETCH = "fetch"  # bytes must be downloaded


@dataclass(frozen=True)
class PlannedFile:
    file: RemoteFile
    status: FileStatus
    partial_bytes: int = 0  # bytes already held in a resumable partial


@dataclass(frozen=True)
class Plan:
    snapshot: Snapshot
    files: tuple[PlannedFile, ...]  # selected files
    skipped: tuple[RemoteFile, ...] = field(default=())  # filtered out

    @property
    def to_fetch(self) -> tuple[PlannedFile, ...]:
        return tuple(p for p in self.files if p.status is FileStatus.FETCH)

    @property
    def total_bytes(self) -> int:
        return sum(p.file.size for p in self.files)

    @property
    def bytes_to_fetch(self) -> int:
        """Bytes still to transfer, counting each distinct blob once and minus partials."""
        seen: dict[str, int] = {}
        for p in self.to_fetch:
            seen[p.file.etag] = p.file.size - p.partial_bytes
        return sum(seen.values())


@dataclass(frozen=True)
class FileResult:
    path: str
    size: int
    hash: str
    lfs: bool
    status: str  # downloaded | present | skipped
    source: str | None  # host that supplied the bytes, when downloaded


@dataclass(frozen=True)
class GetResult:
    snapshot: Snapshot
    path: str  # snapshot folder (cache mode) or the local dir
    files: tuple[FileResult, ...]
    bytes_downloaded: int
    seconds: float
    bytes_resumed: int = 0  # taken over from partials an earlier run left
    connections: int = 0  # download connections of the run; 0 when nothing was fetched
    sources: tuple[tuple[str, int], ...] = ()  # (host, or "host, host" for one blob, bytes)
