"""Prewarm jobs: fill the store with a repo's blobs on an admin's request, not a client's.

A job resolves the snapshot through the metadata cache (as a client's request would), then
starts fills through ``Fills.join`` -- the same single flight as client misses, so a client
asking for a blob a job is filling streams it, and nothing is fetched twice. At most
``PREWARM_BLOBS`` blobs fill at once across all jobs (each fill already runs parallel Range
segments), so prewarming a big repo never crowds out clients. Jobs live in memory: a
restarted mirror forgets them (its fills resume from their partials when asked again).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hfpull.engine.plan import select
from hfpull.errors import (
    HfpullError,
    UsageError,
)
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.prewarm import PrewarmRequest
from hfpull.serve.answers import status_and_code
from hfpull.serve.fill import Fill

if TYPE_CHECKING:
    from hfpull.serve.app import Mirror

PREWARM_BLOBS = 3  # blobs filled at once by all prewarm jobs together
KEEP_FINISHED = 3600.0  # seconds a finished job can still be asked about
MAX_JOBS = 256  # the oldest finished jobs go first beyond this
POLL = 0.05  # seconds between looks at a running fill (a threading.Event)


class LockMismatch(HfpullError):
    """A lock's file list differs from what the mirror resolves at that commit."""


class NoMatch(UsageError):
    """The include/exclude globs keep no file."""


@dataclass
class JobFile:
    file: RemoteFile
    state: str = "queued"  # queued | filling | stored | failed
    fill: Fill | None = None
    error_code: str | None = None
    error: str | None = None

    def bytes_done(self) -> int:
        if self.state == "stored":
            return self.file.size
        partial = self.fill.partial if self.fill is not None else None
        return 0 if partial is None else min(partial.snapshot_done().total(), self.file.size)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.file.path,
            "size": self.file.size,
            "blob": self.file.etag,
            "state": self.state,
            "bytes_done": self.bytes_done(),
            "error_code": self.error_code,
            "error": self.error,
        }


@dataclass
class Job:
    id: str
    repo: RepoRef
    revision: str
    commit: str
    files: list[JobFile]
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def state(self) -> str:
        if any(f.state in ("queued", "filling") for f in self.files):
            return "running"
        return "failed" if any(f.state == "failed" for f in self.files) else "done"

    def to_json(self) -> dict[str, Any]:
        files = [f.to_json() for f in self.files]
        return {
            "job": self.id,
            "repo": self.repo.repo_id,
            "repo_type": self.repo.repo_type,
            "revision": self.revision,
            "commit": self.commit,
            "state": self.state,
            "files_total": len(files),
            "files_done": sum(f["state"] == "stored" for f in files),
            "bytes_total": sum(f["size"] for f in files),
            "bytes_done": sum(f["bytes_done"] for f in files),
            "files": files,
        }


class PrewarmJobs:
    def __init__(self, mirror: Mirror, clock: Callable[[], float] = time.time) -> None:
        self.mirror = mirror
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    async def start(self, request: PrewarmRequest) -> Job:
        """Resolve and select the files, then fill them in the background."""
        mirror = self.mirror
        snapshot, _ = await mirror.blocking(
            mirror.metadata.snapshot, request.repo, request.revision, False
        )
        files = choose(snapshot, request)
        # A prewarmed repo must resolve by branch and by commit when upstream is gone later
        await mirror.blocking(_remember, mirror, request, snapshot)
        job = Job(secrets.token_hex(8), request.repo, request.revision, snapshot.commit,
                  [JobFile(f) for f in files])  # fmt: skip
        self._prune()
        self.jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: Job) -> None:
        by_blob: dict[str, list[JobFile]] = {}
        for entry in job.files:
            by_blob.setdefault(entry.file.etag, []).append(entry)
        await asyncio.gather(*(self._fill(job, group) for group in by_blob.values()))
        job.finished = self.clock()

    async def _fill(self, job: Job, group: list[JobFile]) -> None:
        file, store = group[0].file, self.mirror.store
        if self._stored(file):
            _set(group, "stored")
            return
        if self.mirror.config.offline:
            _set(group, "failed", "Offline", f"{file.path} is not in the store (--offline)")
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(PREWARM_BLOBS)
        async with self._slots:
            if self._stored(file):  # a client's miss may have filled it meanwhile
                _set(group, "stored")
                return
            self.mirror.fill_origin[file.etag] = (job.repo, job.commit)
            fill, _ = self.mirror.fills.join(file)
            for entry in group:
                entry.fill = fill
            _set(group, "filling")
            while not fill.done.is_set():
                await asyncio.sleep(POLL)
        if fill.error is not None:
            _set(group, "failed", status_and_code(fill.error)[1], _describe(fill.error))
        elif store.size(file.etag) == file.size:  # the store holds verified blobs only
            _set(group, "stored")
        else:
            _set(group, "failed", "StoreError", "the blob is not in the store after its fill")

    def _stored(self, file: RemoteFile) -> bool:
        return self.mirror.store.size(file.etag) == file.size

    def _prune(self) -> None:
        now = self.clock()
        done = [j for j in self.jobs.values() if j.finished is not None]
        for job in done:
            if job.finished is not None and now - job.finished > KEEP_FINISHED:
                del self.jobs[job.id]
        for job in sorted(done, key=lambda j: j.started)[: max(0, len(self.jobs) - MAX_JOBS + 1)]:
            self.jobs.pop(job.id, None)


def choose(snapshot: Snapshot, request: PrewarmRequest) -> list[RemoteFile]:
    """The files a request names: a lock's exact list (refused if the listing differs), else
    the files the globs keep."""
    if request.files is not None:
        listed = {f.path: f for f in snapshot.files}
        for file in request.files:
            if listed.get(file.path) != file:
                gone = "" if file.path in listed else " (it is not listed)"
                raise LockMismatch(
                    f"{file.path!r} at {snapshot.commit[:12]} differs from the lock{gone}"
                )
        return list(request.files)
    selected = select(snapshot.files, request.include, request.exclude)
    if not selected and snapshot.files:
        raise NoMatch(
            f"no file of {snapshot.repo.repo_id}@{snapshot.commit[:12]} matches the filters"
        )
    return selected


def _remember(mirror: Mirror, request: PrewarmRequest, snapshot: Snapshot) -> None:
    metadata = mirror.metadata
    if request.revision != snapshot.commit:
        metadata.remember(request.repo, snapshot.commit, snapshot)
        if request.files is None:  # a lock's branch name is the lock's, not upstream's word
            metadata.remember_commit(request.repo, request.revision, snapshot.commit)


def _set(
    group: list[JobFile], state: str, code: str | None = None, error: str | None = None
) -> None:
    for entry in group:
        entry.state, entry.error_code, entry.error = state, code, error


def _describe(error: BaseException) -> str:
    text = str(error) if isinstance(error, HfpullError) else type(error).__name__
    return text.replace("\n", " ")[:300]
