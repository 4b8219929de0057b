"""Prewarm a mirror: ask ``hfpull serve`` to fill its store with repos, without the bytes
crossing to the caller; and ask it to revalidate one repo's metadata now.

The mirror does the work (``POST /-/hfpull/prewarm`` starts a job, ``GET
/-/hfpull/prewarm/{job}`` reports it); this side sends the request, follows the job and turns
its outcome into the usual errors and exit codes. The request schema lives here, so the
mirror (``serve.admin``) and this client parse and write one format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from hfpull.errors import (
    AuthError,
    HfpullError,
    IntegrityError,
    NetworkError,
    NotFoundError,
    UnsafeInputError,
    UsageError,
)
from hfpull.events import ProgressCallback, ProgressEvent, ignore
from hfpull.hub.http import describe_transport_error, error_from_response
from hfpull.models import REPO_TYPES, RemoteFile, RepoRef
from hfpull.names import (
    check_repo_path,
    file_record_problem,
    validate_repo_id,
    validate_revision,
)

ADMIN_PREFIX = "/-/hfpull/"
POLL_SECONDS = 0.25
POLL_FAILURES = 20  # consecutive failed polls (the mirror restarting, say) before giving up
FINAL_STATES = ("stored", "failed")


class LostJob(NetworkError):
    """The mirror no longer knows a job (restarted, or the job was pruned)."""


@dataclass(frozen=True)
class PrewarmRequest:
    """What to fill: a repo at a revision, all its files or those the globs keep, or exactly
    ``files`` (a lock file's selection: the mirror refuses if its listing differs)."""

    repo: RepoRef
    revision: str = "main"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    files: tuple[RemoteFile, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "repo": self.repo.repo_id,
            "repo_type": self.repo.repo_type,
            "revision": self.revision,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "files": None,
        }
        if self.files is not None:
            doc["files"] = [_file_json(f) for f in self.files]
        return doc

    @classmethod
    def from_json(cls, doc: object) -> PrewarmRequest:
        """Parse a request body; UsageError (a 400) for anything malformed."""
        if not isinstance(doc, dict):
            raise UsageError("the prewarm request must be a JSON object")
        repo = _repo_from(doc)
        include, exclude = _globs(doc.get("include")), _globs(doc.get("exclude"))
        files = doc.get("files")
        parsed = None if files is None else tuple(_file_from(f) for f in _list(files, "files"))
        return cls(repo, _revision_from(doc), include, exclude, parsed)


@dataclass(frozen=True)
class FileState:
    path: str
    size: int
    state: str  # queued | filling | stored | failed
    bytes_done: int
    error_code: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class JobStatus:
    job: str
    repo: RepoRef
    revision: str
    commit: str
    state: str  # running | done | failed
    files: tuple[FileState, ...] = field(default_factory=tuple)

    @property
    def finished(self) -> bool:
        return all(f.state in FINAL_STATES for f in self.files)

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def failed(self) -> list[FileState]:
        return [f for f in self.files if f.state == "failed"]

    @classmethod
    def from_json(cls, doc: Any) -> JobStatus:
        try:
            files = tuple(_file_state(f) for f in doc["files"])
            repo = RepoRef(str(doc["repo"]), str(doc["repo_type"]))
            job, revision, commit = str(doc["job"]), str(doc["revision"]), str(doc["commit"])
            return cls(job, repo, revision, commit, str(doc["state"]), files)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnsafeInputError(f"the mirror sent a malformed prewarm answer ({exc})") from None


def _file_state(doc: Any) -> FileState:
    code, error = doc.get("error_code"), doc.get("error")
    return FileState(
        str(doc["path"]), int(doc["size"]), str(doc["state"]), int(doc["bytes_done"]),
        None if code is None else str(code), None if error is None else str(error),
    )  # fmt: skip


class MirrorAdmin:
    """The mirror's admin routes over one keep-alive session; the token goes to it alone."""

    def __init__(self, mirror: str, token: str | None, timeout: float = 30.0) -> None:
        self.base = mirror.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # a mirror on the LAN is not reached through a proxy
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def start(self, request: PrewarmRequest) -> JobStatus:
        doc = self._call("POST", "prewarm", request.repo.repo_id, json=request.to_json())
        return JobStatus.from_json(doc)

    def status(self, job: str) -> JobStatus:
        return JobStatus.from_json(self._call("GET", f"prewarm/{quote(job, safe='')}", job))

    def refresh(self, repo: RepoRef, revision: str) -> tuple[str | None, str]:
        """Revalidate a revision's metadata now: the commit the mirror had, and has now."""
        body = {"repo": repo.repo_id, "repo_type": repo.repo_type, "revision": revision}
        doc = self._call("POST", "refresh", repo.repo_id, json=body)
        before, after = doc.get("before"), doc.get("after")
        if not isinstance(after, str) or not (before is None or isinstance(before, str)):
            raise UnsafeInputError("the mirror sent a malformed refresh answer")
        return before, after

    def _call(self, method: str, route: str, what: str, **kwargs: Any) -> Any:
        url = self.base + ADMIN_PREFIX + route
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise NetworkError(
                f"mirror {self.base}: {describe_transport_error(exc)}",
                hint="check --mirror (or HF_ENDPOINT): it must be an hfpull serve",
            ) from None
        if response.status_code >= 400:
            raise admin_error(response, what, self.base)
        try:
            return response.json()
        except ValueError:
            raise UnsafeInputError(f"{self.base} did not answer JSON on {route}") from None


def admin_error(response: requests.Response, what: str, mirror: str) -> HfpullError:
    """The error a refused admin call stands for (X-Error-Code first)."""
    code = response.headers.get("X-Error-Code", "")
    message = response.headers.get("X-Error-Message", "") or f"HTTP {response.status_code}"
    if code == "Forbidden" or response.status_code == 401:
        return AuthError(
            f"{mirror} refused: {message}",
            hint="admin routes need a token with the +admin scope (--token / HF_TOKEN), or a "
            "call from the mirror's own host when it has no tokens file",
        )
    if code in ("BadRequest", "NoMatch"):
        return UsageError(f"{what}: {message}")
    if code == "LockMismatch":
        return IntegrityError(f"{what}: {message}", hint="refresh the lock with hfpull lock")
    if code == "UnknownJob":
        return LostJob(
            f"{mirror} no longer knows prewarm job {what} (was it restarted?)",
            hint="run the same command again: finished blobs are kept, partial fills resume",
        )
    if response.status_code == 404 and not code:
        return UsageError(
            f"{mirror} has no admin routes", hint="is it an hfpull serve of this version?"
        )
    return error_from_response(response, what) or NetworkError(f"{mirror}: {message}")


def prewarm(
    admin: MirrorAdmin,
    requests_: Sequence[PrewarmRequest],
    progress: ProgressCallback | None = None,
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[JobStatus]:
    """Start one job per request, follow them all until every file is stored or failed.

    Returns the final statuses when every file is stored in the mirror (verified: the
    mirror's store holds nothing else); raises the error of the first failed file otherwise.
    """
    jobs = [admin.start(r) for r in requests_]
    tracker = _Tracker(progress or ignore, jobs)
    failures = 0
    while not all(j.finished for j in jobs):
        sleep(poll_seconds)
        try:
            jobs = [j if j.finished else admin.status(j.job) for j in jobs]
            failures = 0
        except LostJob:
            raise
        except NetworkError:
            failures += 1
            if failures >= POLL_FAILURES:
                raise
            continue
        tracker.update(jobs)
    for job in jobs:
        if job.failed:
            raise file_error(job)
    return jobs


def file_error(job: JobStatus) -> HfpullError:
    """One error for a job with failed files, typed by the first failure's code."""
    first = job.failed[0]
    message = (
        f"{job.repo.repo_id}@{job.commit[:12]}: {len(job.failed)} of {len(job.files)} file(s) "
        f"could not be filled, e.g. {first.path!r}: {first.error or first.error_code}"
    )
    kind: type[HfpullError] = {
        "UpstreamCorrupt": IntegrityError,
        "RepoNotFound": NotFoundError,
        "RevisionNotFound": NotFoundError,
        "EntryNotFound": NotFoundError,
        "GatedRepo": AuthError,
        "UpstreamUnavailable": NetworkError,
        "UpstreamError": NetworkError,
        "Offline": NetworkError,
    }.get(first.error_code or "", HfpullError)
    hint = "run the same command again: finished blobs are kept, partial fills resume"
    return kind(message, hint=hint)


class _Tracker:
    """Job statuses -> the engine's progress events, so ``get``'s renderer draws them."""

    def __init__(self, emit: ProgressCallback, jobs: list[JobStatus]) -> None:
        self.emit = emit
        self.seen: dict[tuple[str, str], FileState] = {}
        files = [f for j in jobs for f in j.files]
        emit(ProgressEvent("plan", size=sum(f.size for f in files), nbytes=len(files)))
        self.update(jobs)

    def update(self, jobs: list[JobStatus]) -> None:
        for job in jobs:
            for now in job.files:
                key = (job.job, now.path)
                before = self.seen.get(key)
                self.seen[key] = now
                self._changed(before, now)

    def _changed(self, before: FileState | None, now: FileState) -> None:
        done_before = 0 if before is None else before.bytes_done
        if before is None or before.state == "queued":
            if now.state == "queued":
                return
            self.emit(ProgressEvent("start", now.path, size=now.size, nbytes=now.bytes_done))
            done_before = now.bytes_done
        if now.bytes_done > done_before:
            self.emit(ProgressEvent("advance", now.path, nbytes=now.bytes_done - done_before))
        if now.state == "stored" and (before is None or before.state != "stored"):
            self.emit(ProgressEvent("done", now.path, size=now.size))
        if now.state == "failed" and (before is None or before.state != "failed"):
            self.emit(ProgressEvent("fail", now.path, message=now.error or ""))


# -- parsing the request body (the mirror's side) ---------------------------------------------


def _repo_from(doc: dict[str, Any]) -> RepoRef:
    repo_id, repo_type = doc.get("repo"), doc.get("repo_type", "model")
    if not isinstance(repo_id, str) or repo_type not in REPO_TYPES:
        raise UsageError("give repo (a repo id) and repo_type (model, dataset or space)")
    return RepoRef(validate_repo_id(repo_id), str(repo_type))


def _revision_from(doc: dict[str, Any]) -> str:
    revision = doc.get("revision", "main")
    if not isinstance(revision, str):
        raise UsageError("revision must be a string")
    return validate_revision(revision)


def _list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise UsageError(f"{name} must be a list")
    return value


def _globs(value: object) -> tuple[str, ...]:
    items = _list(value if value is not None else [], "include/exclude")
    if not all(isinstance(g, str) and g for g in items):
        raise UsageError("include/exclude must be lists of globs")
    return tuple(items)


def _file_json(file: RemoteFile) -> dict[str, Any]:
    doc: dict[str, Any] = {"path": file.path, "size": file.size, "git_sha1": file.blob_id}
    if file.sha256 is not None:
        doc["sha256"] = file.sha256
    return doc


def _file_from(doc: object) -> RemoteFile:
    if not isinstance(doc, dict):
        raise UsageError("each of files must be an object")
    size, git_sha1, sha256 = doc.get("size"), doc.get("git_sha1"), doc.get("sha256")
    problem = file_record_problem(size, git_sha1, sha256)
    if problem is not None:
        raise UsageError(f"bad {problem} for {str(doc.get('path'))[:200]!r}")
    try:
        path = check_repo_path(doc.get("path"))
    except UnsafeInputError as exc:
        raise UsageError(exc.message) from None
    assert isinstance(size, int) and isinstance(git_sha1, str)
    return RemoteFile(path, size, git_sha1, sha256 if isinstance(sha256, str) else None)
