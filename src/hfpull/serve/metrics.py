"""What the mirror did, for Prometheus (``GET /metrics``) and the status page.

One ``Metrics`` per app, with its own ``CollectorRegistry`` (several apps in one process,
as in tests, never share counters). An aiohttp middleware records every answer: its route
kind, status, ``X-Cache`` result and the body bytes actually sent (the send loops report
them with ``body_sent``; a plain answer's body is its length). The upstream side is an
``UpstreamMeter``: bytes and time to headers of API exchanges, bytes and time to first byte
of fills. Labels are closed sets (route kinds, status codes, error codes, cache results),
never a repo, a path, a header or a token.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from hfpull.blobstore import BlobStore
from hfpull.blobstore.objects import StoreUnavailable
from hfpull.serve.upstream_meter import UpstreamMeter

if TYPE_CHECKING:
    from hfpull.serve.fill import Fills

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE_REFRESH = 30.0  # seconds a store walk (size, blob count) is reused
RECENT_ERRORS = 20
ERROR_KINDS = 64  # distinct X-Error-Code labels kept; any further one counts as "Other"
LAST_USE_REPOS = 10_000
_BODY_SENT = "hfpull_body_sent"
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,39}")
_SECRET = re.compile(r"hf_[A-Za-z0-9_-]{6,}|(?i:bearer)\s+\S+")
CACHE_RESULTS = {"HIT": "hit", "MISS": "miss", "STALE": "stale"}


def route_kind(raw_path: str) -> str:
    """A closed set of route names for labels: never the repo or the file."""
    if raw_path == "/":
        return "status"
    if raw_path in ("/metrics", "/healthz"):
        return raw_path[1:]
    if raw_path.startswith("/api/"):
        if "/paths-info/" in raw_path:
            return "paths-info"
        return "tree" if "/tree/" in raw_path else "api"
    return "resolve" if "/resolve/" in raw_path else "other"


def repo_type_of(raw_path: str) -> str:
    head = raw_path.removeprefix("/api/").lstrip("/")
    for plural, kind in (("datasets/", "dataset"), ("spaces/", "space")):
        if head.startswith(plural):
            return kind
    return "model"


def body_sent(request: web.BaseRequest, response: web.StreamResponse, nbytes: int) -> None:
    """Called by the send loops: ``nbytes`` of ``response``'s body have gone out so far."""
    request[_BODY_SENT] = (response, nbytes)


def redact(text: str) -> str:
    """Defence in depth for texts shown on the status page: anything token-shaped goes."""
    return _SECRET.sub("[redacted]", text)


@dataclass(frozen=True)
class RecentError:
    time: float
    route: str
    status: int
    code: str
    message: str


@dataclass
class Totals:
    """Answers with an X-Cache result, and upstream bytes, over some span of time."""

    hit: int = 0
    miss: int = 0
    stale: int = 0
    hit_bytes: int = 0
    miss_bytes: int = 0
    stale_bytes: int = 0
    upstream_bytes: int = 0

    @property
    def answers(self) -> int:
        return self.hit + self.miss + self.stale

    @property
    def saved_bytes(self) -> int:
        """Bytes sent from the store (hits and stale answers) that upstream did not send."""
        return self.hit_bytes + self.stale_bytes

    def ratio(self) -> float | None:
        """Share of answers served from the store (HIT or STALE)."""
        return (self.hit + self.stale) / self.answers if self.answers else None

    def byte_ratio(self) -> float | None:
        sent = self.hit_bytes + self.miss_bytes + self.stale_bytes
        return self.saved_bytes / sent if sent else None

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Window:
    """Per-minute totals for the last day (a ring of at most 1440 buckets)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: deque[tuple[int, Totals]] = deque()
        self._lock = threading.Lock()

    def _bucket(self) -> Totals:
        minute = int(self._clock() // 60)
        if not self._buckets or self._buckets[-1][0] != minute:
            self._buckets.append((minute, Totals()))
            while self._buckets[0][0] <= minute - 1440:
                self._buckets.popleft()
        return self._buckets[-1][1]

    def answer(self, result: str, nbytes: int) -> None:
        with self._lock:
            bucket = self._bucket()
            setattr(bucket, result, getattr(bucket, result) + 1)
            setattr(bucket, f"{result}_bytes", getattr(bucket, f"{result}_bytes") + nbytes)

    def upstream(self, nbytes: int) -> None:
        with self._lock:
            self._bucket().upstream_bytes += nbytes

    def last(self, minutes: int) -> Totals:
        since = int(self._clock() // 60) - minutes
        total = Totals()
        with self._lock:
            for minute, bucket in self._buckets:
                if minute > since:
                    total.add(bucket)
        return total


class StoreFigures:
    """The store's size and blob count, from a walk reused for STORE_REFRESH seconds.
    While ``available()`` says the store is down, or a walk fails, the last figures stay."""

    def __init__(
        self,
        store: BlobStore,
        refresh: float = STORE_REFRESH,
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        self.refresh = refresh
        self.available = available
        self._lock = threading.Lock()
        self._at = -refresh
        self._figures = (0, 0)

    def get(self) -> tuple[int, int]:
        """(bytes, blobs); may walk the store, so call it off the event loop."""
        with self._lock:
            if time.monotonic() - self._at >= self.refresh and self.available():
                size = blobs = 0
                try:
                    for _key, nbytes in self.store.keys():  # noqa: SIM118 (a BlobStore)
                        size, blobs = size + nbytes, blobs + 1
                except StoreUnavailable:
                    return self._figures
                self._figures, self._at = (size, blobs), time.monotonic()
            return self._figures

    def last(self) -> tuple[int, int]:
        """The figures of the last walk, without walking (the store is down)."""
        return self._figures


class _LiveCollector(Collector):
    """Figures read when scraped: fills from the fill registry, the store from a walk."""

    def __init__(self, fills: Fills, store: StoreFigures) -> None:
        self.fills = fills
        self.store = store

    def describe(self) -> Iterator[Metric]:
        """The names, without reading anything (registering must not walk the store)."""
        yield GaugeMetricFamily("hfpull_store_up", "1 if the blob store answers", value=1)
        yield from self._families(0, 0, (0, 0))

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "hfpull_store_up", "1 if the blob store answered its last probe, else 0",
            value=1 if self.store.available() else 0,
        )  # fmt: skip
        yield from self._families(self.fills.active, self.fills.started, self.store.get())

    def _families(self, active: int, started: int, store: tuple[int, int]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "hfpull_fills_in_progress", "Blobs being fetched from upstream now",
            value=active,
        )  # fmt: skip
        yield CounterMetricFamily(
            "hfpull_fills_started", "Fills started (one upstream fetch of a blob each)",
            value=started,
        )  # fmt: skip
        size, blobs = store
        yield GaugeMetricFamily("hfpull_store_bytes", "Bytes of blobs in the store", value=size)
        yield GaugeMetricFamily("hfpull_store_blobs", "Blobs in the store", value=blobs)


class Metrics(UpstreamMeter):
    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.enabled = enabled
        self.started = clock()
        self.registry = CollectorRegistry(auto_describe=True)
        self.window = Window(clock)
        self.recent_errors: deque[RecentError] = deque(maxlen=RECENT_ERRORS)
        self.last_use: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.store: StoreFigures | None = None
        self._clock = clock
        self._error_kinds: set[str] = set()
        self._children: dict[tuple[object, ...], Any] = {}  # labels() costs ~1.5 µs a call
        r = self.registry
        self.requests = Counter(
            "hfpull_http_requests", "Answers by route kind and status", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self.body_bytes = Counter(
            "hfpull_http_response_body_bytes", "Body bytes sent to clients", ["route"], registry=r
        )
        self.cache_answers = Counter(
            "hfpull_cache_requests",
            "Answers carrying X-Cache, by result (hit, miss, stale)", ["route", "result"],
            registry=r,
        )  # fmt: skip
        self.cache_bytes = Counter(
            "hfpull_cache_bytes", "Body bytes of answers carrying X-Cache, by result",
            ["route", "result"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "hfpull_responses_in_flight", "Requests being answered (streams included)",
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "hfpull_errors",
            "Errors by kind: the X-Error-Code answered, StreamCut (a body cut short by the "
            "mirror), ClientDisconnected, InternalError", ["kind"], registry=r,
        )  # fmt: skip
        self.upstream_bytes = Counter(
            "hfpull_upstream_bytes", "Body bytes received from upstream (file: fills; api)",
            ["kind"], registry=r,
        )  # fmt: skip
        self.upstream_answers = Counter(
            "hfpull_upstream_api_requests", "Upstream API exchanges by status", ["status"],
            registry=r,
        )  # fmt: skip
        self.upstream_latency = Histogram(
            "hfpull_upstream_latency_seconds",
            "Upstream latency: api = time to headers of an API exchange; "
            "fill_first_byte = from a fill's start to its first byte", ["kind"], registry=r,
        )  # fmt: skip
        for label in ("file", "api"):
            self.upstream_bytes.labels(label)
        for label in ("api", "fill_first_byte"):
            self.upstream_latency.labels(label)

    def _child(self, metric: Counter, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (every label set here is bounded)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def watch(
        self, store: BlobStore, fills: Fills, available: Callable[[], bool] = lambda: True
    ) -> None:
        self.store = StoreFigures(store, available=available)
        self.registry.register(_LiveCollector(fills, self.store))

    def upstream_meter(self) -> UpstreamMeter | None:
        return self if self.enabled else None

    # -- the upstream side (called from worker threads) -------------------------------------

    def api_answer(self, status: int, seconds: float, nbytes: int) -> None:
        self.upstream_answers.labels(str(status)).inc()
        self.upstream_latency.labels("api").observe(seconds)
        self.upstream_bytes.labels("api").inc(nbytes)
        self.window.upstream(nbytes)

    def fill_bytes(self, nbytes: int) -> None:
        self.upstream_bytes.labels("file").inc(nbytes)
        self.window.upstream(nbytes)

    def fill_first_byte(self, seconds: float) -> None:
        self.upstream_latency.labels("fill_first_byte").observe(seconds)

    # -- the client side (on the event loop) -----------------------------------------------

    def middleware(self) -> Middleware:
        @web.middleware
        async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.in_flight.inc()
            try:
                response = await handler(request)
            except (ConnectionError, asyncio.CancelledError):
                self._record_gone(request)
                raise
            except web.HTTPException as exc:
                self.record(request, exc)
                raise
            except Exception:
                self._record_gone(request, error="InternalError")
                raise
            finally:
                self.in_flight.dec()
            self.record(request, response)
            return response

        return observe

    def record(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        raw_path = request.raw_path.split("?", 1)[0]
        route = route_kind(raw_path)
        sent, cut = self._body_of(request, response)
        self._child(self.requests, route, str(response.status)).inc()
        self._count_body(route, response, sent)
        code = response.headers.get("X-Error-Code")
        if code is not None or response.status >= 400:
            message = response.headers.get("X-Error-Message", "")
            self._error(route, response.status, code or f"HTTP{response.status}", message)
        elif cut:
            self._error(route, response.status, "StreamCut", "the body was cut short")
        elif response.status < 400:
            self._used(request, raw_path)

    def _record_gone(self, request: web.BaseRequest, error: str = "ClientDisconnected") -> None:
        """The handler raised: the client went away mid-answer, or a bug (500)."""
        route = route_kind(request.raw_path.split("?", 1)[0])
        status = "499" if error == "ClientDisconnected" else "500"  # 499 as in nginx
        self._child(self.requests, route, status).inc()
        sending = request.get(_BODY_SENT)
        if sending is not None:
            self._count_body(route, sending[0], sending[1])
        self.errors.labels(error).inc()
        if error != "ClientDisconnected":
            self.recent_errors.append(
                RecentError(self._clock(), route, 500, error, "the request failed")
            )

    def _body_of(self, request: web.BaseRequest, response: web.StreamResponse) -> tuple[int, bool]:
        """Body bytes sent and whether the body was cut short of its Content-Length."""
        sending = request.get(_BODY_SENT)
        if sending is not None and sending[0] is response:
            expected = response.content_length
            return sending[1], expected is not None and sending[1] < expected
        if request.method == "HEAD" or not isinstance(response, web.Response):
            return 0, False
        body = response.body
        return (len(body) if isinstance(body, bytes | bytearray) else 0), False

    def _count_body(self, route: str, response: web.StreamResponse, sent: int) -> None:
        self._child(self.body_bytes, route).inc(sent)
        result = CACHE_RESULTS.get(response.headers.get("X-Cache", ""))
        if result is not None:
            self._child(self.cache_answers, route, result).inc()
            self._child(self.cache_bytes, route, result).inc(sent)
            self.window.answer(result, sent)

    def _error(self, route: str, status: int, code: str, message: str) -> None:
        kind = self._error_kind(code)
        self.errors.labels(kind).inc()
        self.recent_errors.append(RecentError(self._clock(), route, status, kind, redact(message)))

    def _error_kind(self, code: str) -> str:
        """X-Error-Code as a label; upstream's codes pass through, so the set is capped."""
        if not _ERROR_CODE.fullmatch(code):
            return "Other"
        if code not in self._error_kinds:
            if len(self._error_kinds) >= ERROR_KINDS:
                return "Other"
            self._error_kinds.add(code)
        return code

    def _used(self, request: web.BaseRequest, raw_path: str) -> None:
        target = request.get("hfpull_target")
        if not target or not target.get("repo"):
            return
        key = (repo_type_of(raw_path), str(target["repo"]))
        self.last_use[key] = self._clock()
        self.last_use.move_to_end(key)
        while len(self.last_use) > LAST_USE_REPOS:
            self.last_use.popitem(last=False)


async def metrics_answer(
    request: web.Request, metrics: Metrics, run: Callable[..., Awaitable[bytes]]
) -> web.Response:
    """``GET /metrics``: the text format Prometheus asked for (OpenMetrics if it says so).
    ``run`` runs the encoder off the loop (it may walk the store)."""
    if not metrics.enabled:
        return _json_error(404, "EntryNotFound", "metrics are off (--no-metrics)")
    if request.method not in ("GET", "HEAD"):
        return _json_error(405, "MethodNotAllowed", f"{request.method} is not served")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = await run(encoder, metrics.registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )  # fmt: skip
