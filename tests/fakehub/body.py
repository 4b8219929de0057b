"""Fast, fault-aware body writer: sendfile for file-backed blobs, paced sends when throttled."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .store import Blob
from .wan import TokenBucket

CHUNK = 1 << 20


class Stopped(Exception):
    """The hub is shutting down: abandon the response."""


class Progress(Protocol):
    def add(self, n: int) -> None: ...
    def begin_final(self) -> None: ...


@dataclass(frozen=True)
class BodyPlan:
    start: int
    length: int
    limit: int | None = None  # stop after this many body bytes (reset/short/stall faults)
    flip_at: int | None = None  # absolute offset whose lowest bit gets flipped
    rate: int = 0  # bytes/s cap for this response, 0 = unlimited
    trickle: float | None = None  # seconds between single bytes
    chunked: bool = False  # Transfer-Encoding: chunked framing (one chunk per send step)
    link: TokenBucket | None = None  # the aggregate cap shared with every other response

    @property
    def total(self) -> int:
        return self.length if self.limit is None else max(0, min(self.limit, self.length))

    @property
    def step(self) -> int:
        if self.trickle is not None:
            return 1
        rates = [r for r in (self.rate, self.link.rate if self.link else 0) if r > 0]
        if rates:
            return max(1, min(64 * 1024, int(min(rates)) // 50))
        return CHUNK


def pause(stopping: threading.Event, seconds: float) -> None:
    if seconds > 0 and stopping.wait(seconds):
        raise Stopped


def send_body(
    sock: socket.socket,
    body: bytes | Blob,
    plan: BodyPlan,
    progress: Progress,
    stopping: threading.Event,
) -> None:
    total, step = plan.total, plan.step
    with _Source(body) as src:
        started = time.monotonic()
        sent = 0
        while sent < total:
            if plan.trickle is not None and sent:
                pause(stopping, plan.trickle)
            if plan.rate:
                # Pacing against the start time keeps the long-run rate exact despite sleep jitter.
                pause(stopping, started + sent / plan.rate - time.monotonic())
            n = min(step, total - sent)
            if plan.link is not None:
                pause(stopping, plan.link.reserve(n))  # paid before sending: no free first step
            if stopping.is_set():
                raise Stopped
            if sent + n == total:
                progress.begin_final()
            pos = plan.start + sent
            if plan.chunked:
                _send_bytes(sock, b"%x\r\n" % n, _uncounted)
            if plan.flip_at is not None and pos <= plan.flip_at < pos + n:
                chunk = bytearray(src.read(pos, n))
                chunk[plan.flip_at - pos] ^= 0x01
                _send_bytes(sock, chunk, progress.add)
            else:
                src.send(sock, pos, n, progress.add)
            if plan.chunked:
                _send_bytes(sock, b"\r\n", _uncounted)
            sent += n
    if plan.chunked and sent == plan.length:  # cut short: no last chunk, the client must notice
        _send_bytes(sock, b"0\r\n\r\n", _uncounted)


def read_span(body: bytes | Blob, start: int, length: int, flip_at: int | None = None) -> bytes:
    """``length`` bytes of ``body`` from ``start``, with the bit at ``flip_at`` flipped."""
    with _Source(body) as src:
        data = bytearray(src.read(start, length))
    if flip_at is not None and start <= flip_at < start + length:
        data[flip_at - start] ^= 0x01
    return bytes(data)


def _uncounted(_n: int) -> None:
    """Chunk framing is not body content: it is left out of the byte counts."""


class _Source:
    def __init__(self, body: bytes | Blob) -> None:
        self._data: bytes | None = body if isinstance(body, bytes) else body.data
        self._fd: int | None = None
        if self._data is None:
            assert isinstance(body, Blob) and body.path is not None
            self._fd = os.open(body.path, os.O_RDONLY)

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def read(self, pos: int, n: int) -> bytes:
        if self._data is not None:
            return self._data[pos : pos + n]
        assert self._fd is not None
        out = bytearray()
        while len(out) < n:
            piece = os.pread(self._fd, n - len(out), pos + len(out))
            if not piece:
                raise OSError(f"file shrank while serving it (at {pos + len(out)})")
            out += piece
        return bytes(out)

    def send(self, sock: socket.socket, pos: int, n: int, add: Callable[[int], None]) -> None:
        if self._data is not None:
            _send_bytes(sock, memoryview(self._data)[pos : pos + n], add)
            return
        assert self._fd is not None
        while n:
            k = os.sendfile(sock.fileno(), self._fd, pos, n)
            if k == 0:
                raise OSError(f"file shrank while serving it (at {pos})")
            add(k)
            pos, n = pos + k, n - k


def _send_bytes(
    sock: socket.socket, data: bytes | bytearray | memoryview, add: Callable[[int], None]
) -> None:
    view = memoryview(data)
    while view:
        k = sock.send(view)
        add(k)
        view = view[k:]
