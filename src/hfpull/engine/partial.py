"""Resumable partial blobs, and the claim that gives each blob exactly one writer.

Why not ``flock``: on NFS/Lustre/GPFS it can silently succeed for everyone, and two writers in
one partial produce a valid-looking wrong blob (huggingface_hub PR #4306). The claim is a hard
link instead (``link`` is atomic and exclusive on local filesystems and NFS alike). For the blob
with hash E, in the partial directory:

    E.hfpull.lock                    the claim: a hard link to its holder's owner record
    E.hfpull-T.owner                 the owner record of claim T (host, boot, pid ns, pid, ...)
    E.hfpull-T.incomplete            T's bytes, written only while T holds the lock
    E.hfpull-T.incomplete.journal    the byte ranges T has on disk, its state and a heartbeat
    E.hfpull-T.aside                 T's replacement lock, just before it breaks a lock

Only the lock's holder writes bytes. Every other partial of E is abandoned; the holder takes
the best one over by ``rename`` when its writer can never write again (certainly dead, or it
released it), else by copying its ranges into a fresh file, so two processes never share an
inode. A holder checks it still holds the lock before every journal write and before it
publishes, and raises ``LostPartial`` when it does not. States, transitions and why each step
is safe against any step of another process: docs/architecture.md, "The claim protocol".
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hfpull.engine.owner import LeaseWatch, Owner, Verdict, judge, this_process
from hfpull.fs import unlink_quiet
from hfpull.models import RemoteFile

JOURNAL_FORMAT = 2
ADOPT_RESCANS = 24  # looks for bytes another claimant is adopting; at most ~0.9 s of waits
JOURNAL_INTERVAL = 0.1  # seconds between journal writes while bytes arrive
# ... or sooner, once this many bytes landed unrecorded: a kill loses at most this much work
# whatever the rate (at 150 MB/s, 0.1 s alone is 15 MB). bench_suite: S5 (SIGKILL at 50%,
# rerun) sent 1.087x the file with the time bound alone, 1.024x with 4 MiB, 1.015x with 2 MiB;
# but at 2 MiB the journal writes cost S4 (no caps, ~430 MB/s) a fifth of its rate.
JOURNAL_BYTES = 4 << 20
COPY_CHUNK = 64 << 20

_OWNED: set[str] = set()  # tokens of claims this process has in flight or holds
_OWNED_GUARD = threading.Lock()

T = TypeVar("T")
Steps = Generator[str, None, T]  # yields a label after each filesystem step (for tests)


_KINDS = (
    "owner",
    "owner.tmp",
    "incomplete",
    "incomplete.journal",
    "incomplete.journal.tmp",
    "aside",
)


class LostPartial(Exception):
    """Another process judged this one gone and took the blob over: stop, publish nothing."""


class Busy:
    """Another live process is downloading this blob right now."""


BUSY = Busy()


class IntervalSet:
    """Disjoint, sorted half-open byte ranges [start, end)."""

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges or []:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        merged: list[tuple[int, int]] = []
        for s, e in self._ranges:
            if e < start or s > end:
                merged.append((s, e))
            else:
                start, end = min(s, start), max(e, end)
        merged.append((start, end))
        merged.sort()
        self._ranges = merged

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(self._ranges)

    def total(self) -> int:
        return sum(e - s for s, e in self._ranges)

    def prefix_end(self) -> int:
        """End of the contiguous range that starts at byte 0."""
        return self._ranges[0][1] if self._ranges and self._ranges[0][0] == 0 else 0

    def contiguous_end(self, start: int) -> int:
        """End of the contiguous range that holds byte ``start`` (``start`` if none does)."""
        for s, e in self._ranges:
            if s <= start < e:
                return e
        return start

    def missing(self, size: int) -> list[tuple[int, int]]:
        gaps, pos = [], 0
        for s, e in self._ranges:
            if s > pos:
                gaps.append((pos, min(s, size)))
            pos = max(pos, e)
        if pos < size:
            gaps.append((pos, size))
        return [(s, e) for s, e in gaps if e > s]


class PartialFile(Protocol):
    """What a transfer writes into and the scheduler publishes: a claimed :class:`Partial`,
    or an unclaimed small blob (engine/small.py)."""

    file: RemoteFile
    fd: int

    @property
    def data_path(self) -> Path: ...
    def write(self, offset: int, data: bytes | memoryview) -> None: ...
    def mark_done(self, start: int, end: int) -> None: ...
    def snapshot_done(self) -> IntervalSet: ...
    def flush_if_due(self, interval: float = ...) -> None: ...
    def flush_journal(self, force: bool = False) -> None: ...
    def heartbeat(self) -> None: ...
    def reset(self) -> None: ...
    def publish(self, publish: Callable[[Path], None]) -> None: ...
    def release(self) -> None: ...
    def discard(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class BlobNames:
    """The names of every file the protocol keeps for one blob."""

    directory: Path
    etag: str

    @property
    def lock(self) -> Path:
        return self.directory / f"{self.etag}.hfpull.lock"

    def owner(self, token: str) -> Path:
        return self.directory / f"{self.etag}.{token}.owner"

    def data(self, token: str) -> Path:
        return self.directory / f"{self.etag}.{token}.incomplete"

    def journal(self, token: str) -> Path:
        return journal_path_for(self.data(token))

    def aside(self, token: str) -> Path:
        return self.directory / f"{self.etag}.{token}.aside"

    def tokens(self) -> dict[str, set[str]]:
        """Every claim token with files here, and which kinds of file it has."""
        prefix = f"{self.etag}.hfpull-"
        found: dict[str, set[str]] = {}
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return found
        for name in names:
            if not name.startswith(prefix):
                continue
            token, _, kind = name[len(self.etag) + 1 :].partition(".")
            if kind in _KINDS:
                found.setdefault(token, set()).add(kind)
        return found


def journal_path_for(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + ".journal")


@dataclass(eq=False)
class Partial:
    """A partial blob this process holds the lock for; positional writes, journal beside it."""

    file: RemoteFile
    names: BlobNames
    token: str
    owner: Owner
    done: IntervalSet
    fd: int
    _lock_id: tuple[int, int]  # (st_dev, st_ino) of our owner record = of the lock while held
    lost: bool = False
    _ended: bool = False  # publishing or released: no journal write may follow
    _over: bool = False  # the claim is finished: the lock is dropped, the token forgotten
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _journal_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dirty: bool = False
    _unrecorded: int = 0  # bytes marked done since the last journal write
    _last_flush: float = 0.0
    _beat: int = 0

    @property
    def data_path(self) -> Path:
        return self.names.data(self.token)

    @property
    def journal_path(self) -> Path:
        return self.names.journal(self.token)

    # -- ownership ------------------------------------------------------------------------

    def owns(self) -> bool:
        """True while the lock is ours and our data file is the inode we write into."""
        if self.lost:
            return False
        try:
            lock = os.stat(self.names.lock)
            data = os.stat(self.data_path)
        except FileNotFoundError:
            return False
        if (lock.st_dev, lock.st_ino) != self._lock_id:
            return False
        if self.fd < 0:
            return True
        mine = os.fstat(self.fd)
        return (data.st_dev, data.st_ino) == (mine.st_dev, mine.st_ino)

    def check_owned(self) -> None:
        if not self.owns():
            self._give_up()
            raise LostPartial(f"{self.file.path}: another process took this download over")

    def _give_up(self) -> None:
        """We lost the blob: remove our own files (never the lock, unless it is ours again)."""
        if self.lost:
            return
        self.lost = True
        for path in (self.data_path, self.journal_path, _tmp(self.journal_path)):
            unlink_quiet(path)
        _drive(_unlock_steps(self.names, self.token, self._lock_id))
        self._forget()

    # -- bytes and journal ----------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if self.lost:
            raise LostPartial(f"{self.file.path}: another process took this download over")
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def mark_done(self, start: int, end: int) -> None:
        with self._lock:
            self.done.add(start, end)
            self._dirty = True
            self._unrecorded += end - start

    def snapshot_done(self) -> IntervalSet:
        with self._lock:
            return IntervalSet(self.done.ranges)

    def flush_if_due(self, interval: float = JOURNAL_INTERVAL) -> None:
        """Flush every ``interval`` seconds, or once JOURNAL_BYTES landed unrecorded: a kill
        loses at most that much work."""
        if self._unrecorded >= JOURNAL_BYTES or time.monotonic() - self._last_flush >= interval:
            self.flush_journal()

    def flush_journal(self, force: bool = False) -> None:
        """Record progress and advance the heartbeat; raise LostPartial if the lock is gone."""
        with self._journal_lock:
            if not self._ended:
                self._flush_locked(force, "active")

    def _flush_locked(self, force: bool, state: str) -> None:
        with self._lock:
            if not (self._dirty or force):
                return
            ranges = self.done.ranges
            self._dirty = False
            self._unrecorded = 0
            self._last_flush = time.monotonic()
            self._beat += 1
            beat = self._beat
        self.check_owned()
        try:
            _write_journal(self.journal_path, self.file, self.owner, ranges, state, beat)
        except LostPartial:
            self._give_up()
            raise

    def heartbeat(self) -> None:
        self.flush_journal(force=True)

    def reset(self) -> None:
        """Forget every byte (after a hash mismatch: corrupt data is never resumed from)."""
        with self._lock:
            self.done = IntervalSet()
            self._dirty = True
        os.ftruncate(self.fd, 0)
        self.flush_journal()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- the ends of a claim --------------------------------------------------------------

    def publish_steps(self, publish: Callable[[Path], None]) -> Steps[None]:
        """Verified bytes go to their final path: ``publish`` renames the data file there."""
        os.fsync(self.fd)
        with self._journal_lock:
            self.check_owned()
            self._ended = True
        yield "checked"
        publish(self.data_path)
        yield "published"
        self.close()
        unlink_quiet(self.journal_path)
        yield "journal removed"
        _remove_all_abandoned(self.names, self.token)  # writers that lost the blob to us
        yield "abandoned removed"
        yield from _unlock_steps(self.names, self.token, self._lock_id)
        self._forget()

    def publish(self, publish: Callable[[Path], None]) -> None:
        _drive(self.publish_steps(publish))

    def release_steps(self) -> Steps[None]:
        """Stop, keep data and journal for a later run: state "released" lets the next holder
        adopt the file by rename at once, whoever is still running. Call it only once no
        thread writes into the partial any more. Safe to call after any other end."""
        with self._journal_lock:
            self._ended = True
            if not (self.lost or self._over):
                try:
                    self._flush_locked(True, "released")
                except LostPartial:
                    pass
        self.close()
        if self.lost or self._over:
            return
        yield "released"
        yield from _unlock_steps(self.names, self.token, self._lock_id)
        self._forget()

    def release(self) -> None:
        _drive(self.release_steps())

    def discard(self) -> None:
        """Drop the bytes (they failed their hash) and the claim."""
        with self._journal_lock:
            self._ended = True
        self.close()
        if self._over:
            return
        for path in (self.data_path, self.journal_path, _tmp(self.journal_path)):
            unlink_quiet(path)
        if not self.lost:
            _remove_all_abandoned(self.names, self.token)
            _drive(_unlock_steps(self.names, self.token, self._lock_id))
        self.lost = True
        self._forget()

    def _forget(self) -> None:
        self._over = True
        _forget(self.names, self.token)


# -- claiming -------------------------------------------------------------------------------


def claim(directory: Path, file: RemoteFile, watch: LeaseWatch) -> Partial | Busy:
    """Hold the lock for ``file``'s blob and a partial for it, or BUSY if a live owner has it."""
    return _drive(claim_steps(directory, file, watch))


def claim_steps(directory: Path, file: RemoteFile, watch: LeaseWatch) -> Steps[Partial | Busy]:
    """``claim`` one filesystem step at a time, so tests can interleave claimants by hand."""
    directory.mkdir(parents=True, exist_ok=True)
    names = BlobNames(directory, file.etag)
    token = "hfpull-" + secrets.token_hex(8)
    owner = this_process(token)
    record = _encode({"format": JOURNAL_FORMAT, "etag": file.etag, "owner": owner.to_json()})
    with _OWNED_GUARD:  # before the link: a thread of ours must never judge this claim dead
        _OWNED.add(token)
    try:
        # Complete before it appears under its name: an empty record would read as junk.
        pending = _tmp(names.owner(token))
        pending.write_bytes(record)
        os.rename(pending, names.owner(token))
        yield "owner written"
        if not (yield from _acquire(names, token, watch)):
            _forget(names, token)
            return BUSY
        lock_id = _file_id(names.owner(token))
        yield "locked"
        try:
            result = yield from _take_over(names, file, token, owner, lock_id)
        except LostPartial:
            # Our new lock was replaced at once and its new holder is removing our files:
            # whoever holds it now does the work.
            if _same_file(names.lock, lock_id):
                _drive(_unlock_steps(names, token, lock_id))
            result = BUSY
        except BaseException:
            for path in (names.data(token), names.journal(token), _tmp(names.journal(token))):
                unlink_quiet(path)
            _drive(_unlock_steps(names, token, lock_id))
            raise
    except BaseException:
        _forget(names, token)
        raise
    if result is BUSY:
        _forget(names, token)
    return result


def _acquire(names: BlobNames, token: str, watch: LeaseWatch) -> Steps[bool]:
    """Link our owner record as the lock; replace a lock whose holder is gone. False: BUSY."""
    mine = names.owner(token)
    while True:
        if _link(mine, names.lock):
            return True
        yield "lock is taken"
        try:
            seen = names.lock.read_bytes()
        except FileNotFoundError:
            continue
        yield "lock read"
        holder = _parse_owner(seen)
        verdict = judge(holder, _owned_here) if holder else Verdict.UNKNOWN
        if verdict is Verdict.ALIVE:
            return False
        if verdict is Verdict.UNKNOWN:
            # Cannot ask the kernel: gone only if its heartbeat stood still for a whole lease
            # of our own clock (the journal is rewritten with a new beat every few seconds).
            key = holder.token if holder else "lock:" + seen.hex()[:32]
            beat = _read_bytes(names.journal(holder.token)) if holder else b""
            yield "heartbeat read"
            if not watch.expired(f"{names.etag}/{key}", seen + b"\0" + beat):
                return False
        # Break it: our record replaces the lock in one rename, so there is never a moment
        # without a lock. Judge again right before: a lock that changed hands meanwhile has a
        # new holder that must be judged on its own.
        aside = names.aside(token)
        unlink_quiet(aside)
        os.link(mine, aside)
        yield "replacement ready"
        if _read_bytes(names.lock) != seen:
            unlink_quiet(aside)
            continue
        yield "lock read again"
        os.rename(aside, names.lock)
        yield "lock replaced"
        if holder is not None:
            unlink_quiet(names.owner(holder.token))
        if _same_file(names.lock, _file_id(mine)):
            return True
        # Another claimant, judging the same dead holder, replaced it right after us; its
        # claim stands (ours never wrote a byte): judge it like any holder.


def _take_over(
    names: BlobNames, file: RemoteFile, token: str, owner: Owner, lock_id: tuple[int, int]
) -> Steps[Partial | Busy]:
    """We hold the lock, so every other partial of this blob is abandoned: resume from the best
    one, remove the rest. By rename only when its writer can never write again."""
    journal = names.journal(token)
    _write_journal(journal, file, owner, [], "active", 0)  # a first heartbeat
    yield "journal started"
    fd = -1
    try:
        done = IntervalSet()
        for rescan in range(ADOPT_RESCANS):
            # Look again when a candidate vanished (a loser just took it), or a journal names
            # ranges whose file we did not see: readdir may miss a file renamed meanwhile, or
            # its claimant is between naming the ranges and renaming the file (a few syscalls,
            # but a descheduled thread can take milliseconds: wait a little, then look again).
            found = names.tokens()
            found.pop(token, None)
            best = _best_candidate(names, file, found)
            if best is None:
                if rescan < ADOPT_RESCANS - 1 and _unseen_data(names, file, found):
                    if rescan >= 2:
                        time.sleep(min(0.05, 0.001 * 2 ** (rescan - 2)))
                    continue
                break
            other, record = best
            # Our journal names the ranges before our data file exists: whoever sees the
            # file sees what it holds.
            _write_journal(journal, file, owner, record["done"], "active", 0)
            yield "journal names the ranges"
            fd = yield from _adopt(names, file, token, owner, other, record)
            if fd >= 0:
                done = IntervalSet(record["done"])
                break
        for other, kinds in found.items():
            _remove_abandoned(names, other, kinds)
        yield "abandoned removed"
        if fd < 0:
            _write_journal(journal, file, owner, [], "active", 0)
            fd = os.open(names.data(token), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            yield "created"
        if os.fstat(fd).st_size > file.size:
            os.ftruncate(fd, 0)  # longer than the blob: not a prefix of it, distrust all
            done = IntervalSet()
        partial = Partial(file, names, token, owner, done, fd, lock_id)
        if not _same_file(names.lock, lock_id):
            # Our lock was replaced before we wrote a byte (two claimants broke one dead
            # holder's lock at once). Nothing else writes this file: leave it adoptable,
            # unless the new holder already removed it.
            if _same_file(names.data(token), _fd_id(fd)):
                _write_journal(journal, file, owner, done.ranges, "released", 1)
            else:
                unlink_quiet(journal)
            os.close(fd)
            return BUSY
        if not partial.owns():  # a claimant that lost to us removed our file: start afresh
            os.close(fd)
            fd = -1
            _write_journal(journal, file, owner, [], "active", 0)
            fd = os.open(names.data(token), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            partial = Partial(file, names, token, owner, IntervalSet(), fd, lock_id)
        partial.flush_journal(force=True)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return partial


def _unseen_data(names: BlobNames, file: RemoteFile, found: dict[str, set[str]]) -> bool:
    for other, kinds in found.items():
        if "incomplete" not in kinds and "incomplete.journal" in kinds:
            record = _read_journal(names.journal(other), file)
            if record is not None and record["done"]:
                return True
    return False


def _best_candidate(
    names: BlobNames, file: RemoteFile, found: dict[str, set[str]]
) -> tuple[str, dict[str, Any]] | None:
    """The abandoned partial with the most bytes whose journal describes this blob."""
    best: tuple[int, str, dict[str, Any]] | None = None
    for other, kinds in found.items():
        record = _read_journal(names.journal(other), file) if "incomplete" in kinds else None
        if record is not None:
            held = IntervalSet(record["done"]).total()
            if best is None or held > best[0]:
                best = (held, other, record)
    return None if best is None else (best[1], best[2])


def _adopt(
    names: BlobNames,
    file: RemoteFile,
    token: str,
    owner: Owner,
    other: str,
    record: dict[str, Any],
) -> Steps[int]:
    """Make ``other``'s bytes ours: an open fd of our data file, or -1 if they are gone."""
    mine = names.data(token)
    if _can_rename(record):
        try:
            fd = os.open(names.data(other), os.O_RDWR)  # before the rename: it is this inode
        except FileNotFoundError:
            return -1
        try:
            os.rename(names.data(other), mine)
        except FileNotFoundError:
            os.close(fd)
            return -1
        yield "adopted by rename"
        return fd
    try:
        source = os.open(names.data(other), os.O_RDONLY)
    except FileNotFoundError:
        return -1
    try:
        fd = os.open(mine, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            beat = _Beat(names.journal(token), file, owner, record["done"])
            yield from _copy_ranges(source, fd, IntervalSet(record["done"]), beat)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(source)
    yield "adopted by copy"
    return fd


def _can_rename(record: dict[str, Any]) -> bool:
    """May we take this file's inode? Only if its writer will never write into it again."""
    if record.get("state") == "released":
        return True
    owner = Owner.from_json(record.get("owner"))
    return owner is not None and judge(owner, _owned_here) is Verdict.DEAD


def _remove_all_abandoned(names: BlobNames, token: str) -> None:
    others = names.tokens()
    others.pop(token, None)
    for other, kinds in others.items():
        _remove_abandoned(names, other, kinds)


def _remove_abandoned(names: BlobNames, other: str, kinds: set[str]) -> None:
    """Drop another claim's data and journal. Its owner record and aside file may belong to a
    claimant still on its way to the lock, so those go only when their process is dead."""
    holder = _parse_owner(_read_bytes(names.lock))
    if holder is not None and holder.token == other:
        return  # it replaced our lock meanwhile: its files are not abandoned, ours are
    if "incomplete" in kinds:  # only files we saw: one that appeared since is looked at later
        unlink_quiet(names.data(other))
    if "incomplete.journal" in kinds:
        unlink_quiet(names.journal(other))
    if "incomplete.journal.tmp" in kinds:
        unlink_quiet(_tmp(names.journal(other)))
    if kinds & {"owner", "owner.tmp", "aside"}:
        record = _read_bytes(names.owner(other)) or _read_bytes(_tmp(names.owner(other)))
        owner = _parse_owner(record)
        if owner is not None and judge(owner, _owned_here) is Verdict.DEAD:
            _forget(names, other)


class _Beat:
    """Heartbeats while a takeover copies a large partial (before the Partial exists)."""

    def __init__(
        self, journal: Path, file: RemoteFile, owner: Owner, ranges: list[tuple[int, int]]
    ) -> None:
        self.args = (journal, file, owner, ranges)
        self.count = 0
        self.last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= 1.0:
            self.count += 1
            self.last = time.monotonic()
            journal, file, owner, ranges = self.args
            _write_journal(journal, file, owner, ranges, "active", self.count)


def _copy_ranges(source: int, target: int, ranges: IntervalSet, beat: _Beat) -> Steps[None]:
    for start, end in ranges.ranges:
        offset = start
        while offset < end:
            count = min(COPY_CHUNK, end - offset)
            try:
                copied = os.copy_file_range(source, target, count, offset, offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                copied = os.pwrite(target, os.pread(source, count, offset), offset)
            if copied == 0:
                return  # the source is shorter than its journal said: the hash will tell
            offset += copied
            beat()
            yield "copied"


def _unlock_steps(names: BlobNames, token: str, lock_id: tuple[int, int]) -> Steps[None]:
    """Drop our lock if it is still ours (a claimant that judged us gone may have replaced it;
    it can only have done so while we were silent for a whole lease)."""
    holder = _parse_owner(_read_bytes(names.lock))
    if not (_same_file(names.lock, lock_id) and holder is not None and holder.token == token):
        return
    yield "lock checked"
    unlink_quiet(names.lock)


def _forget(names: BlobNames, token: str) -> None:
    unlink_quiet(_tmp(names.owner(token)))
    unlink_quiet(names.aside(token))
    unlink_quiet(names.owner(token))
    with _OWNED_GUARD:
        _OWNED.discard(token)


def _owned_here(token: str) -> bool:
    with _OWNED_GUARD:
        return token in _OWNED


def _link(source: Path, lock: Path) -> bool:
    try:
        os.link(source, lock)
        return True
    except FileExistsError:
        # NFS: a retried LINK whose first reply was lost answers EEXIST although it worked.
        return _same_file(lock, _file_id(source))
    except FileNotFoundError:
        return False


def _drive(steps: Steps[T]) -> T:
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


# -- records --------------------------------------------------------------------------------


def held_bytes(directory: Path, file: RemoteFile) -> int:
    """Bytes already on disk in resumable partials for ``file`` (for planning and disk checks)."""
    names = BlobNames(directory, file.etag)
    best = 0
    for token, kinds in names.tokens().items():
        if {"incomplete", "incomplete.journal"} <= kinds:
            record = _read_journal(names.journal(token), file)
            if record is not None:
                best = max(best, IntervalSet(record["done"]).total())
    return best


def _write_journal(
    path: Path,
    file: RemoteFile,
    owner: Owner,
    ranges: list[tuple[int, int]],
    state: str,
    beat: int,
) -> None:
    record = {
        "format": JOURNAL_FORMAT,
        "etag": file.etag,
        "size": file.size,
        "done": ranges,
        "state": state,
        "owner": owner.to_json(),
        "beat": beat,
    }
    tmp = _tmp(path)
    # Not fsynced, on purpose (unlike fs.replacing): a journal that lies after a crash costs
    # only a refetch, since the blob's hash checks every byte before it is published.
    tmp.write_bytes(_encode(record))
    try:
        os.replace(tmp, path)
    except FileNotFoundError:  # the lock's new holder removed our files: we are not the writer
        raise LostPartial(f"{file.path}: another process took this download over") from None


def _read_journal(path: Path, file: RemoteFile) -> dict[str, Any] | None:
    """A journal that describes this exact blob, or None (then its ranges are not trusted).

    Format 1 (before the lock) is read for its ranges: such a file is adopted by copy."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    try:
        ok = (
            record["format"] in (1, JOURNAL_FORMAT)
            and record["etag"] == file.etag
            and record["size"] == file.size
            and all(0 <= s < e <= file.size for s, e in record["done"])
        )
    except (KeyError, TypeError, ValueError):
        return None
    if not ok:
        return None
    record["done"] = [(s, e) for s, e in record["done"]]
    return record  # type: ignore[no-any-return]


def _parse_owner(raw: bytes) -> Owner | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return Owner.from_json(record.get("owner")) if isinstance(record, dict) else None


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _file_id(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _fd_id(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def _same_file(path: Path, file_id: tuple[int, int]) -> bool:
    try:
        return _file_id(path) == file_id
    except FileNotFoundError:
        return False


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")
