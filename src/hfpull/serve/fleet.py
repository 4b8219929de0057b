"""Fleet-wide single flight: one upstream fetch per cold blob across every replica.

Replicas share one object store (``Mirror.objects``). For a cold blob each replica's fill
(one per blob per process, serve/fill.py) first tries to take the blob's lease (lease.py):

- The **holder** runs the normal engine fill into its local partial (its own clients follow
  that partial, as without a fleet) while an uploader thread copies each completed
  contiguous CHUNK of the partial to ``fills/<key>/<gen>/<index:06d>``. Once the engine
  verified the blob, every chunk is checked against the verified file (MD5 of what was
  uploaded; a reset may have left a stale one, which is uploaded again), and the final object
  ``blobs/<ab>/<key>`` is composed server-side by a multipart upload of UploadPartCopy parts
  (no re-upload), completed with If-None-Match (someone completing first is fine). Then the
  chunks go and the lease is released. Verification failure: chunks deleted, nothing under
  ``blobs/``, the lease released; followers then fail their fills (their clients are cut).
- A **follower** never fetches upstream: it copies the holder's chunks, in order, into a local
  spool (an unlinked temp file) as they appear, hashing them as they land; its clients follow
  the spool. Its fill ends cleanly only when its own hash matched the key *and* the final
  object exists, so a follower can never give a clean end on bytes that did not verify, even
  if the holder misbehaved.
- **Takeover**: when the lease expired (holder died), a follower takes it over with a new
  generation and restarts the fill from byte 0 (chunks and unfinished uploads of other
  generations are deleted first). Its clients that were already sent bytes of the old
  generation are cut (they resume with Range); the old generation's bytes are not reused,
  since nothing proves them equal to what the new fill will verify.

Store calls are bounded: a follower looks for the next chunk every POLL seconds and at the
lease and final object every LOOK_EVERY polls.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hfpull.blobstore import BlobStore
from hfpull.blobstore.objects import ObjectStore, PreconditionFailed, StoreUnavailable
from hfpull.blobstore.remote import blob_name
from hfpull.engine.partial import PartialFile
from hfpull.errors import IntegrityError, NetworkError, NotFoundError
from hfpull.hashing import new_hasher
from hfpull.models import RemoteFile
from hfpull.serve.fill import Fill, Run
from hfpull.serve.lease import Lease, LeaseLost, Leases, LeaseState

CHUNK = 8 << 20  # ≥ S3's 5 MiB minimum part: each chunk object becomes one copied part
POLL = 0.05  # seconds between looks for the next chunk
LOOK_EVERY = 10  # polls between looks at the lease and the final object
FILLS = "fills/"


def chunk_name(key: str, gen: str, index: int) -> str:
    return f"{FILLS}{key}/{gen}/{index:06d}"


def chunk_spans(size: int) -> Iterator[tuple[int, int, int]]:
    """(index, start, end) of every chunk of a blob of ``size`` bytes."""
    for index, start in enumerate(range(0, size, CHUNK)):
        yield index, start, min(size, start + CHUNK)


class FleetFillFailed(NetworkError):
    """The replica fetching this blob gave up (its lease went, no blob was stored)."""


class Fleet:
    def __init__(
        self,
        objects: ObjectStore,
        store: BlobStore,
        leases: Leases,
        poll: float = POLL,
    ) -> None:
        self.objects = objects
        self.store = store
        self.leases = leases
        self.poll = poll
        self._holding: dict[str, _Holder] = {}
        self._lock = threading.Lock()
        self.takeovers = 0  # leases this replica took over from a dead holder

    def fill(self, fill: Fill, run: Run) -> None:
        """Make ``fill``'s blob stored fleet-wide: fetch it if we win the lease, else follow."""
        key = fill.file.etag
        while not self._stored(fill.file):
            lease = self.leases.acquire(key)
            if lease is None:
                state = self.leases.read(key)
                if state is None:
                    continue  # released meanwhile: stored, or ours to take
                outcome, state = self._follow(fill, state)
                if outcome == "done":
                    return
                if outcome == "changed":
                    continue
                lease = self.leases.take_over(state)
                if lease is None:
                    continue
                self.takeovers += 1
            self._hold(fill, lease, run)
            return

    def _stored(self, file: RemoteFile) -> bool:
        info = self.objects.head(blob_name(file.etag))
        return info is not None and info.size == file.size

    # -- following another replica's fill -------------------------------------------------

    def _follow(self, fill: Fill, state: LeaseState) -> tuple[str, LeaseState]:
        """Copy the holder's chunks into a spool until the blob is stored ("done"), the
        lease names another generation ("changed") or expired ("expired"); with the lease
        as last seen (a takeover must name its current ETag)."""
        file = fill.file
        spool = Spool(self.store.partial_dir, file)
        fill.switch(spool)
        polls = 0
        while True:
            if spool.complete:
                if spool.digest() != file.etag:
                    raise IntegrityError(
                        f"{file.path}: the fleet's chunks of {file.etag} do not hash to it",
                        hint="nothing was kept; the client may retry",
                    )
                if self._stored(file):
                    return "done", state
            elif self._copy_chunk(spool, state.gen):
                continue  # the next one may be there already
            polls += 1
            if polls % LOOK_EVERY == 0:
                current = self.leases.read(file.etag)
                if current is None:  # released: the holder stored the blob, or gave up
                    if not self._stored(file):
                        raise FleetFillFailed(f"{file.path}: the replica fetching it gave up")
                    self._copy_rest(spool)
                    continue
                if current.gen != state.gen:
                    return "changed", current
                if self.leases.expired(current):
                    return "expired", current
            time.sleep(self.poll)

    def _copy_chunk(self, spool: Spool, gen: str) -> bool:
        index, start = spool.end // CHUNK, spool.end
        end = min(spool.size, start + CHUNK)
        try:
            name = chunk_name(spool.key, gen, index)
            data = b"".join(self.objects.get_range(name, 0, end - start))
        except NotFoundError:
            return False
        if len(data) != end - start:
            return False  # not the chunk we expect (a concurrent rewrite): look again later
        spool.append(data)
        return True

    def _copy_rest(self, spool: Spool) -> None:
        """The chunks went with a completed fill: the rest comes from the final object."""
        while not spool.complete:
            end = min(spool.size, spool.end + CHUNK)
            spool.append(b"".join(self.objects.get_range(blob_name(spool.key), spool.end, end)))

    # -- holding the lease ----------------------------------------------------------------

    def _hold(self, fill: Fill, lease: Lease, run: Run) -> None:
        key = fill.file.etag
        lease.start()
        holder = _Holder(self.objects, fill.file, lease, self.poll)
        with self._lock:
            self._holding[key] = holder
        try:
            self._clean(key, lease.gen)

            def claimed(partial: PartialFile) -> None:
                fill.claimed(partial)
                holder.claimed(partial)

            run(fill.file, claimed, _PublishingStore(self.store, holder), holder.cancel)
        finally:
            holder.stop()
            with self._lock:
                self._holding.pop(key, None)
            if not holder.abandoned:
                holder.delete_chunks()
                try:
                    lease.release()
                except StoreUnavailable:
                    pass  # it expires by itself; the blob is stored (or not) either way

    def _clean(self, key: str, keep_gen: str) -> None:
        """Chunks and unfinished uploads of other generations: a dead holder's leftovers."""
        ours = f"{FILLS}{key}/{keep_gen}/"
        for info in self.objects.scan(f"{FILLS}{key}/"):
            if not info.name.startswith(ours):
                self.objects.delete(info.name)
        for name, upload_id in self.objects.list_multipart(blob_name(key)):
            if name == blob_name(key):
                self.objects.abort_multipart(name, upload_id)

    def holding(self) -> list[str]:
        """The blobs this replica fetches upstream for the fleet now."""
        with self._lock:
            return list(self._holding)

    def abandon(self, key: str) -> bool:
        """Stop holding ``key`` as a killed process would: no renewals, the fill stops, and
        the lease, chunks and uploads stay behind for another replica to take over (tests
        use it to kill a holder in-process)."""
        with self._lock:
            holder = self._holding.get(key)
        if holder is None:
            return False
        holder.abandoned = True
        holder.lease.stop()
        holder.cancel.set()
        return True


class Spool:
    """A follower's local copy of a blob, written in order and hashed as it lands. The file
    is unlinked at once: readers keep dups of its fd, and a crash leaves nothing behind."""

    def __init__(self, directory: Path, file: RemoteFile) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{file.etag}.{secrets.token_hex(4)}.fleet-spool"
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        path.unlink()
        self.key = file.etag
        self.size = file.size
        self.end = 0  # bytes [0, end) landed
        self._hasher = new_hasher(file)
        self._lock = threading.Lock()

    @property
    def complete(self) -> bool:
        return self.end >= self.size

    def append(self, data: bytes) -> None:
        view, offset = memoryview(data), self.end
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        self._hasher.update(data)
        self.end = offset  # after the write: readers never see bytes that are not there

    def digest(self) -> str:
        return self._hasher.hexdigest()

    def landed(self, start: int) -> int:
        end = self.end
        return end if start < end else start

    def dup(self) -> int:
        with self._lock:
            return os.dup(self._fd) if self._fd >= 0 else -1

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class _Holder:
    """The lease holder's side of one fill: the chunk uploader and the final compose."""

    def __init__(self, objects: ObjectStore, file: RemoteFile, lease: Lease, poll: float) -> None:
        self.objects = objects
        self.file = file
        self.lease = lease
        self.poll = poll
        self.cancel = threading.Event()  # stops the engine's fill (lease lost, abandoned)
        self.abandoned = False
        self.uploaded: dict[int, str] = {}  # chunk index -> MD5 of the bytes uploaded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spans = list(chunk_spans(file.size))

    def claimed(self, partial: PartialFile) -> None:
        if self._thread is not None:  # claimed again (the engine lost its first partial)
            self.stop()
            self._stop = threading.Event()
        fd = os.open(partial.data_path, os.O_RDONLY)  # now: a small blob is renamed soon
        self._thread = threading.Thread(
            target=self._upload, args=(partial, fd), name="hfpull-fleet-upload", daemon=True
        )
        self._thread.start()

    def _upload(self, partial: PartialFile, fd: int) -> None:
        """Each chunk of the partial, once its bytes are contiguous, as a chunk object (the
        fd's inode outlives a publish's rename)."""
        try:
            index = 0
            while index < len(self._spans) and not self._stop.is_set():
                if self.lease.lost.is_set():
                    self.cancel.set()  # another replica holds it now: stop fetching
                    return
                _, start, end = self._spans[index]
                if partial.snapshot_done().contiguous_end(0) < end:
                    self._stop.wait(self.poll)
                    continue
                data = os.pread(fd, end - start, start)
                try:
                    self._put_chunk(index, data)
                except StoreUnavailable:
                    self._stop.wait(self.poll)
                    continue
                index += 1
        finally:
            os.close(fd)

    def _put_chunk(self, index: int, data: bytes) -> None:
        self.objects.put(chunk_name(self.file.etag, self.lease.gen, index), data)
        self.uploaded[index] = _digest(data)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def publish(self, verified: Path) -> None:
        """The engine verified the blob: make sure every chunk is its bytes, then compose."""
        self.stop()
        self.lease.check()
        fd = os.open(verified, os.O_RDONLY)
        try:
            for index, start, end in self._spans:
                data = os.pread(fd, end - start, start)
                if self.uploaded.get(index) != _digest(data):
                    self._put_chunk(index, data)
        finally:
            os.close(fd)
        self.lease.check()
        self._compose()

    def _compose(self) -> None:
        name = blob_name(self.file.etag)
        if not self._spans:  # an empty blob: no parts to compose
            try:
                self.objects.put(name, b"", if_none_match=True)
            except PreconditionFailed:
                pass
            return
        upload_id = self.objects.create_multipart(name)
        try:
            parts = []
            for index, start, end in self._spans:
                source = chunk_name(self.file.etag, self.lease.gen, index)
                copy = self.objects.upload_part_copy
                parts.append((index + 1, copy(name, upload_id, index + 1, source, 0, end - start)))
            self.lease.check()
            self.objects.complete_multipart(name, upload_id, parts, if_none_match=True)
        except PreconditionFailed:  # stored by someone else first: the same verified bytes
            self.objects.abort_multipart(name, upload_id)
        except BaseException:
            self.objects.abort_multipart(name, upload_id)
            raise

    def delete_chunks(self) -> None:
        for index, _, _ in self._spans:
            try:
                self.objects.delete(chunk_name(self.file.etag, self.lease.gen, index))
            except StoreUnavailable:
                return  # left for the next holder's clean-up (or a sweep)


class _PublishingStore:
    """The mirror's blob store, except that publishing a verified blob composes it from the
    chunks already on the object store; the verified local file is then handed to the
    store's ``adopt`` (a local cache keeps it, the object store drops it)."""

    def __init__(self, inner: BlobStore, holder: _Holder) -> None:
        self._inner = inner
        self._holder = holder

    @property
    def partial_dir(self) -> Path:
        return self._inner.partial_dir

    def size(self, key: str) -> int | None:
        return self._inner.size(key)

    def put(self, key: str, verified: Path) -> None:
        self._holder.publish(verified)
        self._inner.adopt(key, verified)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _digest(data: bytes) -> str:
    """Tells whether an uploaded chunk still equals the verified bytes (not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


__all__ = ["CHUNK", "Fleet", "FleetFillFailed", "LeaseLost", "Spool", "chunk_name"]
