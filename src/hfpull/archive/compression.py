"""Archive compression: none, gzip or zstd; deterministic on write, sniffed on read.

zstd needs the optional ``zstandard`` package (``pip install 'hfpull[zstd]'``).
"""

from __future__ import annotations

import gzip
import io
from typing import IO, Any

from hfpull.errors import UsageError

KINDS = ("none", "gzip", "zstd")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise UsageError(
            "zstd needs the 'zstandard' package", hint="pip install 'hfpull[zstd]'"
        ) from None
    return zstandard


class _Closing(io.RawIOBase):
    """Wraps a compressor stream so closing it finishes the frame but not the output."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.inner.write(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
        super().close()


def validate_kind(kind: str) -> str:
    """Check a compression name given by the user (``none``, ``gzip`` or ``zstd``)."""
    if kind not in KINDS:
        raise UsageError(f"unknown compression {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    return kind


def compressing_writer(out: IO[bytes], kind: str) -> IO[bytes]:
    """A writable stream compressing into ``out``; closing it flushes but leaves ``out`` open.

    gzip gets mtime 0 and no file name, so identical input gives identical bytes."""
    if kind == "none":
        return out
    if kind == "gzip":
        return gzip.GzipFile(  # type: ignore[return-value]
            fileobj=out, mode="wb", compresslevel=6, mtime=0, filename=""
        )
    if kind == "zstd":
        compressor = _zstandard().ZstdCompressor(level=3, threads=0)
        writer = compressor.stream_writer(out, closefd=False)
        return _Closing(writer)  # type: ignore[return-value]
    raise UsageError(f"unknown compression {kind!r}", hint=f"use one of {', '.join(KINDS)}")


class _Peeked(io.RawIOBase):
    """A stream with its first bytes pushed back (to sniff the format of a pipe)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def decompressing_reader(stream: IO[bytes]) -> IO[bytes]:
    """Detect gzip/zstd/plain tar from the first bytes and return a decoded stream."""
    head = stream.read(4)
    source = io.BufferedReader(_Peeked(head, stream), buffer_size=1 << 20)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC):
        reader = _zstandard().ZstdDecompressor().stream_reader(source, closefd=False)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return source  # type: ignore[return-value]
