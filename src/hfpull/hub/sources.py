"""Ordered download sources (mirrors first, then the origin), their health, and retry timing.

The retry ladder (``next_step``) is one pure function for the API client and the blob fetcher:
3 attempts per mirror and ``max_retries + 1`` on the last source; a TLS error or a definitive
answer (not found, gated...) moves on to the next source at once; an unreachable source is
dropped for the run unless it is the last; anything else is retried after a backoff that
honours Retry-After. ``SourcePool.settle`` applies a step to the pool.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from hfpull.errors import NetworkError
from hfpull.hub.http import host_of, origin
from hfpull.settings import Settings


@dataclass(eq=False)
class Source:
    base_url: str
    is_origin: bool
    consecutive_failures: int = 0
    dropped: bool = False
    honours_ranges: bool = True

    @property
    def host(self) -> str:
        return host_of(self.base_url)

    @property
    def origin(self) -> tuple[str, str, int]:
        return origin(self.base_url)


@dataclass
class SourcePool:
    """Thread-safe list of sources; one that keeps failing is dropped for the rest of the run."""

    sources: list[Source]
    drop_after: int = 8
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> SourcePool:
        urls = settings.sources
        return cls(
            [Source(url, is_origin=(url == settings.endpoint.rstrip("/"))) for url in urls],
            drop_after=settings.source_drop_after,
        )

    def active(self) -> list[Source]:
        with self._lock:
            return [s for s in self.sources if not s.dropped]

    def succeeded(self, source: Source) -> None:
        with self._lock:
            source.consecutive_failures = 0

    def failed(self, source: Source) -> None:
        with self._lock:
            source.consecutive_failures += 1
            if source.consecutive_failures >= self.drop_after:
                source.dropped = True

    def unreachable(self, source: Source) -> bool:
        """Connection refused / unknown host: drop it now unless it is the last source left.
        Returns True when the source was dropped."""
        with self._lock:
            others = [s for s in self.sources if s is not source and not s.dropped]
            if others:
                source.dropped = True
            return bool(others)

    def settle(
        self,
        source: Source,
        failure: Failure,
        failures: int,
        *,
        is_last: bool,
        policy: RetryPolicy,
        quick: bool = False,
    ) -> Retry | None:
        """Follow :func:`next_step` for ``source`` after its ``failures``-th failure in a row:
        a Retry means wait ``delay`` and try it again; None means leave it (after counting
        the failure or dropping the source when the step says so)."""
        step = next_step(failure, failures, is_last=is_last, policy=policy, quick=quick)
        if step is Leave.DROP:
            if self.unreachable(source):
                return None
            # Every other source was dropped meanwhile: keep retrying this one.
            transient = Failure(Outcome.TRANSIENT, failure.retry_after)
            step = next_step(transient, failures, is_last=is_last, policy=policy, quick=quick)
        if step is Leave.FAILED:
            self.failed(source)
        return step if isinstance(step, Retry) else None

    def describe(self) -> str:
        return ", ".join(s.host for s in self.sources)

    def exhausted_error(self, what: str, last_problem: str | None) -> NetworkError:
        detail = f": {last_problem}" if last_problem else ""
        return NetworkError(
            f"could not fetch {what} from any source ({self.describe()}){detail}",
            hint="check the network, the endpoint (--endpoint/HF_ENDPOINT) and --mirror URLs; "
            "run the same command again to resume",
        )


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max,
            retry_after_max=settings.retry_after_max,
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins when it is longer."""
        backoff = min(self.backoff_max, self.backoff_base * 2.0 ** max(0, attempt - 1))
        backoff *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
        if retry_after is not None:
            return float(min(self.retry_after_max, max(backoff, retry_after)))
        return float(backoff)


class Outcome(Enum):
    """How one attempt on a source failed, as far as retrying goes."""

    TRANSIENT = "transient"  # timeout, reset, 5xx/429, a response that fails its checks
    ANSWER = "answer"  # a definitive answer (not found, gated...): another source may differ
    TLS = "tls"  # a certificate error: retrying cannot fix it
    UNREACHABLE = "unreachable"  # refused, unknown host: no connection at all


@dataclass(frozen=True)
class Failure:
    outcome: Outcome
    retry_after: float | None = None  # the server's Retry-After, in seconds


@dataclass(frozen=True)
class Retry:
    delay: float  # seconds to wait before the next attempt on the same source


class Leave(Enum):
    """Stop using a source for this request; after the last source the caller gives up."""

    NEXT = "next"  # move on
    FAILED = "failed"  # move on, counting it against the source (SourcePool.failed)
    DROP = "drop"  # move on, dropping the source for the run (SourcePool.unreachable)


def attempts_on(is_last: bool, policy: RetryPolicy, quick: bool = False) -> int:
    """Attempts one request gets on one source: a mirror gives way to the next source soon."""
    if quick:
        return 1
    return policy.max_retries + 1 if is_last else 3


def next_step(
    failure: Failure, failures: int, *, is_last: bool, policy: RetryPolicy, quick: bool = False
) -> Retry | Leave:
    """The retry ladder: what to do after the ``failures``-th failure in a row on one source
    (``is_last``: no source comes after it in this request)."""
    if failure.outcome in (Outcome.ANSWER, Outcome.TLS):
        return Leave.NEXT
    if failure.outcome is Outcome.UNREACHABLE and not is_last:
        return Leave.DROP
    if failures >= attempts_on(is_last, policy, quick):
        return Leave.FAILED
    return Retry(policy.delay(failures, failure.retry_after))
