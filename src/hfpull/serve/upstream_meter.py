"""What the mirror's traffic to its upstream costs: API answers (bytes, time to headers) and
fills (bytes, time to the first byte).

``Upstream`` reports to an ``UpstreamMeter``; the default one does nothing, so the upstream
code needs no metrics library. API exchanges are seen through a requests response hook on
the sessions the upstream uses: inside ``meter.api_call()`` every response the thread gets
(redirect hops, tree pages, retries) is collected, and when the call ends each one's bytes
read off the wire (``raw.tell()``, so a body cut short counts what arrived) and time to
headers (``elapsed``) are reported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests

from hfpull.events import ProgressCallback, ProgressEvent, ignore
from hfpull.hub.http import thread_session
from hfpull.models import RemoteFile

_collecting = threading.local()


class UpstreamMeter:
    """The no-op meter; ``serve.metrics`` subclasses it."""

    def api_answer(self, status: int, seconds: float, nbytes: int) -> None:
        """One upstream API exchange ended: its status, time to headers, body bytes."""

    def fill_bytes(self, nbytes: int) -> None:
        """Bytes of a blob arrived from upstream (a fill that later fails counts too)."""

    def fill_first_byte(self, seconds: float) -> None:
        """A fill's first byte arrived this long after it started."""

    @contextmanager
    def api_call(self) -> Iterator[None]:
        """Report every upstream response this thread gets inside the block."""
        seen: list[tuple[int, float, Any]] = []  # status, time to headers, raw response
        outer = getattr(_collecting, "responses", None)
        _collecting.responses = seen
        try:
            yield
        finally:
            _collecting.responses = outer
            for status, seconds, raw in seen:
                self.api_answer(status, seconds, _wire_bytes(raw))

    def fill_events(self, file: RemoteFile) -> ProgressCallback:
        """The engine's event callback for one fill: counts bytes, times the first one."""
        if type(self).fill_bytes is UpstreamMeter.fill_bytes:
            return ignore
        started = time.monotonic()
        first = True

        def on_event(event: ProgressEvent) -> None:
            nonlocal first
            if event.kind != "advance":
                return
            if first:
                first = False
                self.fill_first_byte(time.monotonic() - started)
            self.fill_bytes(event.nbytes)

        return on_event


def metered_session() -> requests.Session:
    """The thread's upstream session, with the hook that collects responses for api_call."""
    session = thread_session()
    hooks: list[Callable[..., Any]] = session.hooks["response"]
    if _collect not in hooks:
        hooks.append(_collect)
    return session


def _collect(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    seen: list[tuple[int, float, Any]] | None = getattr(_collecting, "responses", None)
    if seen is not None:
        seen.append((response.status_code, response.elapsed.total_seconds(), response.raw))


def _wire_bytes(raw: Any) -> int:
    """Body bytes read off the wire so far (urllib3 counts them before decoding)."""
    tell = getattr(raw, "tell", None)
    try:
        return int(tell()) if tell is not None else 0
    except (OSError, ValueError):
        return 0
