"""Request log shared by both listeners, with exact per-response body byte counts.

A record is appended before the response headers are written, so a client never sees a
response whose record is missing. Its ``body_bytes`` is filled in when the response ends.
To close the race between the server's last write and a test reading the counters, a response
is "busy" while writing its headers and from the start of its final write until it is closed;
readers (`settle`) wait for busy responses, which only ever takes microseconds.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # raw path including the query, as received
    headers: dict[str, str]  # lower-case keys
    status: int
    body_bytes: int = 0
    fault: str | None = None  # comma-separated fault kinds applied to this request


class Exchange:
    """Live accounting for one response."""

    def __init__(self, log: RequestLog, record: RequestRecord, index: int, generation: int):
        self._log = log
        self.record = record
        self.index = index
        self.generation = generation
        self.sent = 0
        self.busy = True
        self.closed = False

    def add(self, n: int) -> None:
        with self._log.cond:
            self.sent += n

    def idle(self) -> None:
        self._log.set_busy(self, False)

    def begin_final(self) -> None:
        self._log.set_busy(self, True)

    def close(self) -> None:
        self._log.close(self)


class RequestLog:
    SETTLE_TIMEOUT = 1.0

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.records: list[RequestRecord] = []
        self._live: list[Exchange] = []
        self._busy = 0
        self._generation = 0

    def open(self, record: RequestRecord) -> Exchange:
        with self.cond:
            ex = Exchange(self, record, len(self.records), self._generation)
            self.records.append(record)
            self._live.append(ex)
            self._busy += 1
            return ex

    def set_busy(self, ex: Exchange, busy: bool) -> None:
        with self.cond:
            if ex.closed or ex.busy == busy:
                return
            ex.busy = busy
            self._busy += 1 if busy else -1
            self.cond.notify_all()

    def close(self, ex: Exchange) -> None:
        with self.cond:
            if ex.closed:
                return
            self.set_busy(ex, False)
            ex.closed = True
            if ex.generation == self._generation:
                self.records[ex.index] = dataclasses.replace(ex.record, body_bytes=ex.sent)

    def settle(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self._busy == 0, timeout=self.SETTLE_TIMEOUT)

    def bytes_sent(self, path_contains: str | None = None) -> int:
        """Body bytes of 2xx responses: redirect and error bodies are left out on purpose."""
        self.settle()
        with self.cond:
            return sum(
                ex.sent
                for ex in self._live
                if 200 <= ex.record.status < 300
                and (path_contains is None or path_contains in ex.record.path)
            )

    def reset(self) -> None:
        with self.cond:
            self.records.clear()
            self._live.clear()
            self._generation += 1
