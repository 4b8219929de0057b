"""Who fetches which bytes of one file: pieces handed out to connections, split when one frees.

Pure, thread-safe book-keeping (no I/O). A file's missing ranges are cut into pieces up front;
a connection that frees takes the lowest piece nobody has started, or, when none is left,
splits the in-flight piece that will take longest to finish (bytes left at its owner's rate)
at its current position and takes the upper half (as aria2 does), so the last bytes of a file
are never left to one slow connection. A piece its owner will finish within
``SPLIT_MIN_SECONDS`` is left alone: a new request would not be faster, and the victim's
bytes already in flight past the split point are wasted.

A piece's ``end`` can only move down, and only under the board's lock; its owner reserves
every chunk through :meth:`RangeBoard.reserve` before writing it, so it never writes a byte
that was split off to someone else.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1 << 20
SPLIT_MIN_SECONDS = 0.2  # about a new request's first byte on a WAN link, plus margin


@dataclass(eq=False)
class Piece:
    """Bytes [pos, end) still to fetch for one connection; ``start`` is where it began."""

    start: int
    pos: int
    end: int
    _taken: float = 0.0  # when a connection took it
    _since: float | None = None  # when its owner reserved its first chunk
    _from: int = 0  # pos at that moment

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def seconds_left(self, now: float, patience: float) -> float:
        """Time its owner needs for the rest at its rate so far. No rate yet: 0 (leave it
        alone, it has just started) until ``patience`` has passed without a byte, then inf
        (stuck connecting or retrying)."""
        if self._since is None or self.pos == self._from:
            return math.inf if now - self._taken > patience else 0.0
        return self.remaining * (now - self._since) / (self.pos - self._from)


class RangeBoard:
    """The pieces of one file and their owners' progress.

    ``min_split`` is the smallest half a split may leave on either side: a split costs one
    more request (a round trip, and the victim reconnects since its body continues past the
    new end), which only pays off when the half moved takes longer than that to fetch.
    """

    def __init__(
        self,
        missing: list[tuple[int, int]],
        piece_size: int,
        min_split: int,
        *,
        min_seconds: float = SPLIT_MIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if piece_size <= 0 or min_split <= 0:
            raise ValueError("piece_size and min_split must be positive")
        self.min_split = min_split
        self.min_seconds = min_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._unassigned: list[Piece] = []
        for start, end in missing:
            while start < end:
                stop = min(end, start + piece_size)
                self._unassigned.append(Piece(start, start, stop))
                start = stop
        self._unassigned.reverse()  # pop() from the end hands out the lowest offset first
        self._active: set[Piece] = set()
        self.splits = 0

    @staticmethod
    def piece_size_for(missing_bytes: int, connections: int, min_split: int, cap: int) -> int:
        """One piece per connection the file may use, but none below ``min_split``; ``cap``
        (0: none) bounds a single request."""
        size = max(min_split, -(-missing_bytes // max(1, connections)))
        return min(size, cap) if cap > 0 else size

    # -- handing out work --------------------------------------------------------------

    def take(self) -> Piece | None:
        """The next piece to fetch: an unstarted one, else the upper half of a split, else
        None (everything left is in flight and too small to split)."""
        with self._lock:
            piece = self._unassigned.pop() if self._unassigned else self._split_largest()
            if piece is None:
                return None
            piece._taken = self._clock()
            self._active.add(piece)
            return piece

    def has_work(self) -> bool:
        """Would :meth:`take` give something right now?"""
        with self._lock:
            return bool(self._unassigned) or self._largest_splittable() is not None

    def can_ever_split(self) -> bool:
        """False when the file is one piece too small to split: one connection is enough."""
        with self._lock:
            pieces = [*self._unassigned, *self._active]
            return len(pieces) > 1 or any(p.remaining >= 2 * self.min_split for p in pieces)

    def _largest_splittable(self) -> Piece | None:
        """The piece whose owner will take longest, if splitting it is worth a request."""
        now = self._clock()
        best, best_left = None, 0.0
        for piece in self._active:
            if piece.remaining < 2 * self.min_split:
                continue
            left = piece.seconds_left(now, self.min_seconds)
            if left < self.min_seconds:
                continue
            if best is None or (left, piece.remaining) > (best_left, best.remaining):
                best, best_left = piece, left
        return best

    def _split_largest(self) -> Piece | None:
        victim = self._largest_splittable()
        if victim is None:
            return None
        middle = victim.pos + victim.remaining // 2
        upper = Piece(middle, middle, victim.end)
        victim.end = middle  # its owner stops here: reserve() never lets it past
        self.splits += 1
        return upper

    # -- the owner's side --------------------------------------------------------------

    def end_of(self, piece: Piece) -> int:
        """Where the owner should ask its next request to end (it may still move down)."""
        with self._lock:
            return piece.end

    def reserve(self, piece: Piece, nbytes: int) -> int:
        """Claim up to ``nbytes`` at ``piece.pos`` for writing; returns how many may be
        written (0 once the piece's end is reached). Called by the piece's owner only."""
        with self._lock:
            allowed = max(0, min(nbytes, piece.end - piece.pos))
            piece.pos += allowed
            if piece._since is None:  # its rate counts from the first chunk on
                piece._since, piece._from = self._clock(), piece.pos
            return allowed

    def finished(self, piece: Piece) -> None:
        """The owner stops working on ``piece``: done, or giving back what is left."""
        with self._lock:
            self._active.discard(piece)
            if piece.pos < piece.end:  # given back (a connection shed): someone else takes it
                self._unassigned.append(Piece(piece.pos, piece.pos, piece.end))
                self._unassigned.sort(key=lambda p: -p.start)
                piece.end = piece.pos

    def unfinished(self) -> list[tuple[int, int]]:
        """Ranges not yet reserved by anyone (for tests and diagnostics)."""
        with self._lock:
            pieces = [*self._unassigned, *self._active]
            return sorted((p.pos, p.end) for p in pieces if p.pos < p.end)
