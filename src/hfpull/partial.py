"""Resumable partial blobs: ``<etag>.hfpull-<token>.incomplete`` plus a small JSON journal.

Why not a file lock: on NFS/Lustre/GPFS ``flock`` can silently succeed for everyone, and two
writers in one partial produce a valid-looking wrong blob (huggingface_hub PR #4306). Instead
every writer owns a partial under its own unique name. Taking over an abandoned partial is an
atomic ``rename`` to the new owner's name, so at most one process can win it, and a partial is
only taken over when its owner is provably gone: same host and the pid is dead, or (another
host) its journal has not been touched for ``stale_after`` seconds. The journal records which
byte ranges are on disk; the blob's hash is checked at the end, so a journal that lies (power
loss before the data reached the disk) costs a refetch, never a wrong file.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import RemoteFile

JOURNAL_FORMAT = 1
JOURNAL_INTERVAL = 0.1  # seconds between journal writes while bytes arrive
HOST = socket.gethostname()
_OWNED_TOKENS: set[str] = set()  # partials this process holds (guards against pid reuse)


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

    def missing(self, size: int) -> list[tuple[int, int]]:
        gaps, pos = [], 0
        for s, e in self._ranges:
            if s > pos:
                gaps.append((pos, min(s, size)))
            pos = max(pos, e)
        if pos < size:
            gaps.append((pos, size))
        return [(s, e) for s, e in gaps if e > s]


@dataclass(eq=False)
class Partial:
    """A partial blob this process owns; positional writes only, journal beside it."""

    file: RemoteFile
    data_path: Path
    token: str
    done: IntervalSet
    fd: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dirty: bool = False
    _last_flush: float = 0.0

    @property
    def journal_path(self) -> Path:
        return journal_path_for(self.data_path)

    def open(self) -> None:
        self.fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o644)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def mark_done(self, start: int, end: int) -> None:
        with self._lock:
            self.done.add(start, end)
            self._dirty = True

    def snapshot_done(self) -> IntervalSet:
        with self._lock:
            return IntervalSet(self.done.ranges)

    def flush_if_due(self, interval: float = JOURNAL_INTERVAL) -> None:
        """Flush at most every ``interval`` seconds: a crash loses at most that much work."""
        if time.monotonic() - self._last_flush >= interval:
            self.flush_journal()

    def flush_journal(self, force: bool = False) -> None:
        """Record progress and refresh the heartbeat (cheap: a small atomic file replace)."""
        with self._lock:
            if not (self._dirty or force):
                return
            ranges = self.done.ranges
            self._dirty = False
            self._last_flush = time.monotonic()
        _write_journal(self.journal_path, self.file, self.token, ranges)

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

    def release(self) -> None:
        """Close, keeping data and journal on disk for a later run to resume."""
        self.flush_journal()
        self.close()
        _OWNED_TOKENS.discard(self.token)

    def discard(self) -> None:
        self.close()
        for path in (self.data_path, self.journal_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        _OWNED_TOKENS.discard(self.token)


class Busy:
    """Another live process is downloading this blob right now."""


BUSY = Busy()


def journal_path_for(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + ".journal")


def partial_glob(file: RemoteFile) -> str:
    return f"{file.etag}.hfpull-*.incomplete"


def claim(directory: Path, file: RemoteFile, stale_after: float = 120.0) -> Partial | Busy:
    """Own the partial for ``file`` in ``directory``: adopt an abandoned one or start fresh."""
    directory.mkdir(parents=True, exist_ok=True)
    token = "hfpull-" + secrets.token_hex(6)
    mine = directory / f"{file.etag}.{token}.incomplete"
    candidates = []
    for data_path in directory.glob(partial_glob(file)):
        journal = _read_journal(journal_path_for(data_path), file)
        if _owner_alive(journal, data_path, stale_after):
            return BUSY
        candidates.append((_done_bytes(journal), data_path, journal))
    candidates.sort(key=lambda c: c[0], reverse=True)
    done = IntervalSet()
    adopted = False
    for _, data_path, journal in candidates:
        if not adopted:
            try:
                os.rename(data_path, mine)  # atomic: exactly one claimant wins
            except FileNotFoundError:
                continue
            adopted = True
            if journal is not None:
                done = IntervalSet([(s, e) for s, e in journal["done"]])
            _unlink(journal_path_for(data_path))
        else:  # leftovers of other abandoned writers
            _unlink(data_path)
            _unlink(journal_path_for(data_path))
    partial = Partial(file, mine, token, done)
    _OWNED_TOKENS.add(token)
    partial.open()
    if os.fstat(partial.fd).st_size > file.size:
        os.ftruncate(partial.fd, 0)  # longer than the blob: not a prefix of it, distrust all
        partial.done = IntervalSet()
    partial.flush_journal(force=True)
    return partial


def held_bytes(directory: Path, file: RemoteFile) -> int:
    """Bytes already on disk in resumable partials for ``file`` (for planning and disk checks)."""
    best = 0
    for data_path in directory.glob(partial_glob(file)):
        best = max(best, _done_bytes(_read_journal(journal_path_for(data_path), file)))
    return best


def _done_bytes(journal: dict[str, Any] | None) -> int:
    return IntervalSet([(s, e) for s, e in journal["done"]]).total() if journal else 0


def _write_journal(path: Path, file: RemoteFile, token: str, ranges: list[tuple[int, int]]) -> None:
    record = {
        "format": JOURNAL_FORMAT,
        "etag": file.etag,
        "size": file.size,
        "done": ranges,
        "host": HOST,
        "pid": os.getpid(),
        "token": token,
        "updated": time.time(),
    }
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _read_journal(path: Path, file: RemoteFile) -> dict[str, Any] | None:
    """A journal that describes this exact blob, or None (then its ranges are not trusted)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        ok = (
            record["format"] == JOURNAL_FORMAT
            and record["etag"] == file.etag
            and record["size"] == file.size
            and all(0 <= s < e <= file.size for s, e in record["done"])
        )
    except (KeyError, TypeError, ValueError):
        return None
    return record if ok else None


def _owner_alive(journal: dict[str, Any] | None, data_path: Path, stale_after: float) -> bool:
    if journal is None:
        if journal_path_for(data_path).exists():
            return False  # a journal for something else, or corrupt: nobody can be using it
        # No journal yet: the owner may be between creating the file and its journal.
        try:
            age = time.time() - data_path.stat().st_mtime
        except FileNotFoundError:
            return False
        return age < min(stale_after, 10.0)
    if journal.get("host") == HOST:
        pid = journal.get("pid")
        if pid == os.getpid():
            return journal.get("token") in _OWNED_TOKENS
        return isinstance(pid, int) and _pid_alive(pid)
    try:
        age = time.time() - journal_path_for(data_path).stat().st_mtime
    except FileNotFoundError:
        return False
    return age < stale_after


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) answers kill(0) but is gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
