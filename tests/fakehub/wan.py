"""A WAN on loopback: one link cap shared by every response, and the knobs' command-line flags.

The fake Hub models a wide-area link with four knobs (attributes of ``FakeHub``):

- ``throttle_rate``: bytes/s per response for file content. Responses on one keep-alive
  connection are sequential, so this is also the per-connection cap (one TCP stream).
- ``aggregate_rate``: bytes/s for all response bodies together (the link), a `TokenBucket`
  shared by every response of both listeners, so parallel streams add up only to it.
- ``latency``: seconds each request waits before it is answered (both listeners): the
  round trip a request costs on a WAN.
- ``connect_latency``: seconds a new connection waits before its first request is read (the
  TCP handshake's round trip; TLS is not modelled).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import FakeHub

BURST_SECONDS = 0.02  # how much unused link a quiet moment may save up (20 ms worth)
MIN_BURST = 64 * 1024


class TokenBucket:
    """Thread-safe token bucket in bytes: ``reserve(n)`` says how long to wait before sending n.

    A reservation always succeeds and may leave the bucket in debt; the caller sleeps the
    returned time, then sends. Reservations are served in the order they are made, so the
    bytes sent by time t never exceed ``capacity + rate * t`` however many threads share it.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(MIN_BURST, rate * BURST_SECONDS)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._last = clock()

    def reserve(self, n: int) -> float:
        """Take ``n`` bytes' worth of tokens; returns the seconds to wait before sending them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            return -self._tokens / self.rate if self._tokens < 0 else 0.0


class LinkBucket:
    """The hub's one bucket for ``aggregate_rate``, rebuilt when the knob changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bucket: TokenBucket | None = None

    def for_rate(self, rate: float) -> TokenBucket | None:
        if rate <= 0:
            return None
        with self._lock:
            if self._bucket is None or self._bucket.rate != rate:
                self._bucket = TokenBucket(rate)
            return self._bucket


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The WAN flags shared by ``python -m tests.fakehub`` and ``benchmarks/fakehub_stats.py``."""
    parser.add_argument(
        "--throttle", type=int, default=0, metavar="BYTES_PER_S", help="cap per connection"
    )
    parser.add_argument(
        "--aggregate-rate",
        type=int,
        default=0,
        metavar="BYTES_PER_S",
        help="cap for all responses together (the link)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="added before each answer"
    )
    parser.add_argument(
        "--connect-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="added before a new connection's first request is read",
    )


def apply(hub: FakeHub, args: argparse.Namespace) -> None:
    hub.throttle_rate = args.throttle
    hub.aggregate_rate = args.aggregate_rate
    hub.latency = args.latency
    hub.connect_latency = args.connect_latency
