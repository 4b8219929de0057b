"""Injectable faults and the thread-safe book-keeping that hands them to requests.

A fault is only consumed (``times`` decremented) by a request it actually applies to:

- ``delay``, ``status``, ``html``, ``redirect`` (a 302 to ``location``): any matching request.
- ``expire``: a hub request answered with an LFS redirect.
- ``ignore_range``, ``wrong_content_range``, ``wrong_total``: a GET of file content carrying a
  Range header (``wrong_content_range``, ``wrong_total`` only when the answer would be a 206).
  ``wrong_content_range`` names the right length at offset 0; ``wrong_total`` the right
  start and end but a total one byte larger than the file.
- ``reset``, ``short``, ``stall``, ``trickle``, ``throttle``: a GET answered 2xx (any body, also
  JSON). ``flip``: same, and only if the absolute offset ``after_bytes`` lies in the range served.
- ``gzip``, ``chunked``: a GET answered 2xx. ``gzip`` sends the body (the range served, flip
  applied) gzip-compressed with ``Content-Encoding: gzip`` and the compressed Content-Length;
  ``chunked`` sends it with ``Transfer-Encoding: chunked`` and no Content-Length (a
  reset/short/stall then ends it before the last chunk). Body faults then apply to the bytes
  actually sent (after compression); framing bytes are not counted as body bytes.

A request answered by ``status``/``html``/``redirect`` gets no further faults (a preceding
``delay`` aside).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .replies import Request

KINDS = frozenset(
    {
        "status",
        "reset",
        "short",
        "flip",
        "ignore_range",
        "wrong_content_range",
        "wrong_total",
        "stall",
        "trickle",
        "delay",
        "throttle",
        "expire",
        "html",
        "gzip",
        "chunked",
        "redirect",
    }
)


@dataclass
class Fault:
    kind: str
    match: str = ""
    server: str | None = None
    method: str | None = None
    times: int | None = None
    after_bytes: int = 0
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    rate: int = 0
    location: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.server not in (None, "hub", "cdn"):
            raise ValueError(f"server must be 'hub', 'cdn' or None, not {self.server!r}")

    def matches(self, req: Request) -> bool:
        return (
            self.match in req.raw_path
            and (self.server is None or self.server == req.server)
            and (self.method is None or self.method.upper() == req.method)
        )


class FaultBook:
    """Hands out faults from a live list (tests may append or replace it at any time)."""

    def __init__(self, faults: Callable[[], list[Fault]]) -> None:
        self._faults = faults
        self._lock = threading.Lock()

    def take(
        self,
        req: Request,
        kinds: Collection[str],
        applies: Callable[[Fault], bool] | None = None,
    ) -> Fault | None:
        """First matching, not exhausted fault of one of `kinds`; consumes one use of it."""
        with self._lock:
            for fault in list(self._faults()):
                if fault.kind not in kinds or not fault.matches(req):
                    continue
                if fault.times is not None and fault.times <= 0:
                    continue
                if applies is not None and not applies(fault):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None
