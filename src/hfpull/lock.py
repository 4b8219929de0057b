"""Lock files: each repo pinned to a commit with the hash of every selected file.

The model equivalent of a requirements file with hashes (docs/lock-files.md). ``get --lock``
fetches exactly that and fails rather than drift; ``verify --lock`` proves the cache matches.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfpull.errors import IntegrityError, UnsafeInputError, UsageError
from hfpull.events import ProgressCallback
from hfpull.fs import atomic_write
from hfpull.models import REPO_TYPES, GetResult, RemoteFile, RepoRef
from hfpull.names import (
    check_commit,
    check_path_set,
    check_repo_path,
    file_record_problem,
    parse_repo_spec,
    validate_repo_id,
    validate_revision,
)
from hfpull.pull import Session
from hfpull.settings import Settings

LOCK_VERSION = 1


@dataclass(frozen=True)
class LockedRepo:
    repo: RepoRef
    revision: str
    commit: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    files: tuple[RemoteFile, ...]


def create_lock(
    specs: Sequence[str],
    *,
    repo_type: str = "model",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    settings: Settings | None = None,
) -> list[LockedRepo]:
    """Resolve each ``REPO[@REV]`` to a commit and record its selected files (no download)."""
    locked = []
    for spec in specs:
        repo_id, revision = parse_repo_spec(spec)
        session = Session(repo_id, repo_type=repo_type, revision=revision, settings=settings)
        plan = session.plan(include, exclude)
        snapshot = plan.snapshot
        locked.append(
            LockedRepo(
                snapshot.repo, snapshot.revision, snapshot.commit, tuple(include), tuple(exclude),
                tuple(p.file for p in plan.files),
            )
        )  # fmt: skip
    return locked


def get_locked(
    locked: LockedRepo, settings: Settings | None = None, progress: ProgressCallback | None = None
) -> GetResult:
    """Fetch exactly the locked files at the locked commit; refuse if the Hub disagrees."""
    session = Session(
        locked.repo.repo_id,
        repo_type=locked.repo.repo_type,
        revision=locked.commit,
        settings=settings,
        progress=progress,
    )
    wanted = {f.path: f for f in locked.files}
    plan = session.plan(only=wanted)
    listed = {p.file.path: p.file for p in plan.files}
    for path, file in wanted.items():
        if listed.get(path) != file:
            raise IntegrityError(
                f"{locked.repo.repo_id}@{locked.commit[:12]}: {path!r} on the Hub differs from "
                "the lock" + ("" if path in listed else " (it is gone)"),
                hint="the lock no longer matches what is published; refresh it with hfpull lock",
            )
    # Record the locked branch/tag name too, so from_pretrained(repo) offline finds this commit.
    plan = dataclasses.replace(
        plan, snapshot=dataclasses.replace(plan.snapshot, revision=locked.revision)
    )
    return session.run(plan)


def write_lock(path: Path, repos: Sequence[LockedRepo]) -> None:
    document = {
        "hfpull_lock_version": LOCK_VERSION,
        "repos": [
            _repo_json(r) for r in sorted(repos, key=lambda r: (r.repo.repo_type, r.repo.repo_id))
        ],
    }
    data = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    # fsynced, file and folder: the lock is what the user commits and later builds from, and
    # a rename that is not synced can leave an empty file under its name after a power loss.
    atomic_write(path, data.encode("utf-8"), sync_dir=True)


def read_lock(path: Path) -> list[LockedRepo]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read lock file {path}: {exc.strerror}") from None
    except ValueError:
        raise UnsafeInputError(f"lock file {path} is not valid JSON") from None
    if not isinstance(document, dict) or document.get("hfpull_lock_version") != LOCK_VERSION:
        raise UnsafeInputError(
            f"{path} is not an hfpull lock file of version {LOCK_VERSION}",
            hint="create one with: hfpull lock REPO[@REV]... -o hfpull.lock",
        )
    try:
        return [_parse_repo(item) for item in document["repos"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsafeInputError(f"lock file {path} is malformed ({exc})") from None


def _repo_json(locked: LockedRepo) -> dict[str, Any]:
    files = []
    for f in locked.files:
        entry: dict[str, Any] = {"path": f.path, "size": f.size, "git_sha1": f.blob_id}
        if f.sha256 is not None:
            entry["sha256"] = f.sha256
        files.append(entry)
    return {
        "repo_id": locked.repo.repo_id,
        "repo_type": locked.repo.repo_type,
        "revision": locked.revision,
        "commit": locked.commit,
        "include": list(locked.include),
        "exclude": list(locked.exclude),
        "files": sorted(files, key=lambda e: e["path"]),
    }


def _parse_repo(item: dict[str, Any]) -> LockedRepo:
    repo_type = item["repo_type"]
    if repo_type not in REPO_TYPES:
        raise ValueError(f"unknown repo type {repo_type!r}")
    files = []
    for entry in item["files"]:
        size, blob_id, sha256 = entry["size"], entry["git_sha1"], entry.get("sha256")
        problem = file_record_problem(size, blob_id, sha256)
        if problem is not None:
            kind = "size" if problem == "size" else "hash"
            raise ValueError(f"bad {kind} for {entry['path']!r}")
        files.append(RemoteFile(check_repo_path(entry["path"]), size, blob_id, sha256))
    check_path_set([f.path for f in files])
    return LockedRepo(
        RepoRef(validate_repo_id(item["repo_id"]), repo_type),
        validate_revision(item["revision"]),
        check_commit(item["commit"], "lock file"),
        tuple(str(p) for p in item["include"]),
        tuple(str(p) for p in item["exclude"]),
        tuple(files),
    )
