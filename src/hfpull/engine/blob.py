"""Fetch one blob into a partial: Range requests over the sources, retries, hash as bytes land.

Every response is checked before a byte of it is written: status, Content-Range (start, end
and total), Content-Length and Content-Encoding. A 200 to a Range request that does not start
at 0 means the source ignores ranges. The blob's hash is computed over the contiguous prefix
as it grows, so it is ready when the last byte lands; ranges that finish out of order are read
back from the page cache when the prefix reaches them.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
import urllib3.exceptions

from hfpull.engine.budget import MAX_CONNECTIONS, ConnectionBudget, Slot
from hfpull.engine.partial import PartialFile
from hfpull.engine.prefix_hash import PrefixHasher
from hfpull.engine.ranges import Piece, RangeBoard
from hfpull.errors import HfpullError, IntegrityError
from hfpull.events import ProgressCallback, ProgressEvent
from hfpull.fs import disk_errors
from hfpull.hashing import READ_CHUNK
from hfpull.hub.http import (
    BodyReader,
    describe_transport_error,
    error_from_response,
    is_unreachable,
    origin,
    parse_content_range,
    parse_retry_after,
    request_following_redirects,
    tls_error,
)
from hfpull.hub.sources import Failure, Outcome, RetryPolicy, Source, SourcePool
from hfpull.models import RemoteFile, RepoRef
from hfpull.settings import Settings

_TRANSPORT_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


_PUSHBACK = frozenset({429, 503})  # the server asks for less: the adaptive count backs off
RECRUIT_POLL = 0.05  # seconds between a big file's looks for a free connection


class Cancelled(Exception):
    """The run is stopping (Ctrl-C, or another file hit a fatal error)."""


class _Transient(Exception):
    def __init__(
        self, problem: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(problem)
        self.retry_after = retry_after
        self.status = status


class _Refused(Exception):
    """A definitive answer from this source (not found, gated...): try the next source."""

    def __init__(self, error: HfpullError) -> None:
        super().__init__(error.message)
        self.error = error


class _Expired(Exception):
    """The cached CDN URL stopped working (signature expired): resolve it again."""


class _RangeIgnored(Exception):
    pass


class NoRangeSupport(Exception):
    """No remaining source honours Range for a request that does not start at byte 0."""


@dataclass
class FetchContext:
    """What every transfer of one run shares."""

    settings: Settings
    pool: SourcePool
    policy: RetryPolicy
    repo: RepoRef
    commit: str
    session: Callable[[], requests.Session]
    cancel: threading.Event
    emit: ProgressCallback
    _urls: dict[tuple[str, str], str] = field(default_factory=dict)
    _urls_lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve_url(self, source: Source, file: RemoteFile) -> str:
        return (
            f"{source.base_url}/{self.repo.url_prefix}{self.repo.repo_id}"
            f"/resolve/{self.commit}/{quote(file.path)}"
        )

    def cached_url(self, source: Source, file: RemoteFile) -> str | None:
        with self._urls_lock:
            return self._urls.get((source.base_url, file.etag))

    def remember_url(self, source: Source, file: RemoteFile, url: str | None) -> None:
        with self._urls_lock:
            if url is None:
                self._urls.pop((source.base_url, file.etag), None)
            else:
                self._urls[(source.base_url, file.etag)] = url


class BlobTransfer:
    """Download ``file`` into ``partial`` (which may already hold some ranges) and verify it.

    Its connections take slots from ``budget`` (one budget per run, shared by all files); a
    file that can be split gets more connections while the budget has room and its
    :class:`RangeBoard` has work for them."""

    def __init__(
        self,
        ctx: FetchContext,
        file: RemoteFile,
        partial: PartialFile,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self.ctx = ctx
        self.file = file
        self.partial = partial
        self.budget = budget if budget is not None else ConnectionBudget.from_settings(ctx.settings)
        self.abort = threading.Event()
        self.sources_used: list[str] = []
        self.bytes_received = 0
        self.peak_connections = 0  # most connections this file had open at once
        self._avoid: set[str] = set()
        self._hash = PrefixHasher(file, partial)
        self._count_lock = threading.Lock()
        self._open = 0

    # -- orchestration ----------------------------------------------------------------

    def run(self) -> None:
        """Fetch what is missing and verify; one refetch from another source on mismatch."""
        for attempt in (1, 2):
            self._fetch_missing()
            digest = self._hash.finish()
            if digest == self.file.etag:
                return
            hosts = ", ".join(dict.fromkeys(self.sources_used)) or "a previous run"
            self.partial.reset()  # corrupt bytes are never resumed from
            self._hash = PrefixHasher(self.file, self.partial)
            if attempt == 2:
                self.partial.discard()
                raise IntegrityError(
                    f"{self.file.path}: {self.file.hash_kind} mismatch from {hosts}: "
                    f"expected {self.file.etag}, got {digest}",
                    hint="the source sent wrong bytes twice; nothing was kept",
                )
            self._distrust(set(self.sources_used))
            self.ctx.emit(
                ProgressEvent(
                    "retry", self.file.path, message=f"hash mismatch from {hosts}; refetching"
                )
            )
            self.sources_used.clear()

    def _fetch_missing(self) -> None:
        missing = self.partial.snapshot_done().missing(self.file.size)
        if not missing:
            return
        settings = self.ctx.settings
        size = RangeBoard.piece_size_for(
            sum(e - s for s, e in missing),
            self.budget.limit,
            settings.min_split,
            settings.segment_size,
        )
        board = RangeBoard(missing, size, settings.min_split)
        try:
            self._fetch_board(board)
        except NoRangeSupport:
            # Every source ignores Range: one request from the first gap, skipping ahead.
            first_gap = self.partial.snapshot_done().missing(self.file.size)[0][0]
            self.ctx.emit(
                ProgressEvent("retry", self.file.path, message="source ignores Range; one stream")
            )
            single = RangeBoard([(first_gap, self.file.size)], self.file.size, self.file.size)
            self._with_primary(lambda slot: self._connection(single, slot, allow_skip=True))

    def _with_primary(self, work: Callable[[Slot], None]) -> None:
        """Run ``work`` on this file's primary connection (waits for the budget)."""
        slot = self.budget.acquire(self.ctx.cancel)
        if slot is None:
            raise Cancelled
        work(slot)

    def _fetch_board(self, board: RangeBoard) -> None:
        if not board.can_ever_split():  # one piece too small to split: one connection
            self._with_primary(lambda slot: self._connection(board, slot))
            return
        with ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="hfpull-conn") as pool:
            futures: set[Future[None]] = set()
            try:
                self._with_primary(
                    lambda slot: futures.add(pool.submit(self._connection, board, slot))
                )
                self._recruit(board, pool, futures)
            except BaseException as first:
                self.abort.set()  # the file cannot complete: stop its other connections
                wait(futures)
                self.abort.clear()
                errors = [e for f in futures if (e := f.exception()) is not None]
                real = [e for e in errors if not isinstance(e, Cancelled)]
                raise (real[0] if real else first) from None

    def _recruit(
        self, board: RangeBoard, pool: ThreadPoolExecutor, futures: set[Future[None]]
    ) -> None:
        """Give the file more connections while the budget has room and the board has work
        (an unstarted piece, or one big enough to split); raise the first failure."""
        pending = set(futures)
        while pending:
            while not self.abort.is_set() and board.has_work():
                slot = self.budget.try_extra()
                if slot is None:
                    break
                piece = board.take()
                if piece is None:
                    self.budget.release(slot)
                    break
                future = pool.submit(self._connection, board, slot, piece)
                futures.add(future)
                pending.add(future)
            done, pending = wait(pending, timeout=RECRUIT_POLL, return_when=FIRST_EXCEPTION)
            for future in done:
                error = future.exception()
                if error is not None:
                    raise error

    def _connection(
        self,
        board: RangeBoard,
        slot: Slot,
        piece: Piece | None = None,
        allow_skip: bool = False,
    ) -> None:
        """One connection: fetch pieces from ``board`` until it has none left for us."""
        with self._count_lock:
            self._open += 1
            self.peak_connections = max(self.peak_connections, self._open)
        try:
            piece = piece or board.take()
            while piece is not None:
                try:
                    shed = self.fetch_range(board, piece, slot, allow_skip)
                finally:
                    board.finished(piece)
                if shed or (slot.extra and self.budget.shed(slot)):
                    return
                piece = board.take()
        finally:
            self.budget.release(slot)
            with self._count_lock:
                self._open -= 1

    # -- one range over the sources ---------------------------------------------------

    def fetch_range(
        self, board: RangeBoard, piece: Piece, slot: Slot, allow_skip: bool = False
    ) -> bool:
        """Fetch ``piece`` up to its (movable) end over the sources with the retry ladder.
        Returns True when the connection left early because the budget shrank (``slot`` is
        released then, and the rest of the piece goes back to the board)."""
        last_error: HfpullError | None = None
        last_problem: str | None = None
        skipped_for_ranges = False
        sources = self._ordered_sources()
        for index, source in enumerate(sources):
            if not source.honours_ranges and piece.pos > 0 and not allow_skip:
                skipped_for_ranges = True
                continue
            is_last = index == len(sources) - 1
            failures = expirations = 0
            while True:
                self._check_cancel()
                before = piece.pos
                try:
                    shed = self._attempt(source, board, piece, slot, allow_skip)
                    self.ctx.pool.succeeded(source)
                    return shed
                except _Expired:
                    expirations = 0 if piece.pos > before else expirations + 1
                    if expirations <= 3:
                        continue
                    failure = Failure(Outcome.TRANSIENT)
                    last_problem = f"{source.host}: the CDN keeps refusing fresh URLs"
                except _Refused as refused:
                    last_error, failure = refused.error, Failure(Outcome.ANSWER)
                except _RangeIgnored:
                    source.honours_ranges = False
                    skipped_for_ranges = True
                    break
                except _Transient as exc:
                    if exc.status in _PUSHBACK:
                        self.budget.congested()
                    failure = Failure(Outcome.TRANSIENT, exc.retry_after)
                    last_problem = f"{source.host}: {exc}"
                except _TRANSPORT_ERRORS as exc:
                    certificate = tls_error(exc, source.host)
                    if certificate is not None:
                        last_error, failure = certificate, Failure(Outcome.TLS)
                    else:
                        if _is_reset(exc):
                            self.budget.congested()
                        unreachable = is_unreachable(exc)
                        failure = Failure(Outcome.UNREACHABLE if unreachable else Outcome.TRANSIENT)
                        last_problem = f"{source.host}: {describe_transport_error(exc)}"
                # Bytes landed since the last failure: this source is working, count afresh.
                failures = 1 if piece.pos > before else failures + 1
                retry = self.ctx.pool.settle(
                    source, failure, failures, is_last=is_last, policy=self.ctx.policy
                )
                if retry is None:
                    break
                self.ctx.emit(
                    ProgressEvent(
                        "retry",
                        self.file.path,
                        message=f"{last_problem}; retry in {retry.delay:.0f}s",
                    )
                )
                if self._sleep(retry.delay):
                    self._check_cancel()
        if skipped_for_ranges and piece.pos > 0 and not allow_skip:
            raise NoRangeSupport
        if last_error is not None:
            raise last_error
        raise self.ctx.pool.exhausted_error(self.file.path, last_problem)

    def _attempt(
        self, source: Source, board: RangeBoard, piece: Piece, slot: Slot, allow_skip: bool
    ) -> bool:
        file = self.file
        cached = self.ctx.cached_url(source, file)
        resolve_url = self.ctx.resolve_url(source, file)
        start, end = piece.pos, board.end_of(piece)  # the end may move down while we stream
        response = request_following_redirects(
            self.ctx.session(),
            "GET",
            cached or resolve_url,
            token=self.ctx.settings.token,
            trusted_origin=source.origin,
            headers={"Range": f"bytes={start}-{end - 1}"},
            stream=True,
            timeout=(self.ctx.settings.connect_timeout, self.ctx.settings.read_timeout),
        )
        with response:
            status = response.status_code
            off_source = origin(response.url) != source.origin
            if status in (401, 403, 404, 410) and (cached or off_source):
                self.ctx.remember_url(source, file, None)  # expired signed URL: resolve again
                raise _Expired
            if status >= 400 and status != 416:
                error = error_from_response(response, f"{self.ctx.repo.repo_id}/{file.path}")
                if error is None:
                    raise _Transient(f"HTTP {status}", parse_retry_after(response), status)
                raise _Refused(error)
            if response.url != resolve_url:
                self.ctx.remember_url(source, file, response.url)
            encoding = response.headers.get("Content-Encoding", "identity").lower()
            if encoding not in ("identity", ""):
                raise _Transient(f"compressed body ({encoding}) refused")
            skip = self._check_status(response, start, end, allow_skip)
            self.sources_used.append(source.host)
            return self._stream(response, board, piece, slot, skip)

    def _check_status(
        self, response: requests.Response, pos: int, end: int, allow_skip: bool
    ) -> int:
        """Validate a response before using it; return how many leading bytes to discard."""
        status = response.status_code
        length = response.headers.get("Content-Length")
        if status == 206:
            value = response.headers.get("Content-Range")
            crange = parse_content_range(value)
            if crange is None or (crange.start, crange.end + 1, crange.total) != (
                pos,
                end,
                self.file.size,
            ):
                raise _Transient(f"wrong Content-Range {value!r} for bytes {pos}-{end - 1}")
            expected = end - pos
            skip = 0
        elif status == 200:
            if pos != 0 and not allow_skip:
                raise _RangeIgnored
            expected, skip = self.file.size, pos
        else:
            raise _Transient(f"unexpected HTTP {status}")
        if length is not None and length.isdigit() and int(length) != expected:
            raise _Transient(f"body of {length} bytes where {expected} were expected")
        return skip

    def _stream(
        self, response: requests.Response, board: RangeBoard, piece: Piece, slot: Slot, skip: int
    ) -> bool:
        """Write the body at ``piece.pos`` until the piece's end (which a split may move
        down meanwhile: every chunk is reserved on the board before it is written). Reads
        land in one buffer per request: no allocation per chunk."""
        body = BodyReader(response)
        buffer = memoryview(bytearray(min(READ_CHUNK, skip + piece.end - piece.pos)))
        settings = self.ctx.settings
        budget = self.budget
        window_start, window_bytes = time.monotonic(), 0
        while piece.pos < piece.end:  # end only moves down, and never below pos
            self._check_cancel()
            if slot.extra and budget.shed_now and budget.shed(slot):
                return True
            count = body.readinto(buffer[:skip] if skip else buffer)
            if not count:
                raise _Transient("connection closed before the end of the body")
            window_bytes += count
            data = buffer[:count]
            if skip:
                skip -= count
                if skip < 0:
                    data, skip = data[count + skip :], 0
                else:
                    continue
            offset = piece.pos
            allowed = board.reserve(piece, len(data))
            if allowed:
                self._write(offset, data if allowed == len(data) else data[:allowed])
                slot.received += allowed
            now = time.monotonic()
            if now - window_start >= settings.stall_window:
                if window_bytes < settings.min_speed * (now - window_start):
                    raise _Transient("stalled (too slow)")
                window_start, window_bytes = now, 0
        body.finish()  # read to its end (unless a split cut the piece): keep the connection
        return False

    # -- bytes, hash, helpers ----------------------------------------------------------

    def _write(self, offset: int, data: memoryview) -> None:
        with disk_errors(
            f"could not write {self.file.path}",
            hint="free some space and run the same command again; the partial is kept",
        ):
            self.partial.write(offset, data)
        self.partial.mark_done(offset, offset + len(data))
        self.partial.flush_if_due()
        with self._count_lock:
            self.bytes_received += len(data)
        self._hash.landed(offset, data)
        self.ctx.emit(ProgressEvent("advance", self.file.path, nbytes=len(data)))

    def _distrust(self, hosts: set[str]) -> None:
        """Sources that sent bad bytes go last; a mirror among them is dropped for the run."""
        self._avoid |= hosts
        active = self.ctx.pool.active()
        for source in active:
            if source.host in hosts and not source.is_origin and len(self.ctx.pool.active()) > 1:
                source.dropped = True

    def _ordered_sources(self) -> list[Source]:
        active = self.ctx.pool.active()
        return sorted(active, key=lambda s: s.host in self._avoid)

    def _check_cancel(self) -> None:
        if self.ctx.cancel.is_set() or self.abort.is_set():
            raise Cancelled

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early when the run is cancelled; True when woken by a cancel."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.ctx.cancel.wait(min(0.2, deadline - time.monotonic())) or self.abort.is_set():
                return True
        return False


def _is_reset(exc: BaseException) -> bool:
    """A connection reset by the peer, however deep requests/urllib3 wrapped it."""
    todo: list[BaseException] = [exc]
    for _ in range(16):  # wrappers nest a few levels deep; a cycle must not loop forever
        if not todo:
            return False
        error = todo.pop()
        if isinstance(error, ConnectionResetError):
            return True
        todo += [a for a in error.args if isinstance(a, BaseException)]
        todo += [e for e in (error.__cause__, error.__context__) if e is not None]
    return False
