"""Single flight: one upstream fetch per cold blob, however many clients ask at once.

A fill runs the get engine in a thread. Clients follow the partial as it grows (the
contiguous bytes from where they read), never past the last HOLD_BACK bytes of the blob,
nor the last byte of their range, until the whole blob verified; if
verification fails their connection is cut, so no client ever sees a clean end of a body
that failed its hash. When the engine resets a partial after a bad source, the prefix goes
back, and readers that already sent bytes are cut too.

On a shared object store (serve/fleet.py) the fill is fleet-wide: the replica holding the
blob's lease fills as above; the others follow its chunk objects into a local spool, which
is then the fill's source. A fill's source can change (a follower that takes the lease over
starts again from byte 0): clients read through a FillReader, which notices the change.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hfpull.engine.partial import PartialFile
from hfpull.models import RemoteFile

if TYPE_CHECKING:
    from hfpull.serve.fleet import Fleet

HOLD_BACK = 64 << 10


class Source(Protocol):
    """A local file a fill's bytes land in, in whatever order, and how far they landed."""

    def landed(self, start: int) -> int:
        """Where the contiguous bytes from ``start`` end."""

    def dup(self) -> int:
        """A new fd of the file (the caller closes it), or -1 once the source is closed."""

    def close(self) -> None: ...


class PartialSource:
    """The engine's partial (its inode becomes the stored blob: dups stay readable)."""

    def __init__(self, partial: PartialFile) -> None:
        self.partial = partial
        self._fd = os.open(partial.data_path, os.O_RDONLY)
        self._lock = threading.Lock()

    def landed(self, start: int) -> int:
        return self.partial.snapshot_done().contiguous_end(start)

    def dup(self) -> int:
        with self._lock:
            return os.dup(self._fd) if self._fd >= 0 else -1

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# A fill's run: fetch ``file`` with the engine, calling on_claim with its partial; ``store``
# (a BlobStore, None: the mirror's) is where the verified blob is put; ``cancel`` stops it.
Run = Callable[..., None]


@dataclass(eq=False)
class Fill:
    file: RemoteFile
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    partial: PartialFile | None = None  # the engine's, on the replica that fetches upstream
    source: Source | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.time)  # wall clock, for the status page
    _sources: list[Source] = field(default_factory=list)

    def claimed(self, partial: PartialFile) -> None:
        self.partial = partial
        self.switch(PartialSource(partial))

    def switch(self, source: Source) -> None:
        """Bytes come from ``source`` from now on (readers of the old one are cut if they
        already sent bytes past what the new one has)."""
        with self.lock:
            self._sources.append(source)
            self.source = source

    def readable(self, start: int = 0) -> int:
        """Where the bytes from ``start`` that a client may be sent now end (0 once failed).

        Less than what the reader already sent means the source was reset or replaced.
        """
        if self.done.is_set():
            return self.file.size if self.error is None else 0
        source = self.source
        if source is None:
            return start
        end = source.landed(start)
        return min(end, max(start, self.file.size - HOLD_BACK))

    def reader(self) -> FillReader:
        return FillReader(self)

    def close(self) -> None:
        """Close every source's fd (readers keep their dups)."""
        with self.lock:
            sources, self._sources = self._sources, []
        for source in sources:
            source.close()


class FillReader:
    """One client's reads of a fill: a dup of the current source's fd, renewed when the
    source changes. ``read`` returns None where the store must answer (the fill ended before
    this reader opened anything), b"" where the bytes are not there or the source changed
    after this client was sent bytes from the old one (cut the client: a new generation of
    a fleet fill may differ from what it replaced until it verified)."""

    def __init__(self, fill: Fill) -> None:
        self.fill = fill
        self._source: Source | None = None
        self._fd = -1

    def read(self, start: int, end: int) -> bytes | None:
        source = self.fill.source
        if self._source is None or source is not self._source:  # None: nothing opened yet
            if self._source is not None:
                return b""  # replaced: what this client was sent came from the old source
            if source is None or self.fill.done.is_set():
                return None
            fd = source.dup()
            if fd < 0:
                return None
            self._source, self._fd = source, fd
            if source.landed(start) < end and not self.fill.done.is_set():
                return b""  # replaced between readable() and here
        return os.pread(self._fd, end - start, start)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._source = None


class Fills:
    def __init__(self, run: Run, fleet: Fleet | None = None) -> None:
        self._run = run
        self.fleet = fleet
        self._fills: dict[str, Fill] = {}
        self._guard = threading.Lock()
        self.started = 0  # fills started (each is one upstream fetch, or one follow)

    @property
    def active(self) -> int:
        with self._guard:
            return len(self._fills)

    def in_progress(self) -> list[Fill]:
        with self._guard:
            return list(self._fills.values())

    def join(self, file: RemoteFile) -> tuple[Fill, bool]:
        """The fill for this blob, started if none runs; True if this call started it."""
        with self._guard:
            fill = self._fills.get(file.etag)
            if fill is not None:
                return fill, False
            fill = self._fills[file.etag] = Fill(file)
            self.started += 1
        threading.Thread(target=self._fill, args=(fill,), name="hfpull-fill", daemon=True).start()
        return fill, True

    def _fill(self, fill: Fill) -> None:
        try:
            if self.fleet is None:
                self._run(fill.file, fill.claimed)
            else:
                self.fleet.fill(fill, self._run)
        except BaseException as exc:
            fill.error = exc
        finally:
            with self._guard:
                self._fills.pop(fill.file.etag, None)
            fill.done.set()
            fill.close()
