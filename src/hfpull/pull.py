"""The importable core: ``hfpull.get()``. The CLI is a thin layer over this module."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Collection, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from hfpull.cache.layout import CacheLayout, LocalDirLayout
from hfpull.cache.offline import cached_snapshot
from hfpull.engine.partial import held_bytes
from hfpull.engine.plan import build_plan
from hfpull.errors import DiskError, GatedRepoError, NotFoundError, RepoNotFoundError
from hfpull.events import ProgressCallback, ProgressEvent, ignore
from hfpull.models import FileResult, FileStatus, GetResult, Plan, RemoteFile, RepoRef
from hfpull.names import validate_repo_id, validate_repo_type, validate_revision
from hfpull.settings import Settings, from_environment

# The wire (requests, urllib3, ssl) is imported when a run first needs it, not with this
# module: an offline no-op get never loads it (start-up time: benchmarks/bench_startup.py).
if TYPE_CHECKING:
    from hfpull.engine.scheduler import BlobOutcome
    from hfpull.hub.client import HubClient
    from hfpull.hub.sources import RetryPolicy, SourcePool

Layout = CacheLayout | LocalDirLayout


def get(
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str = "main",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download ``repo_id`` at ``revision``; return the snapshot folder (or the local dir)."""
    result = download(
        repo_id,
        repo_type=repo_type,
        revision=revision,
        include=include,
        exclude=exclude,
        settings=settings,
        progress=progress,
    )
    return Path(result.path)


class Session:
    """One repo request, resolved and planned; ``run()`` downloads. Used by get and --dry-run."""

    def __init__(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        revision: str = "main",
        settings: Settings | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.repo = RepoRef(validate_repo_id(repo_id), validate_repo_type(repo_type))
        self.revision = validate_revision(revision)
        self.settings = settings or from_environment()
        self.emit = progress or ignore
        self.tally: RunTally | None = None  # what the last run() moved, even if it failed
        self.cache = CacheLayout(self.settings.cache_dir, self.repo)
        self.layout: Layout = (
            LocalDirLayout(self.settings.local_dir, self.cache)
            if self.settings.local_dir is not None
            else self.cache
        )

    @cached_property
    def pool(self) -> SourcePool:
        from hfpull.hub.sources import SourcePool

        return SourcePool.from_settings(self.settings)

    @cached_property
    def policy(self) -> RetryPolicy:
        from hfpull.hub.sources import RetryPolicy

        return RetryPolicy.from_settings(self.settings)

    @cached_property
    def hub(self) -> HubClient:
        from hfpull.hub.client import HubClient
        from hfpull.hub.http import thread_session

        return HubClient(self.settings, self.pool, self.policy, thread_session)

    def plan(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        only: Collection[str] | None = None,
    ) -> Plan:
        if self.settings.offline:
            return self.plan_cached(include, exclude, only)
        try:
            snapshot = self.hub.resolve(self.repo, self.revision)
        except RepoNotFoundError as error:
            raise self.hub.not_found_with_hint(error, self.repo) from None
        except GatedRepoError as error:
            raise self._gated_hint(error) from None
        commit = snapshot.commit

        def local_state(file: RemoteFile) -> tuple[FileStatus, int]:
            status = self.layout.status(file, commit)
            held = held_bytes(self.layout.partial_dir, file) if status is FileStatus.FETCH else 0
            return status, held

        return build_plan(snapshot, include, exclude, local_state, only)

    def plan_cached(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        only: Collection[str] | None = None,
        why: str = "offline (HF_HUB_OFFLINE is set)",
        hint: str = "unset HF_HUB_OFFLINE to download them",
    ) -> Plan:
        """A plan from the cache alone (refs/, the saved listing), never the network; fails
        naming what the cache lacks. Used for HF_HUB_OFFLINE and ``pack --offline``."""
        snapshot = cached_snapshot(self.cache, self.revision)
        commit = snapshot.commit
        plan = build_plan(
            snapshot, include, exclude, lambda f: (self.layout.status(f, commit), 0), only
        )
        missing = [p.file.path for p in plan.to_fetch]
        if missing:
            raise NotFoundError(
                f"{why}: {len(missing)} file(s) of {self.repo.repo_id}@{commit[:12]} "
                f"are not in the cache, e.g. {missing[0]!r}",
                hint=hint,
            )
        return plan

    def _gated_hint(self, error: GatedRepoError) -> GatedRepoError:
        page = f"{self.settings.endpoint}/{self.repo.url_prefix}{self.repo.repo_id}"
        error.hint = (
            f"request access on {page}, then pass --token or set HF_TOKEN with a token "
            "of the account that has access"
        )
        return error

    def free_disk(self) -> int:
        root = self.layout.disk_root
        probe = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
        return shutil.disk_usage(probe).free

    def run(self, plan: Plan) -> GetResult:
        started = time.monotonic()
        tally = self.tally = RunTally(self.emit, started)
        snapshot = plan.snapshot
        need = plan.bytes_to_fetch
        tally(ProgressEvent("plan", size=need, nbytes=len(plan.to_fetch)))
        if self.settings.check_disk and need:
            free = self.free_disk()
            if need > free:
                raise DiskError(
                    f"not enough disk space in {self.layout.disk_root}: "
                    f"need {_gb(need)}, free {_gb(free)}",
                    hint="free some space, or choose another --cache-dir / --local-dir",
                )
        self.layout.preflight([p.file for p in plan.files], snapshot.commit)
        to_link = [p.file for p in plan.files if p.status is FileStatus.LINK]
        if to_link:
            from hfpull.engine.scheduler import group_by_blob

            for group in group_by_blob(to_link):
                self.layout.place_existing(group, snapshot.commit)
        outcomes, connections = self._fetch(plan, tally) if plan.to_fetch else ([], 0)
        path = self.layout.finish(snapshot)
        by_etag = {o.etag: o for o in outcomes}
        files = []
        for planned in plan.files:
            f = planned.file
            outcome = by_etag.get(f.etag) if planned.status is FileStatus.FETCH else None
            source = outcome.source if outcome else None  # None: another process fetched it
            status = "downloaded" if source else "present"
            files.append(FileResult(f.path, f.size, f.etag, f.is_lfs, status, source))
        files += [
            FileResult(f.path, f.size, f.etag, f.is_lfs, "skipped", None) for f in plan.skipped
        ]
        sources: dict[str, int] = {}
        for o in outcomes:
            if o.source:
                sources[o.source] = sources.get(o.source, 0) + o.bytes_received
        return GetResult(
            snapshot=snapshot,
            path=str(path),
            files=tuple(files),
            bytes_downloaded=sum(o.bytes_received for o in outcomes),
            seconds=time.monotonic() - started,
            bytes_resumed=tally.bytes_resumed,
            connections=connections,
            sources=tuple(sorted(sources.items(), key=lambda item: -item[1])),
        )

    def _fetch(self, plan: Plan, tally: RunTally) -> tuple[list[BlobOutcome], int]:
        """Run the engine over the blobs to fetch; its outcomes and the connections it used."""
        from hfpull.engine.blob import FetchContext
        from hfpull.engine.scheduler import Engine, group_by_blob
        from hfpull.hub.http import thread_session

        ctx = FetchContext(
            settings=self.settings,
            pool=self.pool,
            policy=self.policy,
            repo=self.repo,
            commit=plan.snapshot.commit,
            session=thread_session,
            cancel=threading.Event(),
            emit=tally,
        )
        engine = Engine(ctx, self.layout)
        try:
            outcomes = engine.download(group_by_blob(p.file for p in plan.to_fetch))
        except GatedRepoError as error:  # the Hub lists gated repos freely; files need access
            raise self._gated_hint(error) from None
        return outcomes, engine.peak_connections


class RunTally:
    """Counts what a run moves from its progress events (and passes them on), so a run that
    fails half-way can still say what it did: files fetched or failed, bytes received, and
    bytes resumed (already in a partial when its blob was claimed)."""

    def __init__(self, forward: ProgressCallback, started: float) -> None:
        self.forward = forward
        self.started = started
        self.files_fetched = 0
        self.files_failed = 0
        self.bytes_received = 0
        self.bytes_resumed = 0
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        kind = event.kind
        if kind == "advance":
            with self._lock:
                self.bytes_received += event.nbytes
        elif kind == "start":
            with self._lock:
                self.bytes_resumed += event.nbytes
        elif kind == "done" and event.message == "downloaded":
            with self._lock:
                self.files_fetched += 1
        elif kind == "fail":
            with self._lock:
                self.files_failed += 1
        self.forward(event)

    def seconds(self) -> float:
        return time.monotonic() - self.started


def download(
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str = "main",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> GetResult:
    """Like :func:`get`, returning the full report (files, bytes, seconds)."""
    session = Session(
        repo_id, repo_type=repo_type, revision=revision, settings=settings, progress=progress
    )
    return session.run(session.plan(include, exclude))


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
