"""The parallel engine: many blobs at once, each owned through a partial, published verified.

Blobs are scheduled once per distinct hash (two paths with the same content download once).
A blob another process is fetching is set aside and retried later, so a worker never sits
idle while other blobs wait. A heartbeat thread keeps every open partial's journal fresh, so
other processes can tell a live download from an abandoned one. Ctrl-C stops everything
promptly and keeps partials.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hfpull.cache.layout import ensure_dirs
from hfpull.engine.blob import BlobTransfer, Cancelled, FetchContext
from hfpull.engine.budget import ConnectionBudget
from hfpull.engine.owner import LeaseWatch
from hfpull.engine.partial import BUSY, LostPartial, Partial, PartialFile, claim
from hfpull.engine.small import SmallPartial, is_small, remove_stale
from hfpull.errors import AuthError, DiskError, HfpullError, Interrupted, UnsafeInputError
from hfpull.events import ProgressEvent
from hfpull.fs import disk_errors
from hfpull.models import FileStatus, RemoteFile

HEARTBEAT_SECONDS = 2.0  # at most; and at least 8 beats per lease
BUSY_POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 2.0
_FATAL = (DiskError, AuthError, UnsafeInputError)  # no point letting other files continue


class Layout(Protocol):
    @property
    def partial_dir(self) -> Path: ...
    @property
    def disk_root(self) -> Path: ...
    def status(self, file: RemoteFile, commit: str) -> FileStatus: ...
    def preflight(self, files: list[RemoteFile], commit: str) -> None: ...
    def publish(self, verified: Path, files: list[RemoteFile], commit: str) -> None: ...
    def place_existing(self, files: list[RemoteFile], commit: str) -> None: ...


@dataclass(frozen=True)
class BlobOutcome:
    etag: str
    source: str | None  # host(s) that sent the bytes; None when another process did
    bytes_received: int


class _Deferred:
    """Another process holds this blob: try it again after the others."""


@dataclass
class _Heartbeat:
    interval: float = HEARTBEAT_SECONDS
    partials: set[PartialFile] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                partials = list(self.partials)
            for partial in partials:
                try:
                    partial.heartbeat()
                except (OSError, LostPartial):
                    pass  # its writers see it at their next write

    def track(self, partial: PartialFile) -> None:
        with self.lock:
            self.partials.add(partial)

    def untrack(self, partial: PartialFile) -> None:
        with self.lock:
            self.partials.discard(partial)


class Engine:
    def __init__(
        self,
        ctx: FetchContext,
        layout: Layout,
        on_claim: Callable[[PartialFile], None] | None = None,
        budget: ConnectionBudget | None = None,
    ) -> None:
        """``on_claim`` sees each partial this run writes, before its first byte (the mirror
        streams a blob to clients while it fills). ``budget``: the connections of the run
        (default: from the settings, one budget for everything this engine downloads)."""
        self.ctx = ctx
        self.layout = layout
        self.on_claim = on_claim
        self.budget = budget if budget is not None else ConnectionBudget.from_settings(ctx.settings)
        lease = ctx.settings.lease_seconds
        self._heartbeat = _Heartbeat(min(HEARTBEAT_SECONDS, lease / 8))
        self._watch = LeaseWatch(lease)  # one per run: a silent owner's lease spans our polls

    def download(self, groups: Iterable[list[RemoteFile]]) -> list[BlobOutcome]:
        """Fetch each group (files sharing one blob) and publish it; raise the first failure.

        Largest blobs start first: a big file then streams beside the many small ones instead
        of starting alone after them (bench_suite S3: 500 small files, then a 100 MiB file
        that began at 2.06 s of 2.34). Small files still get the connections they wait for:
        a big file's extra connections yield to any file waiting for its first."""
        groups = sorted(groups, key=lambda group: group[0].size, reverse=True)
        if not groups:
            return []
        ensure_dirs(self.layout.disk_root, self.layout.partial_dir)
        remove_stale(self.layout.partial_dir)
        beat = threading.Thread(target=self._heartbeat.run, name="hfpull-heartbeat", daemon=True)
        beat.start()
        sampler = threading.Thread(
            target=self.budget.run_sampler,
            args=(self._heartbeat.stop,),
            name="hfpull-connections",
            daemon=True,
        )
        sampler.start()
        workers = min(self.ctx.settings.max_workers, len(groups))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="hfpull-file")
        futures: dict[Future[BlobOutcome | _Deferred], list[RemoteFile]] = {
            pool.submit(self._one_blob, group, True): group for group in groups
        }
        deferred: list[tuple[float, list[RemoteFile]]] = []
        outcomes: list[BlobOutcome] = []
        errors: list[BaseException] = []
        interrupted = False
        try:
            pending = set(futures)
            while pending or deferred:
                now = time.monotonic()
                while deferred and deferred[0][0] <= now and not self.ctx.cancel.is_set():
                    group = deferred.pop(0)[1]
                    future = pool.submit(self._one_blob, group, False)
                    futures[future] = group
                    pending.add(future)
                if self.ctx.cancel.is_set():
                    deferred.clear()
                if not pending:
                    time.sleep(min(0.25, max(0.0, deferred[0][0] - now)) if deferred else 0)
                    continue
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    exc = future.exception()
                    if exc is None:
                        result = future.result()
                        if isinstance(result, _Deferred):
                            group = futures[future]
                            deferred.append((time.monotonic() + BUSY_POLL_SECONDS, group))
                        else:
                            outcomes.append(result)
                    elif not isinstance(exc, Cancelled):
                        errors.append(exc)
                        self.ctx.emit(
                            ProgressEvent("fail", futures[future][0].path, message=str(exc))
                        )
                        if isinstance(exc, _FATAL) or not isinstance(exc, HfpullError):
                            self.ctx.cancel.set()
        except KeyboardInterrupt:
            interrupted = True
            self._stop_promptly(pool, set(futures))
            raise Interrupted(
                "interrupted; partial downloads are kept",
                hint="run the same command again to resume",
            ) from None
        finally:
            self._heartbeat.stop.set()
            pool.shutdown(wait=not interrupted)
        if errors:
            raise errors[0]
        if self.ctx.cancel.is_set():
            raise Interrupted(
                "interrupted; partial downloads are kept", hint="run it again to resume"
            )
        return outcomes

    @property
    def peak_connections(self) -> int:
        """The most connections this engine had open at once (for the end-of-run report)."""
        return self.budget.peak

    def _stop_promptly(
        self, pool: ThreadPoolExecutor, futures: set[Future[BlobOutcome | _Deferred]]
    ) -> None:
        """Ctrl-C: workers stop at their next chunk, but one stuck in a stalled read could
        take a whole read timeout. Wait a little, then record every partial's progress here
        (journals only list bytes already written) and let the caller exit at once."""
        self.ctx.cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        wait(futures, timeout=STOP_GRACE_SECONDS)
        with self._heartbeat.lock:
            partials = list(self._heartbeat.partials)
        for partial in partials:
            try:
                partial.flush_journal()
            except (OSError, LostPartial):
                pass

    def _one_blob(self, files: list[RemoteFile], first_time: bool) -> BlobOutcome | _Deferred:
        file = files[0]
        commit = self.ctx.commit
        if self.ctx.cancel.is_set():
            raise Cancelled
        if not first_time and self.layout.status(file, commit) is not FileStatus.FETCH:
            return self._present(files)  # another process finished it while we waited
        partial: PartialFile
        if is_small(file, self.ctx.settings.small_blob):
            partial = SmallPartial(self.layout.partial_dir, file)  # no claim: see small.py
        else:
            result = claim(self.layout.partial_dir, file, self._watch)
            if result is BUSY:
                return self._defer(file, first_time)
            assert isinstance(result, Partial)
            partial = result
            if self.layout.status(file, commit) is not FileStatus.FETCH:
                partial.discard()  # published by another process just before our claim
                return self._present(files)
        self._heartbeat.track(partial)
        if self.on_claim is not None:
            self.on_claim(partial)
        transfer = BlobTransfer(self.ctx, file, partial, self.budget)
        already = partial.snapshot_done().total()
        self.ctx.emit(ProgressEvent("start", file.path, size=file.size, nbytes=already))
        try:
            transfer.run()
            self._publish(partial, files, commit)
        except LostPartial:
            partial.close()
            return self._defer(file, True)
        except BaseException:
            partial.release()  # keep what we have for the next run (no-op once published)
            raise
        finally:
            self._heartbeat.untrack(partial)
        hosts = ", ".join(dict.fromkeys(transfer.sources_used)) or None
        self.ctx.emit(ProgressEvent("done", file.path, size=file.size, message="downloaded"))
        return BlobOutcome(file.etag, hosts, transfer.bytes_received)

    def _present(self, files: list[RemoteFile]) -> BlobOutcome:
        file = files[0]
        self.layout.place_existing(files, self.ctx.commit)
        self.ctx.emit(ProgressEvent("done", file.path, size=file.size, message="present"))
        return BlobOutcome(file.etag, None, 0)

    def _defer(self, file: RemoteFile, first_time: bool) -> _Deferred:
        if first_time:
            self.ctx.emit(
                ProgressEvent("wait", file.path, message="another hfpull process is fetching it")
            )
        return _Deferred()

    def _publish(self, partial: PartialFile, files: list[RemoteFile], commit: str) -> None:
        with disk_errors(
            f"could not publish {files[0].path}",
            hint="check permissions and free space; the run can be repeated safely",
        ):
            partial.publish(lambda verified: self.layout.publish(verified, files, commit))


def group_by_blob(files: Iterable[RemoteFile]) -> list[list[RemoteFile]]:
    groups: dict[str, list[RemoteFile]] = {}
    for file in files:
        groups.setdefault(file.etag, []).append(file)
    return list(groups.values())
