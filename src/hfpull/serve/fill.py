"""Single flight: one upstream fetch per cold blob, however many clients ask at once.

A fill runs the get engine in a thread. Clients follow the partial as it grows (the
contiguous bytes from where they read), never past the last HOLD_BACK bytes of the blob,
nor the last byte of their range, until the whole blob verified; if
verification fails their connection is cut, so no client ever sees a clean end of a body
that failed its hash. When the engine resets a partial after a bad source, the prefix goes
back, and readers that already sent bytes are cut too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hfpull.engine.partial import PartialFile
from hfpull.models import RemoteFile

HOLD_BACK = 64 << 10


@dataclass(eq=False)
class Fill:
    file: RemoteFile
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    partial: PartialFile | None = None
    fd: int = -1  # a read-only fd of the partial's inode (it becomes the stored blob)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.time)  # wall clock, for the status page

    def claimed(self, partial: PartialFile) -> None:
        with self.lock:
            self.partial = partial
            self.fd = os.open(partial.data_path, os.O_RDONLY)

    def readable(self, start: int = 0) -> int:
        """Where the bytes from ``start`` that a client may be sent now end (0 once failed).

        Less than what the reader already sent means the engine reset the partial.
        """
        if self.done.is_set():
            return self.file.size if self.error is None else 0
        partial = self.partial
        if partial is None:
            return start
        end = partial.snapshot_done().contiguous_end(start)
        return min(end, max(start, self.file.size - HOLD_BACK))

    def read(self, start: int, end: int) -> bytes:
        return os.pread(self.fd, end - start, start)

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class Fills:
    def __init__(self, run: Callable[[RemoteFile, Callable[[PartialFile], None]], None]) -> None:
        self._run = run
        self._fills: dict[str, Fill] = {}
        self._guard = threading.Lock()
        self.started = 0  # fills started (each is one upstream fetch)

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
            self._run(fill.file, fill.claimed)
        except BaseException as exc:
            fill.error = exc
        finally:
            with self._guard:
                self._fills.pop(fill.file.etag, None)
            fill.done.set()
