"""Whether the shared object store answers, for /healthz, the status page and /metrics.

Those must answer when the store is down or hangs, so they never wait on it: one cheap probe
(a HEAD) runs in a thread at most every REFRESH seconds, and an answer not back within
PROBE_TIMEOUT counts as down. Between probes the last answer is reused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hfpull.blobstore.objects import ObjectStore, StoreUnavailable

REFRESH = 2.0
PROBE_TIMEOUT = 1.0
PROBE_NAME = "meta/probe"  # never written: a HEAD of it answers None when the store is up


class StoreState:
    def __init__(self, objects: ObjectStore | None) -> None:
        self.objects = objects
        self.ok = True  # the last answer (True on local disk)
        self._at = -REFRESH
        self._probe: asyncio.Future[bool] | None = None

    async def up(self, blocking: Callable[..., Awaitable[Any]]) -> bool:
        """The store's state, probed if the last answer is older than REFRESH."""
        if self.objects is None or time.monotonic() - self._at < REFRESH:
            return self.ok
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(blocking(self._check))
        try:
            self.ok = await asyncio.wait_for(asyncio.shield(self._probe), PROBE_TIMEOUT)
        except TimeoutError:
            self.ok = False
        self._at = time.monotonic()
        return self.ok

    def failed(self) -> None:
        """A request just saw the store fail: say so until the next probe."""
        if self.objects is not None:
            self.ok, self._at = False, time.monotonic()

    def _check(self) -> bool:
        assert self.objects is not None
        try:
            self.objects.head(PROBE_NAME)
        except StoreUnavailable:
            return False
        return True
