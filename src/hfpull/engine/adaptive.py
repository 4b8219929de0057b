"""How many connections the run should use: pure decisions from periodic rate samples.

Called once per sample interval with the aggregate byte rate of that interval and whether the
limit was binding (someone wanted a connection and could not get one). Open more while each
step up still gives more: double, skip an interval while the new connections open, keep the
step if the rate rose by at least ``gain``, else go back; then try a finer step (half as
many again), and when that fails too, stop probing for a while. A rate measured while the
limit was not binding says nothing about the link and is ignored. Congestion (429/503,
resets) halves the count at once and caps later growth below the level that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass

GAIN = 0.10  # a step up must bring at least this much more rate to be kept
REPROBE_INTERVALS = 40  # after a step that gave nothing, wait this many intervals (10 s) to retry
COOLDOWN_INTERVALS = 4  # congestion reports this soon (1 s) after a backoff are the same event


@dataclass
class AdaptiveCount:
    limit: int
    ceiling: int
    gain: float = GAIN
    _baseline: float | None = None  # rate measured at the current limit while it was binding
    _previous: int | None = None  # the limit before the step being judged
    _settle: int = 0  # intervals to ignore (connections opening or closing)
    _hold: int = 0  # intervals before the next step up may be tried
    _cooldown: int = 0
    _step: float = 2.0  # the next step up multiplies the limit by this

    def observe(self, rate: float, saturated: bool) -> int:
        """One interval's rate (bytes/s); returns the limit for the next interval."""
        self._cooldown = max(0, self._cooldown - 1)
        if self._settle:
            self._settle -= 1
            return self.limit
        if self._previous is not None:
            assert self._baseline is not None
            if saturated and rate < self._baseline * (1 + self.gain):
                self.limit, self._previous, self._baseline = self._previous, None, None
                if self._step > 1.5:
                    self._step = 1.5  # a finer step from here, at once
                else:
                    self._hold = REPROBE_INTERVALS
                self._settle = 1
                return self.limit
            self._previous = None  # the step paid off (or the limit stopped binding): keep it
            self._baseline = rate if saturated else None
        if self._hold:
            self._hold -= 1
            return self.limit
        if not saturated:
            self._baseline = None
            return self.limit
        if self._baseline is None:
            self._baseline = rate
        if self.limit < self.ceiling:
            self._previous = self.limit
            self.limit = min(self.ceiling, max(self.limit + 2, int(self.limit * self._step)))
            self._settle = 1
        return self.limit

    def congestion(self) -> int:
        """The server pushed back (429/503) or reset a connection: halve, cap growth."""
        if self._cooldown:
            return self.limit
        self.ceiling = max(1, min(self.ceiling, self.limit - 1))
        self.limit = max(1, self.limit // 2)
        self._previous = self._baseline = None
        self._settle, self._hold, self._cooldown = 1, 0, COOLDOWN_INTERVALS
        return self.limit
