"""One connection budget for the whole run, shared by every file.

A connection is a :class:`Slot`. Each file that is fetching holds one *primary* slot (so many
small, latency-bound files can be in flight at once); a big file asks for *extra* slots for
more connections, and gets one only when no file is waiting for its primary. The limit is
``--connections N`` when pinned, else it adapts (:mod:`hfpull.engine.adaptive`) between 1 and
:data:`MAX_CONNECTIONS`, starting at :data:`START_CONNECTIONS`. When the limit drops below
what is open, extra connections leave: at their next chunk when the server pushed back
(``shed_now`` is the cheap check, :meth:`ConnectionBudget.shed` the decision), at the end of
their piece when a step up merely gave no more rate (closing a connection mid-piece throws
away what is already in its socket buffers and costs the piece's rest a new request: on
bench_suite S2 that was 1% of the bytes on the wire). Primaries finish their file.
"""

from __future__ import annotations

import threading
import time

from hfpull.engine.adaptive import AdaptiveCount
from hfpull.settings import Settings

START_CONNECTIONS = 8  # the adaptive count's first guess for the run
MAX_CONNECTIONS = 32  # ceiling, adaptive or pinned
SAMPLE_SECONDS = 0.25  # rate sampling interval: a step up is judged within about 0.5 s
_WAIT_POLL = 0.2  # a waiting primary re-checks for a cancel this often


class Slot:
    """One open connection's place in the budget; its owner thread counts its bytes here."""

    __slots__ = ("extra", "received")

    def __init__(self, extra: bool) -> None:
        self.extra = extra
        self.received = 0  # written by the owning thread only; read by the sampler


class ConnectionBudget:
    def __init__(self, limit: int, *, adaptive: bool) -> None:
        if limit < 1:
            raise ValueError("a connection budget needs at least one connection")
        self._cond = threading.Condition()
        self._policy = AdaptiveCount(limit, MAX_CONNECTIONS) if adaptive else None
        self._limit = min(limit, MAX_CONNECTIONS)
        self._live: set[Slot] = set()
        self._retired_bytes = 0
        self._primaries_waiting = 0
        self._wanted = False  # the limit refused someone since the last sample
        self.over_limit = False  # more open than the limit allows: extras should leave
        self.shed_now = False  # ... at once (the server pushed back), not at a piece's end
        self.peak = 0  # most connections open at once during the run

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionBudget:
        """``connections`` > 0 pins the count for the run; 0 adapts."""
        if settings.connections > 0:
            return cls(settings.connections, adaptive=False)
        return cls(START_CONNECTIONS, adaptive=True)

    @property
    def adaptive(self) -> bool:
        return self._policy is not None

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        with self._cond:
            return len(self._live)

    # -- slots --------------------------------------------------------------------------

    def acquire(self, cancel: threading.Event) -> Slot | None:
        """A file's primary connection; waits for a free slot (None if ``cancel`` is set)."""
        with self._cond:
            self._primaries_waiting += 1
            try:
                while len(self._live) >= self._limit:
                    self._wanted = True
                    if cancel.is_set():
                        return None
                    self._cond.wait(_WAIT_POLL)
                return self._grant(extra=False)
            finally:
                self._primaries_waiting -= 1

    def try_extra(self) -> Slot | None:
        """One more connection for a file that has work for it, if the budget allows now."""
        with self._cond:
            if self._primaries_waiting or len(self._live) >= self._limit:
                self._wanted = True
                return None
            return self._grant(extra=True)

    def release(self, slot: Slot) -> None:
        with self._cond:
            self._drop(slot)

    def shed(self, slot: Slot) -> bool:
        """An extra connection asks whether to leave because the limit dropped; if so its
        slot is released here."""
        with self._cond:
            if not slot.extra or slot not in self._live or len(self._live) <= self._limit:
                return False
            self._drop(slot)
            return True

    def _grant(self, extra: bool) -> Slot:
        slot = Slot(extra)
        self._live.add(slot)
        self.peak = max(self.peak, len(self._live))
        return slot

    def _drop(self, slot: Slot) -> None:
        if slot in self._live:
            self._live.remove(slot)
            self._retired_bytes += slot.received
            self._update()
            self._cond.notify_all()

    def _update(self) -> None:
        self.over_limit = len(self._live) > self._limit
        if not self.over_limit:
            self.shed_now = False

    # -- the adaptive count -------------------------------------------------------------

    def received(self) -> int:
        """Bytes received over every connection of the run so far."""
        with self._cond:
            return self._retired_bytes + sum(slot.received for slot in self._live)

    def sample(self, rate: float) -> int:
        """Feed one interval's rate to the adaptive count; returns the limit now in force."""
        with self._cond:
            saturated = self._wanted or self._primaries_waiting > 0
            self._wanted = False
            if self._policy is not None:
                self._set_limit(self._policy.observe(rate, saturated))
            return self._limit

    def congested(self) -> None:
        """The server pushed back (429/503) or reset a connection: fewer connections."""
        with self._cond:
            if self._policy is not None:
                self._set_limit(self._policy.congestion())
                self.shed_now = self.over_limit

    def _set_limit(self, limit: int) -> None:
        if limit != self._limit:
            self._limit = limit
            self._update()
            self._cond.notify_all()

    def run_sampler(self, stop: threading.Event, interval: float = SAMPLE_SECONDS) -> None:
        """Thread body: sample the aggregate rate every ``interval`` until ``stop``."""
        if self._policy is None:
            return
        last_time, last_bytes = time.monotonic(), self.received()
        while not stop.wait(interval):
            now, total = time.monotonic(), self.received()
            self.sample((total - last_bytes) / max(now - last_time, 1e-6))
            last_time, last_bytes = now, total
