"""A small HTTP/1.1 client on asyncio for the benchmarks: many clients, one process, one loop.

Bodies are received with a ``BufferedProtocol`` straight into one preallocated buffer per
connection (one kernel-to-user copy, no per-read allocation), counted and optionally hashed.
Every response records, on ``time.monotonic()``:

- ``started``: when the request started; before connect() when it needed a new connection;
- ``headers_at``: when the blank line ending the response headers arrived;
- ``first_byte_at``: when the first body byte arrived (None for a response without a body);
- ``ended_at``: when the last body byte arrived.

Redirects are followed (a new connection per origin, reused while it stays open) and the
times are those of the whole chain: ``started`` is the first request's. Content-Length and
chunked bodies are understood; anything else (no length, no chunking) reads until close.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

BUFFER = 1 << 20
MAX_HEAD = 64 << 10
REDIRECTS = (301, 302, 303, 307, 308)


class HttpError(Exception):
    """The server broke the protocol or the connection died mid-response."""


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    headers: dict[str, str]  # lower-case names
    nbytes: int  # body bytes received (after de-chunking)
    sha256: str | None  # of the body bytes received (all of them only when complete)
    started: float
    headers_at: float
    first_byte_at: float | None
    ended_at: float
    redirects: int
    complete: bool  # False when cut short on purpose (first_byte_only)

    @property
    def ttfb(self) -> float:
        """Seconds from the start of the request to the first body byte (or the headers)."""
        return (self.first_byte_at or self.headers_at) - self.started

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started


class _Exchange:
    """Parses one response from the bytes the protocol hands over."""

    def __init__(self, method: str, hash_body: bool, first_byte_only: bool, done: Any) -> None:
        self.method = method
        self.hasher = hashlib.sha256() if hash_body else None
        self.first_byte_only = first_byte_only
        self.done: asyncio.Future[None] = done
        self.head = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_at = 0.0
        self.first_byte_at: float | None = None
        self.ended_at = 0.0
        self.length: int | None = None  # None: until close (or chunked)
        self.chunked = False
        self.chunk_left = 0  # chunked: body bytes left in the current chunk
        self.frame = bytearray()  # chunked: framing bytes not parsed yet
        self.expect_crlf = False  # chunked: a chunk's data ended, its CRLF comes next
        self.nbytes = 0
        self.keep_alive = True
        self.finished = False
        self.cut = False
        self.plain = False  # a Content-Length body under way, only counted: the fast path

    def feed(self, data: memoryview, now: float) -> None:
        if self.finished:
            raise HttpError("bytes after the end of a response")
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    raise HttpError("response headers too long")
                return
            self._parse_head(bytes(self.head[:end]), now)
            rest = memoryview(bytes(self.head[end + 4 :]))
            self.head = bytearray()
            if self.length == 0 and not self.chunked:
                self._finish(now)
                if len(rest):
                    raise HttpError("body bytes after a response without a body")
                return
            if len(rest):
                self._body(rest, now)
            return
        self._body(data, now)

    def _parse_head(self, head: bytes, now: float) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                self.headers[name.strip().lower()] = value.strip()
        self.headers_at = now
        self.keep_alive = self.headers.get("connection", "").lower() != "close"
        if self.method == "HEAD" or self.status in (204, 304) or self.status < 200:
            self.length = 0
        elif "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.chunked = True
        elif "content-length" in self.headers:
            self.length = int(self.headers["content-length"])
        else:
            self.keep_alive = False  # read until close

    def _body(self, data: memoryview, now: float) -> None:
        if self.chunked:
            self._chunked(data, now)
            return
        if self.length is not None and self.nbytes + len(data) > self.length:
            raise HttpError("more body bytes than Content-Length")
        self._count(data, now)
        if self.length is not None and self.nbytes == self.length:
            self._finish(now)

    def _count(self, data: memoryview, now: float) -> None:
        if not len(data):
            return
        if self.first_byte_at is None:
            self.first_byte_at = now
        self.nbytes += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        if self.first_byte_only:
            self.cut = True
            self._finish(now)
        elif self.hasher is None and not self.chunked and self.length is not None:
            self.plain = True

    def _chunked(self, data: memoryview, now: float) -> None:
        """De-chunk: chunk data is counted in place; framing lines go through ``frame``."""
        buf = data
        while len(buf) and not self.finished:
            if self.chunk_left:
                take = buf[: self.chunk_left]
                self.chunk_left -= len(take)
                buf = buf[len(take) :]
                self._count(take, now)
                self.expect_crlf = not self.chunk_left
                continue
            old = len(self.frame)
            self.frame += buf[:256]
            text, pos = self.frame, 0
            if self.expect_crlf and len(text) >= 2:
                if text[:2] != b"\r\n":
                    raise HttpError("chunk data not followed by CRLF")
                pos = 2
            end = text.find(b"\r\n", pos) if not self.expect_crlf or pos else -1
            size = int(bytes(text[pos:end]).split(b";")[0].strip() or b"x", 16) if end >= 0 else -1
            if end < 0 or (size == 0 and len(text) < end + 4):  # incomplete framing: keep it
                if len(text) > 4096:
                    raise HttpError("chunk framing too long")
                buf = buf[len(text) - old :]
                continue
            if size == 0:  # last chunk, no trailers expected
                self._finish(now)
                return
            buf = buf[end + 2 - old :]
            self.frame, self.expect_crlf, self.chunk_left = bytearray(), False, size

    def _finish(self, now: float) -> None:
        if self.finished:
            return
        self.finished = True
        self.ended_at = now
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class _Protocol(asyncio.BufferedProtocol):
    def __init__(self, size: int) -> None:
        self.buffer = memoryview(bytearray(size))
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        ex = self.exchange
        if ex is not None and ex.plain and ex.nbytes + nbytes < ex.length:  # type: ignore[operator]
            ex.nbytes += nbytes  # the hot path: a counted body, not its last bytes
            return
        now = time.monotonic()
        try:
            if ex is None:
                raise HttpError("bytes without a request")
            ex.feed(self.buffer[:nbytes], now)
        except (HttpError, ValueError) as exc:
            if ex is not None:
                ex.fail(exc)
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        ex = self.exchange
        if ex is None or ex.finished:
            return
        if ex.status and ex.length is None and not ex.chunked:
            ex._finish(time.monotonic())  # body delimited by close
        else:
            ex.fail(HttpError(f"connection closed mid-response ({exc or 'EOF'})"))


class Session:
    """Connections by origin, reused while they stay open (like a requests.Session).

    ``buffer``: bytes per receive call. Many connections in one loop want a small one: each
    ready socket gets one receive per loop iteration, so with 50 busy sockets a 1 MiB buffer
    makes an iteration copy up to 50 MiB, and a response's first bytes wait that long.
    """

    def __init__(self, buffer: int = BUFFER) -> None:
        self._buffer = buffer
        self._conns: dict[tuple[str, int], _Protocol] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        follow_redirects: bool = True,
        hash_body: bool = False,
        first_byte_only: bool = False,
        timeout: float = 1800.0,
    ) -> Response:
        started, redirects = time.monotonic(), 0
        while True:
            ex = await asyncio.wait_for(
                self._one(method, url, headers or {}, hash_body, first_byte_only), timeout
            )
            location = ex.headers.get("location")
            if follow_redirects and ex.status in REDIRECTS and location and redirects < 10:
                url = urljoin(url, location)
                redirects += 1
                continue
            break
        sha = ex.hasher.hexdigest() if ex.hasher is not None else None
        return Response(
            url, ex.status, ex.headers, ex.nbytes, sha, started, ex.headers_at,
            ex.first_byte_at, ex.ended_at, redirects, not ex.cut,
        )  # fmt: skip

    async def _one(
        self, method: str, url: str, headers: dict[str, str], hash_body: bool, first: bool
    ) -> _Exchange:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (host, port)
        proto = self._conns.pop(key, None)
        if proto is None or proto.lost or proto.transport is None:
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_connection(lambda: _Protocol(self._buffer), host, port)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += ["User-Agent: hfpull-bench", "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ex = _Exchange(method, hash_body, first, done)
        proto.exchange = ex
        assert proto.transport is not None
        proto.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await done
        if ex.cut or not ex.keep_alive:
            proto.transport.abort()
        else:
            proto.exchange = None
            self._conns[key] = proto
        return ex

    def close(self) -> None:
        for proto in self._conns.values():
            if proto.transport is not None:
                proto.transport.abort()
        self._conns.clear()
