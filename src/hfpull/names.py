"""Validation of every name that reaches a filesystem path or a URL.

Names come from the user (repo id, revision) or from the server (file paths, commit sha,
hashes). All are checked before anything is written, under both POSIX and Windows rules,
so a hostile server or mirror can never make hfpull write outside its target.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from hfpull.errors import UnsafeInputError, UsageError
from hfpull.models import REPO_TYPES

# Same rule as huggingface_hub: optional single namespace, [\w\-.] names, at most 96 chars.
_REPO_PART = r"[\w\-.]{1,96}"
_REPO_ID_RE = re.compile(rf"^(?:{_REPO_PART}/)?{_REPO_PART}\Z")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")  # \Z: "$" would allow a trailing newline
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_WINDOWS_RESERVED = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}  # fmt: skip
_MAX_COMPONENT_BYTES = 255
# Where hfpull and huggingface_hub keep metadata inside a --local-dir target.
_RESERVED_PREFIX = ".cache/huggingface/"


def validate_repo_id(repo_id: str) -> str:
    """Check a user-supplied repo id (``org/name`` or ``name``); return it unchanged."""
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise UsageError(
            f"invalid repo id {repo_id!r}",
            hint="use the form ORG/NAME, e.g. tencent/HunyuanOCR",
        )
    for part in repo_id.split("/"):
        if part.startswith(".") or part.endswith("."):
            raise UsageError(f"invalid repo id {repo_id!r}", hint="use the form ORG/NAME")
    return repo_id


def validate_repo_type(repo_type: str) -> str:
    """Check a user-supplied repo type (``model``, ``dataset`` or ``space``)."""
    if repo_type not in REPO_TYPES:
        raise UsageError(f"invalid repo type {repo_type!r}", hint="use model, dataset or space")
    return repo_type


def validate_revision(revision: str) -> str:
    """Check a branch, tag, ``refs/pr/N`` or commit; it becomes ``refs/<rev>`` on disk."""
    bad = (
        not revision
        or len(revision) > 255
        or _CONTROL_RE.search(revision)
        or "\\" in revision
        or revision.startswith("/")
        or revision.endswith("/")
        or any(part in ("", ".", "..") for part in revision.split("/"))
    )
    if bad:
        raise UsageError(f"invalid revision {revision!r}", hint="use a branch, tag or commit sha")
    return revision


def parse_repo_spec(spec: str, default_revision: str = "main") -> tuple[str, str]:
    """``REPO[@REV]`` (``tencent/HunyuanOCR@main``) as a checked repo id and revision."""
    repo_id, at, revision = spec.partition("@")
    if at and not revision:
        raise UsageError(f"no revision after '@' in {spec!r}", hint="use REPO or REPO@REVISION")
    return validate_repo_id(repo_id), validate_revision(revision or default_revision)


# File records (a Hub listing, a saved tree listing, a lock file, an archive manifest) all
# follow these rules; each reader keeps its own error type and wording.
MAX_FILE_SIZE = 2**53  # JSON integers past this lose precision; no real file comes near it


def is_size(value: object) -> TypeGuard[int]:
    """A file size: a JSON integer (not a bool), 0 <= size < 2**53."""
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value < MAX_FILE_SIZE


def is_git_sha1(value: object) -> TypeGuard[str]:
    """A git object id (blob id, commit): 40 lowercase hex digits."""
    return isinstance(value, str) and COMMIT_RE.match(value) is not None


def is_sha256(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and SHA256_RE.match(value) is not None


def file_record_problem(size: object, git_sha1: object, sha256: object) -> str | None:
    """The first field of a file record that breaks the rules ("size", "git sha1" or
    "sha256"), or None. ``sha256`` is None for a file that is not in LFS."""
    if not is_size(size):
        return "size"
    if not is_git_sha1(git_sha1):
        return "git sha1"
    if sha256 is not None and not is_sha256(sha256):
        return "sha256"
    return None


def check_commit(value: object, where: str) -> str:
    """A commit sha from the server: exactly 40 lowercase hex digits."""
    if not is_git_sha1(value):
        raise UnsafeInputError(f"server sent an invalid commit id {value!r} ({where})")
    return value


def check_sha256(value: object, where: str) -> str:
    if not is_sha256(value):
        raise UnsafeInputError(f"server sent an invalid sha256 {value!r} ({where})")
    return value


def check_repo_path(path: object) -> str:
    """A file path inside a repo, as sent by the server; refuse anything that could escape."""
    if not isinstance(path, str):
        raise UnsafeInputError(f"server sent a non-string file name {path!r}")
    problem = _path_problem(path)
    if problem:
        raise UnsafeInputError(
            f"server sent an unsafe file name {path!r}: {problem}",
            hint="the repo or the mirror is hostile or broken; nothing was written",
        )
    return path


def _path_problem(path: str) -> str | None:
    if not path:
        return "empty name"
    if _CONTROL_RE.search(path):
        return "control character"
    if "\\" in path:
        return "backslash"
    if path.startswith("/") or _DRIVE_RE.match(path):
        return "absolute path"
    if path.startswith(_RESERVED_PREFIX) or path == ".cache/huggingface":
        return "reserved metadata folder"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return "empty, '.' or '..' path component"
        if len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES:
            return "path component longer than 255 bytes"
        if part.split(".")[0].lower() in _WINDOWS_RESERVED or part.endswith((" ", ".")):
            return "name reserved or invalid on Windows"
    return None


def check_path_set(paths: list[str]) -> None:
    """Refuse duplicate paths and a path that is also a folder of another (``a`` and ``a/b``):
    publishing such a set would fail half-way or overwrite one file with another."""
    unique = set(paths)
    if len(unique) != len(paths):
        raise UnsafeInputError("the same file is listed twice")
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in unique:
                raise UnsafeInputError(f"{'/'.join(parts[:i])!r} is listed as a file and a folder")
